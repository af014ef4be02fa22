"""The command line, driven as a user would (subprocess): export, inspect, run, demo, errors."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

DATA = pathlib.Path(__file__).parents[1] / "data"


def fxsoftmax(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "fxsoftmax", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _error_lines(proc):
    lines = [l for l in proc.stderr.splitlines() if l.startswith(("fxsoftmax: error:", "hint:"))]
    return lines


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "bert"
    proc = fxsoftmax("export", "bert-tiny", "--policy", "split", "--device", "cpu", "--out", out)
    return out, proc


def test_export_builtin_cpu_end_to_end(bert_folder):
    out, proc = bert_folder
    assert sorted(os.listdir(out)) == sorted(
        ["model.mlir", "model.vmfb", "report.json", "report.md", "manifest.json", "inputs.npz", "expected.npz"]
    )
    assert "[1/4] loading bert-tiny" in proc.stderr and "[3/4] inspecting" in proc.stderr  # progress
    report = json.loads((out / "report.json").read_text())
    assert [(s["status"], s["plan"]) for s in report["sites"]] == [("rewritten", "split")] * 2
    assert all(s["matches_plan"] and len(s["dispatches"]) == 2 for s in report["inspection"]["sites"])
    assert "| _safe_softmax | split | 1 |" in (out / "report.md").read_text()  # SDPA (transformers' default), decomposed on cpu
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["arg0", "attention_mask"]


def test_inspect_folder_table_and_json(bert_folder):
    out, _ = bert_folder
    table = fxsoftmax("inspect", out).stdout
    assert "| site | plan | exps/elt | dispatch | steps | reads B | writes B | stack B |" in table
    assert table.count("| 12 |") == 2 and table.count("| 34 |") == 2
    data = json.loads(fxsoftmax("inspect", out, "--json").stdout)
    assert data["inspection"]["total_dispatches"] > 4


def test_inspect_mlir_file(bert_folder):
    out, _ = bert_folder
    data = json.loads(fxsoftmax("inspect", out / "model.mlir", "--json").stdout)
    assert [len(s["dispatches"]) for s in data["sites"]] == [2, 2]
    assert all(d["stack_bytes"] is not None for s in data["sites"] for d in s["dispatches"])


def test_run_random_inputs_times_and_compares(bert_folder):
    out, _ = bert_folder
    proc = fxsoftmax("run", out, "--device", "cpu", "--repeat", "5")
    lines = proc.stdout.splitlines()
    timing = next(l for l in lines if l.startswith("time per run"))
    assert "median" in timing and "min" in timing and "max" in timing and "(5 runs" in timing
    err = float(next(l for l in lines if l.startswith("max |error| vs eager")).rsplit(" ", 1)[1])
    assert err <= 1e-4


def test_run_with_inputs_file(bert_folder, tmp_path):
    out, _ = bert_folder
    ids = np.random.default_rng(0).integers(0, 200, (1, 16))
    np.savez(tmp_path / "x.npz", arg0=ids, attention_mask=np.ones((1, 16), dtype=np.int64))
    proc = fxsoftmax("run", out, "--inputs", tmp_path / "x.npz", "--repeat", "2")
    assert float(proc.stdout.split("max |error| vs eager")[1].rsplit(" ", 1)[1]) <= 1e-4
    np.savez(tmp_path / "bad.npz", ids=ids)
    proc = fxsoftmax("run", out, "--inputs", tmp_path / "bad.npz", check=False)
    assert proc.returncode == 2 and "lacks inputs ['arg0', 'attention_mask']" in proc.stderr


def test_module_callable_with_input_specs_and_dynamic_seq(tmp_path):
    out = tmp_path / "attn"
    fxsoftmax("export", "cli_models:make_attention", "--input", "2x12:int64:0-50", "--policy", "per-step",
              "--dynamic-dim", "seq", "--out", out, "--quiet", cwd=DATA)
    report = json.loads((out / "report.json").read_text())
    assert [len(s["dispatches"]) for s in report["inspection"]["sites"]] == [4]
    assert "?" in report["inspection"]["sites"][0]["dispatches"][0]["reads"][0]  # the sequence stayed symbolic
    np.savez(tmp_path / "long.npz", arg0=np.random.default_rng(1).integers(0, 50, (2, 20)))
    proc = fxsoftmax("run", out, "--inputs", tmp_path / "long.npz", "--repeat", "2", cwd=DATA)
    assert float(proc.stdout.split("max |error| vs eager")[1].rsplit(" ", 1)[1]) <= 1e-5


def test_local_checkpoint_folder(tmp_path):
    from fxsoftmax.tools.models import builtin_model

    builtin_model("distilbert-tiny").model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out"
    proc = fxsoftmax("export", tmp_path / "ckpt", "--policy", "remat", "--override", "*layer.1.*=split", "--out", out, "--quiet")
    assert proc.stderr.strip() == ""  # --quiet: no progress lines
    sites = json.loads((out / "report.json").read_text())["sites"]
    assert [s["plan"] for s in sites] == ["remat", "split"]
    run = fxsoftmax("run", out, "--repeat", "2").stdout
    assert float(run.split("max |error| vs eager")[1].rsplit(" ", 1)[1]) <= 1e-4


@pytest.mark.parametrize("device, arch", [("cuda", "sm_80"), ("hip", None), ("vulkan", "rdna3")])
def test_gpu_targets_compile_only(tmp_path, device, arch):
    """Attention decomposed, so that each layer has a site on every IREE (with `auto`, IREE 3.13 keeps its
    attention kernel on hip, where 3.9 cannot compile it and decomposes)."""
    out = tmp_path / device
    args = ["export", "gpt2-tiny", "--policy", "remat", "--attention", "decompose", "--device", device, "--out", out, "--quiet"]
    fxsoftmax(*args, *(["--arch", arch] if arch else []))
    report = json.loads((out / "report.json").read_text())["inspection"]
    assert report["target"].startswith(device + ":")
    assert [len(s["dispatches"]) for s in report["sites"]] == [3, 3]
    assert all(s["matches_plan"] for s in report["sites"])


def test_run_on_missing_gpu_lists_what_exists(tmp_path):
    from fxsoftmax.backends.runtime import DeviceUnavailableError, open_device

    try:
        open_device("hip")
        pytest.skip("this machine has a HIP device")
    except DeviceUnavailableError:
        pass
    out = tmp_path / "hip"
    fxsoftmax("export", "bert-tiny", "--device", "hip", "--out", out, "--quiet")
    proc = fxsoftmax("run", out, check=False)
    assert proc.returncode == 1
    err, hint = _error_lines(proc)
    assert "IREE driver 'hip' has no usable device" in err and "local-task" in hint


def test_list_models_and_help():
    listed = fxsoftmax("export", "--list-models").stdout
    for name in ("bert-tiny", "distilbert-tiny", "gpt2-tiny", "llama-tiny", "vit-tiny", "bart-tiny", "bert-base", "llama-2048"):
        assert name in listed
    assert "--list-models" not in listed and len(listed.splitlines()) == 8  # names and descriptions, nothing built
    from fxsoftmax.tools.models import builtin_model

    bert = builtin_model("bert-base", seq=8, layers=1)  # at real width; --layers keeps the check small
    assert (bert.model.config.hidden_size, bert.model.config.num_hidden_layers, bert.softmaxes) == (768, 1, 1)
    for sub in ("export", "inspect", "run", "demo"):
        assert "usage: fxsoftmax " + sub in fxsoftmax(sub, "--help").stdout
    assert "fxsoftmax export bert-tiny" in fxsoftmax("--help").stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["export", "nosuchmodel", "--out", "{out}"], "neither a built-in name"),
        (["export", "cli_models:make_attention", "--out", "{out}"], "needs its inputs"),
        (["export", "cli_models:make_attention", "--input", "2xA:int64", "--out", "{out}"], "is not sizes joined by 'x'"),
        (["export", "cli_models:make_attention", "--input", "2x3:complex", "--out", "{out}"], "unknown dtype 'complex'"),
        (["export", "cli_models:not_a_module", "--input", "2:float32", "--out", "{out}"], "not a torch.nn.Module"),
        (["export", "bert-tiny", "--policy", "12|3", "--out", "{out}"], "missing"),
        (["export", "bert-tiny", "--override", "layer0", "--out", "{out}"], "is not PATTERN=POLICY"),
        (["export", "bert-tiny", "--override", "decoder.*=remat", "--out", "{out}"], "matched no softmax site"),
        (["export", "cli_models:make_median", "--input", "2x8:float32", "--out", "{out}"], "IREE's importer cannot lower aten.median"),
    ],
)
def test_errors_are_one_line_with_hint_and_leave_nothing(tmp_path, args, needle):
    out = tmp_path / "never"
    proc = fxsoftmax(*[a.replace("{out}", str(out)) for a in args], check=False, cwd=DATA)
    assert proc.returncode != 0
    lines = _error_lines(proc)
    assert len(lines) == 2 and needle in lines[0] and lines[1].startswith("hint: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_demo_runs_the_default_job_on_iree_cpu():
    from fxsoftmax.core.policy import parse_policy

    out = fxsoftmax("demo", "--repeat", "3").stdout
    assert "policy 'auto'" in out and "local-task" in out  # the default policy, resolved per site
    rows = [l for l in out.splitlines() if l.startswith("softmax")]
    assert len(rows) == 2
    for row in rows:
        cols = row.split()
        plan = parse_policy(cols[2])
        assert int(cols[3]) == plan.dispatches and cols[4] == plan.text.replace("(13)", "13") and cols[-1] == "yes", row
        assert float(cols[5]) <= 1e-5
    assert "model output max|err| vs eager" in out


def test_parameters_outside_the_mlir_run_with_iree_run_module(tmp_path):
    """Over --params-above the weights go to model.irpa, not the MLIR; `run` and IREE's own
    iree-run-module both load the archive."""
    out = tmp_path / "bert"
    fxsoftmax("export", "bert-tiny", "--params-above", "0", "--out", out, "--quiet")
    assert "model.irpa" in os.listdir(out) and json.loads((out / "manifest.json").read_text())["parameters"] == "model.irpa"
    mlir = (out / "model.mlir").read_text()
    assert '#flow.parameter.named<"model"::' in mlir and "dense_resource" not in mlir
    run = fxsoftmax("run", out, "--repeat", "1").stdout
    assert float(run.split("max |error| vs eager")[1].rsplit(" ", 1)[1]) <= 1e-4
    inputs, expected = np.load(out / "inputs.npz"), np.load(out / "expected.npz")
    args = []
    for name in inputs.files:
        np.save(tmp_path / f"{name}.npy", inputs[name])
        args.append(f"--input=@{tmp_path / name}.npy")
    args += [f"--output=@{tmp_path / name}.npy" for name in expected.files]
    tool = pathlib.Path(sys.executable).parent / "iree-run-module"
    subprocess.run([tool, f"--module={out / 'model.vmfb'}", f"--parameters=model={out / 'model.irpa'}", "--device=local-task",
                    "--function=main", *args], check=True, capture_output=True)
    for name in expected.files:
        assert np.abs(np.load(tmp_path / f"{name}.npy") - expected[name]).max() <= 1e-4
