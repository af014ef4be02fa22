"""A plan group as MLIR: the group region (region.py), the `inplace` kernel (inplace.py and its template),
the MLIR text helpers they share (mlir.py), and iree-turbine's lowering of the group ops (ops.py)."""

from . import ops as _ops  # noqa: F401  (registers the lowering with iree-turbine)
