"""The pass: find every softmax, pick its plan, rewrite it; report what happened at each site."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Union

import torch
import torch.fx as fx
from torch.export import ExportedProgram

from ..core.dtypes import dtype_name
from ..core.policy import DEFAULT_POLICY, Overrides, PolicyLike, PolicyMap
from ..core.status import SiteStatus
from .attention import ATTENTION_OPS, KEPT_REASON, kept_attention
from .rewrite import keep_fused_site, rewrite_site
from .sites import SiteReport, SoftmaxSite, find_softmax_sites, match_site, module_path

GraphLike = Union[fx.GraphModule, ExportedProgram]


class PassResult(NamedTuple):
    """The rewritten module (the same object that was passed in) and one report per softmax site
    (fused attention ops the graph keeps are listed too, with status "kept")."""

    module: GraphLike
    sites: list[SiteReport]

    @property
    def rewritten(self) -> int:
        return sum(s.status == SiteStatus.REWRITTEN for s in self.sites)


def decompose_softmax(
    module: GraphLike,
    policy: PolicyLike = DEFAULT_POLICY,
    overrides: Overrides | None = None,
    *,
    example_inputs: Sequence[torch.Tensor] | None = None,
    chooser: Any = None,
    kept_reason: str = KEPT_REASON,
) -> PassResult:
    """Rewrite every floating-point softmax in `module` (in place) into four steps grouped per policy.

    `module` is a torch.fx.GraphModule (ATen-level or torch-level) or a torch.export ExportedProgram.
    `policy` is a preset name or plan string; `overrides` maps glob patterns (node name or module
    path, or "re:<regex>") to policies, or is a callable(site) -> policy|None. A torch-level graph
    without shape metadata (e.g. from torch.fx.symbolic_trace) needs `example_inputs`. `chooser(site) ->
    (Plan, reason)` resolves `auto` per site. `kept_reason` is reported for fused attention ops left in the graph.
    """
    if isinstance(module, ExportedProgram):
        gm = module.graph_module
    elif isinstance(module, fx.GraphModule):
        gm = module
    else:
        raise TypeError(
            f"decompose_softmax expects a torch.fx.GraphModule or torch.export.ExportedProgram, got "
            f"{type(module).__name__}; for an nn.Module use fxsoftmax.export(...) or torch.export.export first"
        )
    pmap = PolicyMap(policy, overrides, chooser)
    if example_inputs is not None:
        _propagate_fake(gm, example_inputs)

    sites = find_softmax_sites(gm)
    pmap.check_matched(sites)
    renamed: dict[str, str] = {}
    # Re-read each site just before rewriting it: an earlier rewrite may have replaced its input.
    reports = [_apply(gm, match_site(gm, site.node), pmap, renamed) for site in sites]
    reports += [_kept(node, kept_reason) for node in kept_attention(gm)]
    if isinstance(module, ExportedProgram):
        _rename_outputs(module, renamed)
    gm.graph.lint()
    gm.recompile()
    return PassResult(module, reports)


def _apply(gm: fx.GraphModule, site: SoftmaxSite, pmap: PolicyMap, renamed: dict[str, str]) -> SiteReport:
    dtype = dtype_name(site.in_dtype) if site.in_dtype else None
    report = SiteReport(site.name, site.module_path, site.form, _plain_shape(site.shape), dtype, site.dim, "", "", SiteStatus.SKIPPED)
    if site.skip_reason:
        report.plan = report.plan_text = "-"
        report.reason = site.skip_reason
        return report
    plan, why = pmap.plan_for(site)
    report.plan, report.plan_text, report.reason = plan.label, plan.text, why
    if plan.is_fused:
        keep_fused_site(gm, site)
        report.status, report.groups = SiteStatus.FUSED, [["fused"]]
    else:
        renamed[site.name] = rewrite_site(gm, site, plan).name
        report.status, report.groups = SiteStatus.REWRITTEN, [list(g) for g in plan.groups]
    return report


def _kept(node: fx.Node, reason: str) -> SiteReport:
    return SiteReport(node.name, module_path(node), ATTENTION_OPS[node.target], None, None, None, "-", "-", SiteStatus.KEPT, reason)


def _rename_outputs(ep: ExportedProgram, renamed: dict[str, str]) -> None:
    # The program's signature names its output nodes; a rewritten softmax may have been one.
    for spec in ep.graph_signature.output_specs:
        name = getattr(spec.arg, "name", None)
        if name in renamed:
            spec.arg.name = renamed[name]


def _plain_shape(shape: tuple | None) -> tuple | None:
    if shape is None:
        return None
    return tuple(int(s) if isinstance(s, int) else str(s) for s in shape)


def _propagate_fake(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    FakeTensorProp(gm, mode).propagate(*[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in example_inputs])
