"""The built-in default job: a small attention model through fxsoftmax on IREE CPU, as a short table."""

from __future__ import annotations

import statistics
import time

import torch

from ..api import export
from ..core.policy import DEFAULT_POLICY
from ..report.inspect import inspect
from .bench.measure import time_calls


class AttentionBlock(torch.nn.Module):
    """Multi-head self-attention with an additive mask; returns (output, attention probabilities)."""

    def __init__(self, dim: int = 64, heads: int = 4):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        probs = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5 + mask, dim=-1)
        return self.proj((probs @ v).transpose(1, 2).reshape(b, s, d)), probs


def demo_model(seq: int = 32) -> tuple[str, torch.nn.Module, tuple, dict]:
    """The built-in bert-tiny (random weights, eager attention: it returns each softmax) if transformers is
    installed, else AttentionBlock."""
    torch.manual_seed(0)
    try:
        from .models import builtin_model

        built = builtin_model("bert-tiny", "eager", seq=seq)
    except ImportError:
        x, mask = torch.randn(1, seq, 64), torch.zeros(1, 1, seq, seq)
        return "attention block (transformers not installed)", AttentionBlock().eval(), (x, mask), {}
    return (f"bert-tiny (2 layers, hidden 32, seq {seq}, padding mask, random weights)", built.model, built.args,
            {**built.kwargs, "output_attentions": True})


def _softmax_outputs(out) -> list[torch.Tensor]:
    return list(out.attentions) if hasattr(out, "attentions") else [out[1]]


def run_demo(policy: str = DEFAULT_POLICY, repeat: int = 20) -> str:
    title, model, args, kwargs = demo_model()
    t0 = time.perf_counter()
    art = export(model, args, kwargs, policy=policy)
    build_s = time.perf_counter() - t0
    report = inspect(art)
    with torch.no_grad():
        ref = model(*args, **kwargs)
    got = art(*args, **kwargs)
    ref_p, got_p = _softmax_outputs(ref), _softmax_outputs(got)
    ref_h, got_h = ref[0], got[0]
    iree_ms = time_calls(lambda: art(*args, **kwargs), repeat)
    with torch.no_grad():
        eager_ms = time_calls(lambda: model(*args, **kwargs), repeat)

    lines = [f"fxsoftmax demo: {title}, policy {policy!r}, IREE {art.target} on {art.target.driver}", ""]
    lines.append(f"{'site':<11} {'module':<34} {'plan':<10} {'dispatches':>10}  {'steps':<11} {'max|err|':>9}  ok")
    for i, site in enumerate(report.sites):
        err = (got_p[i].float() - ref_p[i].float()).abs().max().item() if i < len(ref_p) else float("nan")
        path = next((s.module_path for s in art.sites if s.name == site.site), "")
        steps = "|".join("".join(d.steps) for d in site.dispatches)
        lines.append(
            f"{site.site:<11} {path:<34} {site.plan:<10} {len(site.dispatches):>10}  {steps:<11} {err:>9.2e}  "
            f"{'yes' if site.matches_plan else 'NO: ' + site.problem}"
        )
    herr = (got_h.float() - ref_h.float()).abs().max().item()
    med = statistics.median
    lines += [
        "",
        f"model output max|err| vs eager: {herr:.2e}   module: {report.total_dispatches} dispatches",
        f"export+compile {build_s:.1f} s   IREE run median {med(iree_ms):.2f} ms (min {min(iree_ms):.2f}, max "
        f"{max(iree_ms):.2f}; {repeat} runs of art(x), tensors in and out)   eager median {med(eager_ms):.2f} ms "
        f"(min {min(eager_ms):.2f}, max {max(eager_ms):.2f})",
    ]
    return "\n".join(lines)
