"""Turning sweep rows into the report (Markdown tables, CSV/JSON, plots) and the `auto` calibration."""

from __future__ import annotations

import csv
import datetime
import json
import os
from typing import Callable, Sequence

from ...auto.chooser import AutoChooser
from ...core.policy import CPU_CANDIDATES, IN_OUTPUT
from .cases import PRESETS

STORING = ("split", "split-sum", "per-step")  # plans that keep z = exp(x - m) in global memory
AUTO_BAR = 1.05


def _cases(rows: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        key = f"{'x'.join(map(str, r['shape']))}{'' if r['last_dim'] else ' dim ' + str(r['dim'])} {r['dtype']} {r['threads']}t"
        out.setdefault(key, []).append(r)
    return list(out.items())


def _by_method(case_rows: Sequence[dict]) -> dict[str, dict]:
    return {r["method"]: r for r in case_rows}


def auto_rows(rows: Sequence[dict], chooser: Callable[[int], AutoChooser]) -> list[dict]:
    """Per case: what `auto` (`chooser(threads)`) picks, its time vs the best preset in these rows, and,
    when the cost model decided, how its predicted order of the candidates matches the measured one."""
    out = []
    for label, case_rows in _cases(rows):
        m = _by_method(case_rows)
        r0 = case_rows[0]
        auto = chooser(r0["threads"])
        plan, why = auto.choose(r0["rows"], r0["row_len"], r0["last_dim"], r0["dtype"])
        best = min((p for p in PRESETS if p in m), key=lambda p: m[p]["median_ms"])
        ratio = m[plan.label]["median_ms"] / m[best]["median_ms"]
        predicted = auto.predicted_ms(r0["rows"], r0["row_len"], r0["last_dim"], r0["dtype"]) if auto.constants else {}
        predicted = {p: t for p, t in predicted.items() if p in m}
        measured = sorted(predicted, key=lambda p: m[p]["median_ms"])
        out.append({"case": label, "auto": plan.label, "best": best, "ratio": ratio, "ok": ratio <= AUTO_BAR, "why": why,
                    "predicted_ms": predicted, "predicted_order": list(predicted), "measured_order": measured,
                    "order_agreement": kendall_tau(list(predicted), measured),
                    "auto_ms": m[plan.label]["median_ms"], "best_ms": m[best]["median_ms"],
                    "vs_eager": m["eager"]["median_ms"] / m[plan.label]["median_ms"],
                    "vs_fused": m["fused"]["median_ms"] / m[plan.label]["median_ms"],
                    "over_exp_floor": m[plan.label]["median_ms"] / m["exp-floor"]["median_ms"]})
    return out


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Rank agreement of two orders of the same items: 1 same order, -1 reversed (None for < 2 items)."""
    pos = {x: i for i, x in enumerate(b)}
    pairs = [(x, y) for i, x in enumerate(a) for y in a[i + 1 :]]
    return sum(1 if pos[x] < pos[y] else -1 for x, y in pairs) / len(pairs) if pairs else None


def calibration(rows: Sequence[dict], machine: dict) -> dict:
    """The file `auto` reads: per case, the median time of every preset (and fused's stack bytes)."""
    cases = []
    for _, case_rows in _cases(rows):
        m = _by_method(case_rows)
        r0 = case_rows[0]
        entry = {k: r0[k] for k in ("shape", "dim", "dtype", "threads", "rows", "row_len", "last_dim")}
        entry["times"] = {p: round(m[p]["median_ms"], 4) for p in (*CPU_CANDIDATES, "fused", IN_OUTPUT) if p in m}
        if m.get("fused", {}).get("stack_bytes") is not None:
            entry["fused_stack"] = m["fused"]["stack_bytes"]
        cases.append(entry)
    return {"machine": machine, "created": datetime.date.today().isoformat(), "cases": cases}


def write_tables(rows: Sequence[dict], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(list(rows), f, indent=1)
    keys = ["shape", "dim", "dtype", "threads", "method", "median_ms", "min_ms", "max_ms", "runs", "max_err", "stack_bytes"]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "shape": "x".join(map(str, r["shape"]))})


def markdown(rows: Sequence[dict], machine: dict, autos: Sequence[dict] | None, plots: Sequence[str] = (), title: str = "") -> str:
    lines = [
        f"# fxsoftmax benchmark{': ' + title if title else ''}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; ISA: {' '.join(machine['isa'])}; "
        f"bf16 instructions: {'yes' if machine['bf16_instructions'] else 'no (bf16 cases skipped)'}.",
        f"torch {machine['torch']}, IREE compiler {machine['iree_compiler']}, runtime {machine['iree_runtime']}, Python {machine['python']}.",
        "",
        "Times are medians in ms (min-max in brackets) of repeated runs after warm-up, measured side by side in "
        "one run. IREE runs on-device: input placed once, each call returns when its result is ready; 1 thread "
        "= `local-sync`, all cores = `local-task`. Floors use the same buffers: a copy (memory bandwidth) and "
        "one `torch.exp(x, out=y)` pass. `eager-out` is eager's kernel writing into a preallocated output "
        "(`aten._softmax.out`), i.e. eager without its per-call allocation. IREE uses its caching allocator.",
        "",
    ]
    if autos:
        ok = sum(a["ok"] for a in autos)
        lines += [
            f"## `auto` vs the best preset ({ok}/{len(autos)} cases within {int((AUTO_BAR - 1) * 100)}%)",
            "",
            "| case | auto picks | best preset | auto / best | eager / auto | fused / auto | auto / exp floor |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for a in autos:
            lines.append(f"| {a['case']} | {a['auto']} | {a['best']} | {a['ratio']:.3f}{'' if a['ok'] else ' (over)'} "
                         f"| {a['vs_eager']:.2f} | {a['vs_fused']:.2f} | {a['over_exp_floor']:.2f} |")
        lines.append("")
        ordered = [a for a in autos if a["predicted_order"]]
        if ordered:
            taus = [a["order_agreement"] for a in ordered]
            top = sum(a["predicted_order"][0] == a["measured_order"][0] for a in ordered)
            lines += [
                "### The cost model's predicted order vs the measured order",
                "",
                f"Kendall's tau over the candidates per case (1: same order, -1: reversed): mean {sum(taus) / len(taus):.2f}, "
                f"min {min(taus):.2f}; the predicted fastest is the measured fastest in {top}/{len(ordered)} cases.",
                "",
                "| case | predicted order (ms) | measured order (ms) | tau |",
                "|---|---|---|---:|",
            ]
            measured = {label: _by_method(case_rows) for label, case_rows in _cases(rows)}
            for a in ordered:
                pred = ", ".join(f"{p} {t:.3g}" for p, t in a["predicted_ms"].items())
                meas = ", ".join(f"{p} {measured[a['case']][p]['median_ms']:.3g}" for p in a["measured_order"])
                lines.append(f"| {a['case']} | {pred} | {meas} | {a['order_agreement']:.2f} |")
            lines.append("")
    lines += remat_vs_store(rows)
    for label, case_rows in _cases(rows):
        m = _by_method(case_rows)
        best = min(m[p]["median_ms"] for p in PRESETS if p in m)
        eager, floor = m["eager"]["median_ms"], m["exp-floor"]["median_ms"]
        lines += [f"### {label}", "", "| method | ms [min-max] | t/t_best | t/t_eager | t/t_exp-floor | max err |", "|---|---|---:|---:|---:|---:|"]
        for meth, r in sorted(m.items(), key=lambda kv: kv[1]["median_ms"]):
            err = "" if r["max_err"] is None else f"{r['max_err']:.1e}"
            lines.append(f"| {meth} | {r['median_ms']:.3f} [{r['min_ms']:.3f}-{r['max_ms']:.3f}] | {r['median_ms'] / best:.2f} "
                         f"| {r['median_ms'] / eager:.2f} | {r['median_ms'] / floor:.2f} | {err} |")
        lines.append("")
    for p in plots:
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})", ""]
    return "\n".join(lines)


