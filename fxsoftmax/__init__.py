"""fxsoftmax: softmax as four steps in policy-chosen IREE dispatches.

    gm, sites = fxsoftmax.decompose_softmax(gm_or_exported_program, policy="split")
    art = fxsoftmax.export(model, (x,))          # policy "auto", attention placed per device, cpu
    y = art(x)                                   # runs on the IREE runtime; art(x, out=y) writes into y
    print(fxsoftmax.inspect(art).table())
    torch.compile(model, backend="fxsoftmax", options={"policy": "split", "device": "cpu"})
"""

from . import compat as _compat

_compat.apply()  # iree-turbine 3.9 on IREE compilers 3.10+ (a no-op on 3.9)

from . import lowering as _lowering  # noqa: E402,F401  (teaches iree-turbine to lower the group ops)
from .api import backend, compiled_graphs, decompose_softmax, export  # noqa: E402
from .backends.artifact import Artifact  # noqa: E402
from .backends.targets import Target  # noqa: E402
from .core.policy import PRESETS, Plan, parse_policy  # noqa: E402
from .passes import PassResult, SiteReport  # noqa: E402
from .report.inspect import Report, inspect  # noqa: E402

__all__ = [
    "PRESETS",
    "Artifact",
    "PassResult",
    "Plan",
    "Report",
    "SiteReport",
    "Target",
    "backend",
    "compiled_graphs",
    "decompose_softmax",
    "export",
    "inspect",
    "parse_policy",
]
