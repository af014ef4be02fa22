"""Running iree-turbine 3.9 on newer IREE compilers.

iree-turbine 3.9.0 (the newest release) calls `SomeType.isinstance(value)` on MLIR Python binding types and values;
the bindings in iree-base-compiler 3.10 and later no longer have that static method (turbine's main
branch uses `isinstance(value, SomeType)`, unreleased). `apply()` gives each binding type that lacks it
an equivalent, and does nothing on bindings that still have it.
"""

from __future__ import annotations

PATCHED: list[str] = []  # binding classes given `isinstance` in this process


def apply() -> list[str]:
    """Add `isinstance` to the MLIR binding types that lack it; the names patched (none on IREE 3.9)."""
    from iree.compiler import ir

    bases = (ir.Type, ir.Attribute, ir.Value)
    patched = []
    for name in dir(ir):
        cls = getattr(ir, name)
        if not (isinstance(cls, type) and issubclass(cls, bases) and cls not in bases):
            continue
        if hasattr(cls, "isinstance"):
            continue
        cls.isinstance = staticmethod(_checker(cls))
        patched.append(name)
    PATCHED.extend(patched)
    return patched


def _checker(cls: type):
    def isinstance_(value) -> bool:
        if isinstance(value, cls):
            return True
        downcast = getattr(value, "maybe_downcast", None)
        return downcast is not None and isinstance(downcast(), cls)

    return isinstance_