def remat_vs_store(rows: Sequence[dict]) -> list[str]:
    """The seed's table: rematerializing exp (remat) / storing it (best of the storing plans)."""
    table: dict[str, dict[int, float]] = {}
    threads = sorted({r["threads"] for r in rows})
    for label, case_rows in _cases(rows):
        m = _by_method(case_rows)
        stores = [m[p]["median_ms"] for p in STORING if p in m]
        if "remat" in m and stores:
            size = label.rsplit(" ", 2)[0] + " " + label.rsplit(" ", 2)[1]
            table.setdefault(size, {})[case_rows[0]["threads"]] = m["remat"]["median_ms"] / min(stores)
    lines = [
        "## Rematerialize vs store: t(remat) / t(best storing plan)",
        "",
        "Above 1: storing exp(x - m) in global memory wins; below 1: computing exp twice wins.",
        "",
        "| size | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |",
        "|---|" + "---:|" * len(threads),
    ]
    for size, per in table.items():
        lines.append(f"| {size} | " + " | ".join(f"{per[t]:.2f}" if t in per else "" for t in threads) + " |")
    return lines + [""]


def plots(rows: Sequence[dict], out: str) -> list[str]:
    """time per element vs row length (log-log) per method, and time / exp floor per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    threads = sorted({r["threads"] for r in rows})
    methods = [*PRESETS, "eager", "eager-out", "inductor", "exp-floor", "copy-floor"]
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    for ax, t in zip(axes[0], threads):
        for meth in methods:
            pts = sorted((r["row_len"], r["median_ms"] * 1e6 / (r["rows"] * r["row_len"]))
                         for r in rows if r["threads"] == t and r["method"] == meth and r["last_dim"] and r["dtype"] == "float32")
            if pts:
                ax.plot(*zip(*pts), marker="o", label=meth, linestyle="--" if "floor" in meth else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("row length (softmax over the last dim)")
        ax.set_ylabel("ns per element")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out, "time_vs_row_length.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    labels = [label for label, _ in _cases(rows)]
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.9), 4.5))
    width = 0.8 / (len(PRESETS) + 2)
    for i, meth in enumerate([*PRESETS, "eager", "inductor"]):
        vals = []
        for _, case_rows in _cases(rows):
            m = _by_method(case_rows)
            vals.append(m[meth]["median_ms"] / m["exp-floor"]["median_ms"] if meth in m else 0)
        ax.bar([j + i * width for j in range(len(labels))], vals, width, label=meth)
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xticks([j + 0.4 for j in range(len(labels))], labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("time / exp-pass floor")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    files.append(os.path.join(out, "ratio_to_exp_floor.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files
