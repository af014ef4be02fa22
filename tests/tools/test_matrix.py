"""Every policy x static / one dim / every dim dynamic x softmax dim, dtypes and sizes rotating (incl. f64,
dtype= upcasts, size-1 and zero-size dims, rows of 33 and 100), each case in a child process: no crash,
no error, no wrong answer; only the refusals IREE 3.9 needs. The full matrix: python -m fxsoftmax.tools.matrix."""

from __future__ import annotations

import pytest

from fxsoftmax.tools.matrix import Case, cases, run_in_children

pytestmark = pytest.mark.slow
# IREE 3.9 cannot run f64; `split-sum` with a dynamic softmax dim; `inplace` takes the innermost dim, no float64
KNOWN_REFUSALS = ("cannot run float64", "stores both exp(x - m) and its sum when the softmax dim is dynamic",
                  "accepted: a softmax over the innermost dim in float32, bfloat16 or float16")


def test_quick_matrix_never_crashes_or_answers_wrong():
    results = run_in_children(cases(quick=True))
    assert len(results) == len(cases(quick=True))
    bad = [r for r in results if r["status"] not in ("ok", "refused")]
    assert not bad, bad
    refused = [r for r in results if r["status"] == "refused"]
    assert all(any(k in r["detail"] for k in KNOWN_REFUSALS) for r in refused), refused
    assert sum(r["status"] == "ok" for r in results) >= 45


def test_a_case_that_ends_its_child_is_recorded_and_the_rest_go_on():
    todo = [Case("split", "static", -1, "float32", (2, 5)), Case("split", "static", -1, "no_such_dtype", (2, 5)),
            Case("remat", "static", 0, "float16", (3, 7))]
    results = run_in_children(todo)
    assert [r["status"] for r in results] == ["ok", "error", "ok"]
    assert "no_such_dtype" in results[1]["detail"]
