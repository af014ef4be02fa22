"""The IREE-version shim: iree-turbine 3.9 on IREE compilers without `Type.isinstance` (3.10+)."""

from __future__ import annotations

import pytest
from iree.compiler import ir

from fxsoftmax import compat
from fxsoftmax.quirks import IREE

pytestmark = pytest.mark.iree


def test_shim_patches_only_bindings_that_lack_isinstance():
    patched = compat.apply()  # fxsoftmax's import applied it already: a second call finds nothing to do
    assert patched == []
    # bindings of IREE 3.9 have Type.isinstance (nothing patched); those of 3.10+ do not
    assert bool(compat.PATCHED) == (IREE >= (3, 10))
    assert ("RankedTensorType" in compat.PATCHED and "OpResult" in compat.PATCHED) == (IREE >= (3, 10))


def test_isinstance_answers_like_the_old_bindings():
    with ir.Context(), ir.Location.unknown():
        f32 = ir.F32Type.get()
        tensor = ir.RankedTensorType.get([2, 3], f32)
        assert ir.RankedTensorType.isinstance(tensor) and not ir.RankedTensorType.isinstance(f32)
        assert ir.F32Type.isinstance(f32) and ir.FloatType.isinstance(f32)
        generic = ir.Type.parse("tensor<4xf32>")  # a plain Type that downcasts to RankedTensorType
        assert ir.RankedTensorType.isinstance(generic)
        assert ir.IntegerAttr.isinstance(ir.IntegerAttr.get(ir.IntegerType.get_signless(32), 1))
