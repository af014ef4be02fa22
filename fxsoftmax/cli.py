"""The `fxsoftmax` command line: export a model to an IREE module folder, inspect it, run it."""

from __future__ import annotations

import argparse
import inspect as pyinspect
import json
import os
import statistics
import sys
import time
import warnings
from typing import Any

from .backends.pipeline import ATTENTION
from .backends.targets import DEVICES
from .core.policy import DEFAULT_POLICY, PRESETS, PolicyMap

EXAMPLES = """examples:
  fxsoftmax export bert-tiny --policy split --device cpu --out build/bert
  fxsoftmax export ./my_hf_checkpoint --policy remat --device cuda --arch sm_80 --out build/m
  fxsoftmax export mypkg.models:make_model --input 8x128:int64 --policy per-step --out build/x
  fxsoftmax inspect build/bert
  fxsoftmax run build/bert --device cpu --repeat 20
  fxsoftmax bench [--full | --calibrate] --out bench/
  fxsoftmax bench --model bert-base --layers 2 --seq 512 --out docs/results/models/bert-base-2L-seq512
"""


class CliError(Exception):
    """An error for the user: one line, a hint, an exit code."""

    def __init__(self, message: str, hint: str = "", code: int = 1):
        super().__init__(message)
        self.hint, self.code = hint, code


def main(argv: list[str] | None = None) -> int:
    # torch 2.13's own pytree code trips this while exporting; it is not the user's concern.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    args = _parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except CliError as e:
        _fail(str(e), e.hint)
        return e.code
    except (ValueError, NotImplementedError) as e:
        _fail(str(e).splitlines()[0], "see --help for what is accepted")
        return 2
    except Exception as e:  # IREE compile/runtime errors and the like: one line, then the hint
        from .backends.compiler import IreeCompileError
        from .backends.gaps import UnsupportedOpError
        from .backends.runtime import DeviceUnavailableError

        if isinstance(e, UnsupportedOpError):
            _fail(str(e), "replace that op in the model: neither IREE nor PyTorch's decompositions lower it")
        elif isinstance(e, IreeCompileError):
            lines = str(e).splitlines()
            _fail(lines[0] + " " + (lines[1].strip() if len(lines) > 1 else ""),
                  "try another --policy or --device/--arch; run with a smaller model to isolate it")
        elif isinstance(e, DeviceUnavailableError):
            _fail(str(e).split(" Found: ")[0], "found: " + str(e).split(" Found: ")[-1])
        else:
            raise
        return 1


