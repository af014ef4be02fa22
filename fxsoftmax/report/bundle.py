"""The export output folder: what `fxsoftmax export` writes and `inspect` / `run` read back.

    model.mlir     what iree-turbine imported (with the locations the report relies on)
    model.vmfb     the compiled IREE module
    report.json    the pass's per-site decisions and the dispatch inspection, for machines
    report.md      the same as a table, for people
    manifest.json  where the model came from, policy, target, input names/shapes/dtypes, flags
    inputs.npz     the example inputs; expected.npz: eager PyTorch's outputs for them
    model.irpa     the parameters, when they are kept outside the MLIR (an IREE parameter archive:
                   iree-run-module --module=model.vmfb --parameters=model=model.irpa)

The folder is written next to its destination under a temporary name and renamed into place, so a
failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.dtypes import dtype_name
from .inspect import Report

FILES = ("model.mlir", "model.vmfb", "report.json", "report.md", "manifest.json", "inputs.npz", "expected.npz")


@dataclass
class Bundle:
    path: str
    manifest: dict[str, Any]
    report: Report
    sites: list[dict[str, Any]]

    @property
    def parameters(self) -> str | None:
        """The parameter archive's path, if the parameters are outside the MLIR."""
        name = self.manifest.get("parameters")
        return os.path.join(self.path, name) if name else None

    @property
    def vmfb(self) -> bytes:
        with open(os.path.join(self.path, "model.vmfb"), "rb") as f:
            return f.read()

    def inputs(self) -> list[torch.Tensor]:
        return load_tensors(os.path.join(self.path, "inputs.npz"), self.manifest["inputs"])

    def expected(self) -> list[torch.Tensor]:
        return load_tensors(os.path.join(self.path, "expected.npz"), self.manifest["outputs"])


def write_bundle(
    out: str,
    *,
    mlir: str,
    vmfb: bytes,
    report: Report,
    sites: Sequence[Any],
    manifest: dict[str, Any],
    inputs: dict[str, torch.Tensor],
    expected: Sequence[torch.Tensor],
    write_parameters: Callable[[str], None] | None = None,
) -> None:
    """Write the folder `out` in one step (replacing an existing export folder there)."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not _is_bundle(out):
        raise ValueError(f"{out} exists and is not an fxsoftmax export folder; choose another --out or remove it")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        manifest = dict(manifest)
        manifest["inputs"] = [_describe(n, t) for n, t in inputs.items()]
        manifest["outputs"] = [_describe(f"out{i}", t) for i, t in enumerate(expected)]
        manifest["parameters"] = "model.irpa" if write_parameters else None
        if write_parameters:
            write_parameters(os.path.join(tmp, "model.irpa"))
        _write(tmp, "model.mlir", mlir.encode())
        _write(tmp, "model.vmfb", vmfb)
        site_dicts = [s.as_dict() for s in sites]
        _write(tmp, "report.json", json.dumps({"sites": site_dicts, "inspection": report.as_dict()}, indent=2).encode())
        _write(tmp, "report.md", render_markdown(manifest, site_dicts, report).encode())
        _write(tmp, "manifest.json", json.dumps(manifest, indent=2).encode())
        _save_tensors(os.path.join(tmp, "inputs.npz"), inputs)
        _save_tensors(os.path.join(tmp, "expected.npz"), {f"out{i}": t for i, t in enumerate(expected)})
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "x"))
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_bundle(path: str) -> Bundle:
    """An export folder written by write_bundle."""
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a folder; give an fxsoftmax export folder (from `fxsoftmax export --out`)")
    missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ValueError(f"{path} is not a complete fxsoftmax export folder: missing {', '.join(missing)}")
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(path, "report.json")) as f:
        report = json.load(f)
    return Bundle(path, manifest, Report.from_dict(report["inspection"]), report["sites"])


def render_markdown(manifest: dict[str, Any], sites: Sequence[dict[str, Any]], report: Report) -> str:
    lines = [
        f"# fxsoftmax export: {manifest.get('model', '?')}",
        "",
        f"- model: {manifest.get('description', '')}",
        f"- policy: `{manifest.get('policy')}`" + (f", overrides `{manifest.get('overrides')}`" if manifest.get("overrides") else ""),
        f"- target: {manifest.get('device')} / {manifest.get('arch')}; attention: {manifest.get('attention')}",
        "- inputs: " + ", ".join(f"{i['name']} {i['dtype']}[{'x'.join(map(str, i['shape']))}]" for i in manifest.get("inputs", [])),
        "",
        "## Softmax sites",
        "",
        "| site | module | form | status | plan | note |",
        "|---|---|---|---|---|---|",
    ]
    for s in sites:
        lines.append(f"| {s['name']} | {s['module_path'] or '-'} | {s['form']} | {s['status']} | {s['plan']} | {s['reason'] or ''} |")
    lines += ["", "## Dispatches (read from IREE's flow-level output)", "", report.table(), ""]
    return "\n".join(lines)


def _is_bundle(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "manifest.json")) and os.path.isfile(os.path.join(path, "model.vmfb"))


def _write(folder: str, name: str, data: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def _describe(name: str, t: torch.Tensor) -> dict[str, Any]:
    return {"name": name, "shape": list(t.shape), "dtype": dtype_name(t.dtype)}


def _save_tensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    # numpy has no bfloat16: such tensors are stored as float32 and cast back on load
    arrays = {k: (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy() for k, t in tensors.items()}
    np.savez(path, **arrays)


def load_tensors(path: str, described: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
    """The arrays of an .npz named in `described`, as tensors of the described dtypes."""
    with np.load(path) as data:
        return [torch.from_numpy(data[d["name"]]).to(getattr(torch, d["dtype"])) for d in described]
