"""Property-based: for random shapes, dims, values (incl. -inf rows, huge magnitudes) and plans, the
rewritten graph computes what the original graph computes."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxsoftmax
from helpers import PRESETS, assert_close, aten, aten_graph

FORMS = {
    "softmax": lambda d: lambda x: aten.softmax.int(x, d),
    "_softmax": lambda d: lambda x: aten._softmax.default(x, d, False),
    "_safe_softmax": lambda d: lambda x: aten._safe_softmax.default(x, d),
}
VALUES = st.one_of(
    st.floats(-10, 10, width=32),
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # up to +-3.4e38
    st.sampled_from([float("-inf"), 0.0, -0.0, 88.0, -104.0, 1e-38]),
)


@st.composite
def cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    n = 1
    for s in shape:
        n *= s
    x = torch.tensor(draw(st.lists(VALUES, min_size=n, max_size=n)), dtype=torch.float32).reshape(shape)
    if draw(st.booleans()):  # a whole row along dim fully masked
        idx = [draw(st.integers(0, s - 1)) for s in shape]
        idx[dim] = slice(None)
        x[tuple(idx)] = float("-inf")
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    form = draw(st.sampled_from(sorted(FORMS)))
    plan = draw(st.sampled_from(list(PRESETS) + ["1|2|3'4", "1|2'34", "12|3|4"]))
    return x.to(dtype), dim, form, plan


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_rewritten_graph_equals_original(case):
    x, dim, form, plan = case
    original = aten_graph(FORMS[form](dim), x)
    want = original(x)
    rewritten = aten_graph(FORMS[form](dim), x)
    result = fxsoftmax.decompose_softmax(rewritten, plan)
    assert result.rewritten == (0 if x.shape[dim] == 1 else 1)
    assert_close(rewritten(x), want)