def _fail(message: str, hint: str) -> None:
    print(f"fxsoftmax: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    policies = f"preset ({', '.join(PRESETS)}) or plan string like \"1|2'3|2'4\""
    p = argparse.ArgumentParser(prog="fxsoftmax", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="model -> IREE module folder (model.mlir, model.vmfb, report.json, report.md)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model", nargs="?", help="built-in name (see --list-models), local Hugging Face checkpoint folder, or module:callable")
    e.add_argument("--list-models", action="store_true", help="list the built-in models and exit")
    e.add_argument("--out", help="output folder (written whole or not at all)")
    e.add_argument("--policy", default=DEFAULT_POLICY, help=f"{policies} (default {DEFAULT_POLICY})")
    e.add_argument("--override", action="append", default=[], metavar="PATTERN=POLICY",
                   help="policy for sites whose node name or module path matches PATTERN (glob or re:<regex>); repeatable")
    e.add_argument("--device", default="cpu", choices=DEVICES, help="compile target (default cpu)")
    e.add_argument("--arch", help="target chip: host (cpu), sm_80 (cuda), gfx942 (hip), vp_android_baseline_2022 (vulkan) by default")
    e.add_argument("--input", action="append", default=[], metavar="SHAPE:DTYPE",
                   help="a positional input for module:callable models, e.g. 8x128:int64[:0-30522] or 1x3x32x32:float32; repeatable")
    e.add_argument("--dynamic-dim", action="append", default=[], metavar="DIM",
                   help="keep this axis of every input symbolic: an index, or batch (=0) / seq (=1); repeatable")
    e.add_argument("--attention", default="auto", choices=ATTENTION,
                   help="where scaled_dot_product_attention goes: auto (default: decomposed on cpu; on cuda decomposed for prefill, "
                        "IREE's kernel for a decode step; IREE's kernel on hip and vulkan), "
                        "keep (IREE's attention kernel) or decompose (matmuls and a softmax site)")
    e.add_argument("--hf-attention", default="sdpa", choices=["eager", "sdpa"],
                   help="Hugging Face attn_implementation of built-in models and checkpoints (default sdpa, transformers' own)")
    e.add_argument("--seq-len", type=int, default=16, help="sequence length of Hugging Face text inputs (default 16)")
    e.add_argument("--layers", type=int, help="layers of a built-in real-size model (bert-base: 12, llama-2048: 2)")
    e.add_argument("--params-above", type=float, default=32.0, metavar="MIB",
                   help="keep the parameters outside the MLIR, in model.irpa, when they total more than MIB (default 32; 0: always)")
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("inspect", help="per-site table of an export folder or a .mlir file")
    i.add_argument("path", help="export folder, or a .mlir file produced by fxsoftmax")
    i.add_argument("--json", action="store_true", help="print JSON instead of the table")
    i.add_argument("--device", default="cpu", choices=DEVICES, help="target for a .mlir file (default cpu)")
    i.add_argument("--arch", help="target chip for a .mlir file")
    i.set_defaults(func=cmd_inspect)

    r = sub.add_parser("run", help="run an export folder's module on an IREE device; time it; compare with eager")
    r.add_argument("path", help="export folder")
    r.add_argument("--device", choices=DEVICES, help="default: the device it was compiled for")
    r.add_argument("--inputs", help=".npz with one array per input name (see manifest.json); default: random inputs")
    r.add_argument("--seed", type=int, default=1, help="seed for random inputs (default 1)")
    r.add_argument("--repeat", type=int, default=10, help="timed runs (default 10)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="measure every preset against eager, inductor, IREE's softmax and floors")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="the full sweep (large shapes; several minutes)")
    mode.add_argument("--calibrate", action="store_true", help="measure and write the calibration `auto` uses on this machine")
    b.add_argument("--out", default="bench-out", help="folder for results.csv, results.json, report.md, *.png (default bench-out)")
    b.add_argument("--repeat", type=int, default=7, help="timed runs per method after warm-up (default 7)")
    b.add_argument("--no-inductor", action="store_true", help="skip torch.compile/inductor (its C++ compile is slow)")
    mode.add_argument("--model", help="time a whole built-in model (see export --list-models) as users build it: "
                      "attention kept, decomposed, the eager-attention graph, torch eager, torch SDPA, inductor")
    b.add_argument("--seq", type=int, default=512, help="sequence length (or cache length with --decode) for --model (default 512)")
    b.add_argument("--layers", type=int, help="layers of the --model (default: the model's)")
    b.add_argument("--decode", action="store_true", help="with --model: one decode step over a static cache of --seq positions")
    mode.add_argument("--attention", action="store_true", help="attention alone: IREE's attention kernel kept vs decomposed")
    mode.add_argument("--shape", help="time one case of this shape, e.g. 4096x16384 (with --dim, --dtype, --threads)")
    b.add_argument("--dim", type=int, default=-1, help="softmax dim for --shape (default -1)")
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype for --shape (default float32)")
    b.add_argument("--threads", type=int, help="threads for --shape (default all cores)")
    b.add_argument("--calibration-out", help="where --calibrate writes (default: this machine's calibration file)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)

    z = sub.add_parser("zoo", help="Hugging Face families (tiny configs) x inputs x path x policy: writes a table")
    z.add_argument("--policy", action="append", help="a policy to run (repeatable; default every preset and auto)")
    z.add_argument("--path", action="append", choices=["export", "torch.compile", "decode"],
                   help="entry point (repeatable; default all three; decode: decoders' static-cache decode step)")
    z.add_argument("--attention", action="append", choices=["eager", "sdpa", "default"],
                   help="Hugging Face attn_implementation, or default: as transformers builds the family (its default attention "
                        "and MoE experts) (repeatable; default eager)")
    z.add_argument("--family", action="append", help="a family (repeatable; default all; see fxsoftmax.zoo.FAMILIES)")
    z.add_argument("--out", default="docs/results/zoo", help="folder for the table (default docs/results/zoo)")
    z.add_argument("--name", default="zoo.md", help="file name of the table (default zoo.md)")
    z.set_defaults(func=cmd_zoo)

    d = sub.add_parser("demo", help="export a small attention model, run it on IREE CPU, print a table")
    d.add_argument("--policy", default=DEFAULT_POLICY, help=f"{policies} (default {DEFAULT_POLICY})")
    d.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    d.set_defaults(func=cmd_demo)
    return p


class _Progress:
    def __init__(self, quiet: bool, steps: int):
        self.quiet, self.steps, self.n, self.t0 = quiet, steps, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.n += 1
        if not self.quiet:
            print(f"[{self.n}/{self.steps}] {what} ({time.perf_counter() - self.t0:.1f}s)", file=sys.stderr, flush=True)


def _overrides(items: list[str]) -> dict[str, str] | None:
    out = {}
    for item in items:
        pattern, sep, policy = item.partition("=")
        if not sep or not pattern or not policy:
            raise CliError(f"--override {item!r} is not PATTERN=POLICY", "e.g. --override 'encoder.layer.0.*=remat'", 2)
        out[pattern] = policy
    return out or None


def _dynamic_shapes(model, args: tuple, kwargs: dict, dims: list[str]):
    import torch

    axes = []
    for d in dims:
        axis = {"batch": 0, "seq": 1}.get(d, d)
        try:
            axes.append(int(axis))
        except ValueError:
            raise CliError(f"--dynamic-dim {d!r} is not an axis index, batch or seq", code=2) from None
    if not axes:
        return None
    bound = pyinspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {
        name: {a: torch.export.Dim.AUTO for a in axes if a < v.dim()} if isinstance(v, torch.Tensor) else None
        for name, v in bound.items()
    }


def _input_names(args: tuple, kwargs: dict) -> list[str]:
    import torch

    return [f"arg{i}" for i, a in enumerate(args) if isinstance(a, torch.Tensor)] + [
        k for k, v in kwargs.items() if isinstance(v, torch.Tensor)
    ]


def _flat_outputs(out: Any) -> list:
    import torch
    from torch.utils import _pytree as pytree

    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def cmd_export(a: argparse.Namespace) -> int:
    from .tools.models import BUILTIN_MODELS, InputSpec

    if a.list_models:
        for name, text in BUILTIN_MODELS.items():
            print(f"{name:<17} {text}")
        return 0
    if not a.model or not a.out:
        raise CliError("export needs MODEL and --out", "fxsoftmax export bert-tiny --out build/bert  (or --list-models)", 2)
    if a.params_above < 0:
        raise CliError("--params-above must be 0 or more (MiB)", code=2)

    import torch

    from .api import chooser_for
    from .backends.pipeline import Options, build
    from .core.status import SiteStatus
    from .report.bundle import write_bundle
    from .report.inspect import inspect
    from .tools.models import load_model

    specs = [InputSpec.parse(s) for s in a.input]
    overrides = _overrides(a.override)
    options = Options(a.policy, overrides, a.device, a.arch, a.attention, external_params_above=int(a.params_above * (1 << 20)))
    target = options.target
    step = _Progress(a.quiet, 4)

    step(f"loading {a.model}")
    lm = load_model(a.model, specs, attn=a.hf_attention, seq=a.seq_len, layers=a.layers)
    step(f"exporting, rewriting softmax ({a.policy}) and compiling for {target}")
    dynamic = _dynamic_shapes(lm.model, lm.args, lm.kwargs, a.dynamic_dim)
    art = build(lm.model, lm.args, lm.kwargs, options, chooser_for(options), dynamic_shapes=dynamic, what=a.model)
    step("inspecting dispatches")
    report = inspect(art, stack=target.kind == "cpu")
    with torch.no_grad():
        expected = _flat_outputs(lm.model(*lm.args, **lm.kwargs))
    step(f"writing {a.out}")
    names = _input_names(lm.args, lm.kwargs)
    tensors = [t for t in [*lm.args, *lm.kwargs.values()] if isinstance(t, torch.Tensor)]
    manifest = {
        "model": a.model, "description": lm.description, "policy": a.policy, "overrides": overrides,
        "device": target.device, "arch": target.chip, "attention": a.attention, "attention_placed": art.attention,
        "hf_attention": a.hf_attention, "seq_len": a.seq_len, "layers": a.layers, "input_specs": [str(s) for s in specs],
        "dynamic_dims": a.dynamic_dim, "flags": art.flags, "written_inputs": art.written,
    }
    write_bundle(a.out, mlir=art.mlir, vmfb=art.vmfb, report=report, sites=art.sites, manifest=manifest,
                 inputs=dict(zip(names, tensors)), expected=expected, write_parameters=art.save_parameters if art.parameters else None)
    rewritten = sum(s.status == SiteStatus.REWRITTEN for s in art.sites)
    print(f"{a.out}: {rewritten} softmax site(s) rewritten, {report.total_dispatches} dispatches, target {target}")
    print(report.table())
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from .backends.targets import Target
    from .report.bundle import read_bundle
    from .report.inspect import inspect

    if os.path.isdir(a.path):
        bundle = read_bundle(a.path)
        if a.json:
            print(json.dumps({"sites": bundle.sites, "inspection": bundle.report.as_dict()}, indent=2))
        else:
            print(bundle.report.table())
        return 0
    if not (os.path.isfile(a.path) and a.path.endswith(".mlir")):
        raise CliError(f"{a.path} is neither an export folder nor a .mlir file", "give the --out folder of `fxsoftmax export`", 2)
    with open(a.path) as f:
        report = inspect(f.read(), Target(a.device, a.arch))
    if not report.sites:
        raise CliError(f"{a.path} has no fxsoftmax site tags", "inspect the model.mlir of an fxsoftmax export", 2)
    print(report.to_json() if a.json else report.table())
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from .backends.artifact import Artifact
    from .backends.targets import Target
    from .report.bundle import read_bundle
    from .tools.bench.measure import time_calls

    bundle = read_bundle(a.path)
    m = bundle.manifest
    device = a.device or m["device"]
    if device != m["device"]:
        raise CliError(f"{a.path} was compiled for {m['device']}, not {device}", f"export again with --device {device}", 2)
    if a.repeat < 1:
        raise CliError("--repeat must be at least 1", code=2)
    step = _Progress(a.quiet, 3)
    step(f"loading {a.path} on {device}")
    art = Artifact("", bundle.vmfb, Target(m["device"], m["arch"]), [], m["flags"], parameters=bundle.parameters or {},
                   written=m.get("written_inputs", []))
    runner = art.runner()
    inputs = _run_inputs(bundle, a)
    step(f"running {a.repeat}x on {runner.opened.description}")
    placed = [runner.put(t) for t in inputs]

    def call():
        return runner.call([runner.put_arg(i, t, p) for i, (t, p) in enumerate(zip(inputs, placed))])

    outs = call()
    times = time_calls(call, a.repeat)
    step("comparing with eager PyTorch")
    reference, ref_note = _reference(bundle, inputs, a)
    print(f"{a.path}: {m['model']} ({m['policy']}) on {device} via {runner.opened.description}")
    print(f"time per run: median {statistics.median(times):.3f} ms, min {min(times):.3f}, max {max(times):.3f} ({a.repeat} runs, inputs on device)")
    if reference is None:
        print(f"no eager comparison: {ref_note}")
        return 0
    if len(reference) != len(outs):
        raise CliError(f"the module returned {len(outs)} outputs, eager {len(reference)}")
    err = max((o.float() - r.float()).abs().max().item() for o, r in zip(outs, reference))
    print(f"max |error| vs eager ({ref_note}): {err:.3e}")
    return 0


def _run_inputs(bundle, a: argparse.Namespace) -> list:
    import numpy as np
    import torch

    from .report.bundle import load_tensors

    described = bundle.manifest["inputs"]
    if a.inputs:
        with np.load(a.inputs) as data:
            missing = [d["name"] for d in described if d["name"] not in data]
        if missing:
            raise CliError(f"{a.inputs} lacks inputs {missing}", f"arrays needed: {[d['name'] for d in described]}", 2)
        return load_tensors(a.inputs, described)
    g = torch.Generator().manual_seed(a.seed)
    fresh = []
    for example in bundle.inputs():  # same shapes and dtypes; integers stay in the example's range
        if example.dtype.is_floating_point:
            fresh.append(torch.randn(example.shape, generator=g).to(example.dtype))
        else:
            lo, hi = int(example.min()), int(example.max()) + 1
            fresh.append(torch.randint(lo, hi, example.shape, generator=g, dtype=example.dtype))
    return fresh


def _reference(bundle, inputs: list, a: argparse.Namespace) -> tuple[list | None, str]:
    import torch

    from .tools.models import InputSpec, load_model

    m = bundle.manifest
    try:
        lm = load_model(m["model"], [InputSpec.parse(s) for s in m["input_specs"]], attn=m["hf_attention"], seq=m["seq_len"],
                        layers=m.get("layers"))
    except Exception as e:
        return None, f"cannot rebuild {m['model']} ({str(e).splitlines()[0]})"
    names = [d["name"] for d in m["inputs"]]
    args = [t for n, t in zip(names, inputs) if n.startswith("arg")]
    kwargs = {n: t for n, t in zip(names, inputs) if not n.startswith("arg")}
    with torch.no_grad():
        return _flat_outputs(lm.model(*args, **kwargs)), f"model rebuilt from {m['model']}"


def cmd_bench(a: argparse.Namespace) -> int:
    if a.model:
        from .tools.bench.model import run_model_bench

        print(run_model_bench(a.model, a.out, seq=a.seq, layers=a.layers, decode=a.decode, repeat=a.repeat,
                              inductor=not a.no_inductor, quiet=a.quiet))
        return 0
    if a.attention:
        from .tools.bench.attention import run_attention_bench

        print(run_attention_bench(a.out, repeat=a.repeat, say=(lambda m: None) if a.quiet else print))
        return 0
    from .tools.bench import run_bench
    from .tools.bench.cases import Case

    case = None
    if a.shape:
        try:
            shape = tuple(int(d) for d in a.shape.lower().split("x"))
        except ValueError:
            raise CliError(f"--shape {a.shape!r} is not sizes joined by x", "e.g. --shape 4096x16384", 2) from None
        if not -len(shape) <= a.dim < len(shape):
            raise CliError(f"--dim {a.dim} is out of range for shape {a.shape}", code=2)
        case = Case(shape, a.dim, a.dtype, a.threads or os.cpu_count() or 1)
    kind = "case" if case else "full" if a.full else "calibrate" if a.calibrate else "quick"
    print(run_bench(kind, a.out, repeat=a.repeat, inductor=not a.no_inductor, calibration_out=a.calibration_out, quiet=a.quiet, case=case))
    return 0


def cmd_zoo(a: argparse.Namespace) -> int:
    from .tools.models import BY_NAME
    from .tools.zoo import PATHS, run_zoo

    unknown = sorted(set(a.family or ()) - set(BY_NAME))
    if unknown:
        raise CliError(f"unknown zoo families {unknown}", f"accepted: {', '.join(BY_NAME)}", 2)
    for p in a.policy or ():
        PolicyMap(p)
    text = run_zoo(a.out, tuple(a.policy or PRESETS), tuple(a.path or PATHS), tuple(a.attention or ("eager",)),
                   tuple(a.family) if a.family else None, filename=a.name)
    print(text.split("\n\n")[-1] if "## Failures" not in text else text[text.index("## Failures"):])
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .tools.demo import run_demo

    print(run_demo(a.policy, a.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
