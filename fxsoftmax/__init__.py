"""fxsoftmax: softmax as four steps in policy-chosen IREE dispatches.

    gm, sites = fxsoftmax.decompose_softmax(gm_or_exported_program, policy="split")
    art = fxsoftmax.export(model, (x,), policy="split", device="cpu")
    y = art(x)                       # runs on the IREE runtime
    print(fxsoftmax.inspect(art).table())
    torch.compile(model, backend="fxsoftmax", options={"policy": "split", "device": "cpu"})
"""

from . import compat as _compat

_compat.apply()  # iree-turbine 3.9 on IREE compilers 3.10+ (a no-op on 3.9)

from . import ops as _ops  # noqa: E402  (registers torch.ops.fxsoftmax.group)
from .backends.dynamo import backend, compiled_graphs  # noqa: E402
from .backends.export import Artifact, export
from .backends.targets import Target
from .passes import PassResult, SiteReport, decompose_softmax
from .policy import PRESETS, Plan, parse_policy
from .report import Report, inspect

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
