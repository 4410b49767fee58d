"""Runs from different machines (or software) side by side: the same cases lined up, throughput ratios
against the first run, and the same ratios normalised by each machine's calibrated peak. Where every run
measured a case's device time the same way (a GPU's own time, bench/run/devicetime.py), the ratios are of it:
a host-bound case's end-to-end time follows the host's CPU, and comparing it compares CPUs."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results.peaks import peak_tflops
from bench.results.row import DEVICE_BOUND_SHARE, DEVICE_METHODS
from bench.results.rundir import REPORTS_DIR, RunError, atomic_write, load_calibration, load_results, resolve
from bench.views.plotting import plt, save

KEY = ["case_id", "kind", "model", "phase", "precision", "batch", "attention"]


def _label(run_dir: Path, results: pd.DataFrame) -> str:
    devices = results["device_name"].dropna()
    return f"{run_dir.name} ({devices.iloc[0] if len(devices) else '?'})"


def line_up(runs: list[str], reports_dir: Path = REPORTS_DIR) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One row per case that ran ok in every run; columns per run; and the cases missing somewhere."""
    if len(runs) < 2:
        raise RunError("compare needs at least two runs")
    dirs = [resolve(run, reports_dir) for run in runs]
    if len({d.resolve() for d in dirs}) < len(dirs):
        raise RunError("compare got the same run twice")
    tables, labels, everything = [], [], set()
    for run_dir in dirs:
        results = load_results(run_dir)
        calibration = load_calibration(run_dir)
        everything |= set(results["case_id"])
        ok = results[results["status"] == "ok"].copy()
        ok["peak_tflops"] = ok["precision"].map(lambda p, c=calibration: peak_tflops(p, c))
        labels.append(_label(run_dir, results))
        tables.append(ok.set_index("case_id"))
    common = sorted(set.intersection(*(set(t.index) for t in tables)))
    if not common:
        raise RunError("the runs share no case that ran ok in all of them: nothing to compare")
    missing = sorted(everything - set(common))
    first = tables[0].loc[common]
    lined = first[KEY[1:]].copy()
    device = [_device_seconds(table.loc[common]) for table in tables]
    methods = pd.concat([table.loc[common, "device_method"] for table in tables], axis=1)
    on_device = pd.concat(device, axis=1).notna().all(axis=1) & (methods.nunique(axis=1, dropna=False) == 1)
    lined["time"] = np.where(on_device, "device", "host")
    lined["host-bound"] = pd.concat([table.loc[common, "bound"] == "host" for table in tables], axis=1).any(axis=1)
    compared = [device_s.where(on_device, table.loc[common, "median_s"]) for device_s, table in zip(device, tables,
                                                                                                    strict=True)]
    for label, table, seconds, device_s in zip(labels, tables, compared, device, strict=True):
        rows = table.loc[common]
        lined[f"median_ms | {label}"] = rows["median_s"] * 1e3
        lined[f"device_ms | {label}"] = device_s * 1e3
        lined[f"samples/s | {label}"] = rows["samples_per_s"]
        ratio = compared[0] / seconds
        lined[f"x first | {label}"] = ratio
        lined[f"x first / peak | {label}"] = ratio / (rows["peak_tflops"] / first["peak_tflops"])
    return lined.reset_index(), labels, missing


def _device_seconds(rows: pd.DataFrame) -> pd.Series:
    """A run's device time per case where it measured the GPU's own (graph or profiler), else NaN."""
    return pd.to_numeric(rows["device_s"], errors="coerce").where(rows["device_method"].isin(DEVICE_METHODS))


def model_summary(lined: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per model (the micro-benchmark as one group), the geometric mean over its cases of every run's
    throughput ratio to the first, raw and per peak: the mean that treats 2x and 0.5x alike."""
    group = lined["model"].where(lined["kind"] == "model", lined["kind"]).rename("model")
    columns = [f"{what} | {label}" for label in labels for what in ("x first", "x first / peak")]
    return np.exp(np.log(lined[columns]).groupby(group, sort=False).mean())


def plot_summary(summary: pd.DataFrame, labels: list[str]) -> plt.Figure:
    """Grouped bars of the per-model summary, raw and peak-normalised, a bar per run."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    models = list(summary.index)
    x = np.arange(len(models))
    width = 0.8 / len(labels)
    for ax, what in zip(axes, ("x first", "x first / peak"), strict=True):
        for i, label in enumerate(labels):
            ax.bar(x + i * width, summary[f"{what} | {label}"], width, label=label)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(x + width * (len(labels) - 1) / 2, models, rotation=30, ha="right")
        ax.set_title("throughput vs first run" + (" / peak ratio" if "peak" in what else ""))
        ax.set_ylabel("ratio (geometric mean over cases)")
    axes[0].legend(fontsize=8)
    return fig


def write_comparison(runs: list[str], reports_dir: Path = REPORTS_DIR) -> Path:
    """compare.md, compare.html and compare.png under reports/compare-<ids>/; returns the folder."""
    lined, labels, missing = line_up(runs, reports_dir)
    ids = "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", resolve(run, reports_dir).name) for run in runs)
    out = reports_dir / f"compare-{ids}"
    out.mkdir(parents=True, exist_ok=True)  # derived files: regenerated identically from the runs
    summary = model_summary(lined, labels)
    save(plot_summary(summary, labels), out / "compare.png", dpi=110)
    runs_line = "; ".join(labels) + f". {len(lined)} cases ran ok in every run."
    on_device = int((lined["time"] == "device").sum())
    runs_line += (f" Ratios of device time (the GPU's own) for {on_device} cases, of host time for the rest"
                  f"; {int(lined['host-bound'].sum())} cases host-bound in some run (the GPU busy under "
                  f"{DEVICE_BOUND_SHARE:.0%} of a step): their host times compare the machines' CPUs, not GPUs.")
    missing_line = "Missing or not ok in some run: " + ", ".join(missing) if missing else ""
    tables = [("Geometric mean of the ratios per model", summary.reset_index()), ("Every case", lined)]
    markdown = ["# archbench compare", f"Runs: {runs_line}"]
    for title, table in tables:
        escaped = table.rename(columns=lambda name: str(name).replace("|", "\\|"))  # a bare | splits the cell
        markdown += [f"{title}:", escaped.to_markdown(index=False, floatfmt=".3g")]
    atomic_write(out / "compare.md", "\n\n".join([*markdown, *filter(None, [missing_line]),
                                                       "![throughput ratios](compare.png)"]) + "\n")
    atomic_write(out / "compare.html", "<html><head><meta charset='utf-8'><title>archbench compare</title></head>"
                 f"<body><h1>archbench compare</h1><p>Runs: {html.escape(runs_line)}</p>"
                 + "".join(f"<h2>{title}</h2>" + table.to_html(index=False, float_format=lambda v: f"{v:.3g}")
                           for title, table in tables)
                 + f"<p>{html.escape(missing_line)}</p><img src='compare.png' alt='throughput ratios'></body></html>")
    return out
