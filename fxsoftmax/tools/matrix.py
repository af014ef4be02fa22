"""The shape and dtype matrix: every policy x static / one dim / every dim dynamic x softmax dim x dtype
(and dtype= upcasts) x sizes, each case exported and run on IREE in a child process, so a crash is a
recorded result, not the end of the run. A case passes when it matches PyTorch or export refuses it
with a ValueError naming it; a crash or a wrong answer fails.

    python -m fxsoftmax.tools.matrix [--quick] [--out docs/results/shape-matrix.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from ..core.dtypes import dtype
from ..core.policy import PRESETS

DYNAMIC = ("static", "one", "all")  # which dims are torch.export.Dim.AUTO: none, the first, every one
DIMS = (0, 1, -1)
DTYPES = ("float32", "float16", "bfloat16", "float64", "float16->float32")  # a->b: softmax(x_a, dtype=b)
SHAPES = ((4, 9, 33), (1, 5, 17), (3, 1, 100), (2, 0, 7))  # odd, size-1, not a multiple of the vector width, zero


@dataclass(frozen=True)
class Case:
    policy: str
    dynamic: str
    dim: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.policy} {self.dynamic} dim={self.dim} {self.dtype} {'x'.join(map(str, self.shape))}"


def cases(quick: bool = False) -> list[Case]:
    """The full matrix, or (quick) each policy once per dynamic mode x dim, dtypes and shapes rotating."""
    if not quick:
        return [Case(*c) for c in itertools.product(PRESETS, DYNAMIC, DIMS, DTYPES, SHAPES)]
    out = []
    for i, (policy, dynamic, dim) in enumerate(itertools.product(PRESETS, DYNAMIC, DIMS)):
        out.append(Case(policy, dynamic, dim, DTYPES[i % len(DTYPES)], SHAPES[i % len(SHAPES)]))
    return out


def run_case(case: Case) -> dict:
    """Export and run one case here (call it in a child process)."""
    import torch

    import fxsoftmax

    src, _, want_dtype = case.dtype.partition("->")
    in_dtype, out_dtype = getattr(torch, src), getattr(torch, want_dtype) if want_dtype else None
    out_dtype_name = want_dtype or src

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x, case.dim, dtype=out_dtype)

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(case.shape, generator=g) * 4).to(in_dtype)
    dims = {"static": [], "one": [0], "all": list(range(len(case.shape)))}[case.dynamic]
    dynamic = ({d: torch.export.Dim.AUTO for d in dims},) if dims else None
    result = {**asdict(case), "status": "", "detail": ""}
    try:
        art = fxsoftmax.export(M(), (x,), policy=case.policy, dynamic_shapes=dynamic)
    except ValueError as e:
        return {**result, "status": "refused", "detail": " ".join(str(e).split())[:300]}
    inputs = [x]
    if dims:  # another size along every dynamic dim that is not 0 or 1 (export specializes those)
        other = [s + 3 if d in dims and s > 1 else s for d, s in enumerate(case.shape)]
        inputs.append((torch.randn(other, generator=g) * 4).to(in_dtype))
    worst = 0.0
    for t in inputs:
        got, want = art(t), M()(t)
        if got.shape != want.shape or got.dtype != want.dtype:
            return {**result, "status": "wrong", "detail": f"got {tuple(got.shape)} {got.dtype}, want {tuple(want.shape)} {want.dtype}"}
        if want.numel():
            worst = max(worst, (got.float() - want.float()).abs().max().item())
    ok = worst <= dtype(out_dtype_name).tolerance
    return {**result, "status": "ok" if ok else "wrong", "detail": f"max abs err {worst:.1e}"}


BATCH = 40  # cases per child process


def run_in_children(todo: list[Case], timeout: float = 600) -> list[dict]:
    """Run cases in child processes, BATCH at a time (`timeout` seconds each); a child that dies records its
    case as crashed (or error) and the rest go on."""
    results: list[dict] = []
    pending = list(todo)
    while pending:
        batch = pending[:BATCH]
        proc = subprocess.run(
            [sys.executable, "-m", "fxsoftmax.tools.matrix", "--child"], input=json.dumps([asdict(c) for c in batch]),
            capture_output=True, text=True, timeout=timeout,
        )
        done = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
        results += done
        pending = pending[len(done):]
        if len(done) < len(batch) and proc.returncode != 0:  # the next case ended the child: a signal, or an exception
            status = "crashed" if proc.returncode < 0 else "error"
            results.append({**asdict(pending[0]), "status": status, "detail": f"exit {proc.returncode}: {' '.join(proc.stderr.split())[-200:]}"})
            pending = pending[1:]
        elif len(done) < len(batch):
            raise RuntimeError(f"matrix child stopped early without an error: {proc.stderr[-500:]}")
    return results


def markdown(results: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "refused", "wrong", "error", "crashed")}
    lines = ["# Shape and dtype matrix (IREE CPU)", "",
             "`python -m fxsoftmax.tools.matrix`: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)} cases.",
             "A refused case is a ValueError at export naming the case; a wrong, error (an exception other than that) or",
             "crashed (the process died) one is a bug.", "",
             "| policy | dynamic | dim | dtype | shape | result | detail |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['policy']} | {r['dynamic']} | {r['dim']} | {r['dtype']} | {'x'.join(map(str, r['shape']))} | {r['status']} | {r['detail']} |")
    return "\n".join(lines) + "\n"


def _child() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    for c in json.loads(sys.stdin.read()):
        print(json.dumps(run_case(Case(**{**c, "shape": tuple(c["shape"])}))), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fxsoftmax.tools.matrix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="each policy once per dynamic mode x dim")
    ap.add_argument("--out", default=os.path.join("docs", "results", "shape-matrix.md"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child()
        return 0
    results = run_in_children(cases(a.quick))
    text = markdown(results)
    with open(a.out, "w") as f:
        f.write(text)
    print(text.splitlines()[2])
    return 0 if all(r["status"] in ("ok", "refused") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
