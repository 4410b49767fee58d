"""A run's report, from its files alone: summary.md, a self-contained report.html, plots/*.png, and the
headline figures as TensorBoard scalars under tb/. Timings are recomputed from the raw rounds."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.results import atomic_write  # noqa: E402
from bench.runs import (  # noqa: E402
    REPORTS_DIR,
    RunError,
    load_calibration,
    load_results,
    load_rounds,
    resolve,
    short_name,
)

NOISY_IQR = 0.10  # as torch.utils.benchmark warns: IQR above 10 % of the median
ENVIRONMENT = ["device_name", "torch", "cuda", "cudnn", "triton", "driver", "cpu", "cpu_threads", "python",
               "git_commit"]


def recompute(results: pd.DataFrame, rounds: dict[str, np.ndarray]) -> pd.DataFrame:
    """Median, IQR, min and rates of every ok case, from its raw rounds (keyed by case id)."""
    frame = results.copy()
    for i, row in frame.iterrows():
        data = rounds.get(row["case_id"])
        if row["status"] != "ok" or data is None:
            continue
        q1, median, q3 = np.percentile(data, [25, 50, 75])
        frame.loc[i, ["median_s", "iqr_s", "min_s", "rounds"]] = [median, q3 - q1, data.min(), data.size]
        frame.loc[i, "samples_per_s"] = row["batch"] / median
        if pd.notna(row.get("batch_tokens")):
            frame.loc[i, "tokens_per_s"] = row["batch_tokens"] / median
        frame.loc[i, "tflops"] = row["flops"] / median / 1e12
    frame["median_ms"] = frame["median_s"] * 1e3
    frame["noisy"] = frame["iqr_s"] > NOISY_IQR * frame["median_s"]
    return frame


def _label(frame: pd.DataFrame) -> pd.Series:
    """precision, plus the attention implementation where there is one."""
    attention = frame["attention"].fillna("").astype(str)
    return frame["precision"] + np.where(attention != "", " " + attention, "")


def throughput_tables(ok: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per model: samples/s by (phase, precision [attention]) row and batch size column."""
    models = ok[ok["model"] != "attention"]
    tables = {}
    for model, rows in models.groupby("model", sort=False):
        rows = rows.assign(config=_label(rows))
        table = rows.pivot_table(index=["phase", "config"], columns="batch", values="samples_per_s", sort=False)
        table.columns = [f"b{b} samples/s" for b in table.columns]
        tables[model] = table
    return tables


def amp_speedups(ok: pd.DataFrame) -> pd.DataFrame:
    """Each AMP case's throughput over the same case in fp32."""
    models = ok[ok["model"] != "attention"].assign(attention=lambda f: f["attention"].fillna(""))
    key = ["model", "phase", "batch", "attention"]
    fp32 = models[models["precision"] == "fp32"].set_index(key)["samples_per_s"]
    amp = models[models["precision"].str.startswith("amp_")].set_index(key)
    if amp.empty or fp32.empty:
        return pd.DataFrame()
    amp = amp.join(fp32.rename("fp32_samples_per_s"), how="inner")
    amp["speedup_vs_fp32"] = amp["samples_per_s"] / amp["fp32_samples_per_s"]
    return amp.reset_index()[[*key, "precision", "samples_per_s", "fp32_samples_per_s", "speedup_vs_fp32"]]


def attention_speedups(ok: pd.DataFrame) -> pd.DataFrame:
    """Every attention implementation's time, TFLOP/s and speed-up over naive, in the models and the
    micro-benchmark alike."""
    rows = ok[ok["attention"].notna()].copy()
    if rows.empty:
        return pd.DataFrame()
    shape = ["model", "phase", "precision", "batch", "seqlen", "head_dim", "causal"]
    rows[["seqlen", "head_dim"]] = rows[["seqlen", "head_dim"]].astype("Int64")
    rows[shape] = rows[shape].astype(str)  # empty shape columns of model rows must still group
    naive = rows[rows["attention"] == "naive"].set_index(shape)["median_s"].rename("naive_median_s")
    rows = rows.join(naive, on=shape)
    rows["speedup_vs_naive"] = rows["naive_median_s"] / rows["median_s"]
    columns = [*shape, "attention", "median_ms", "tflops", "speedup_vs_naive"]
    return rows[columns].replace({"nan": "", "<NA>": ""})


def _figure_grid(n: int, width: float = 4.2, height: float = 3.2):
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _log2_ticks(ax, values: pd.Series) -> None:
    """A log2 axis labelled with the values themselves (8, 32) rather than powers (2^3, 2^5)."""
    ticks = sorted({int(v) for v in values})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()


def plot_by_batch(ok: pd.DataFrame, value: str, ylabel: str, path: Path) -> Path | None:
    """One panel per model: a line per phase and precision [attention] over batch size."""
    models = ok[ok["model"] != "attention"]
    if models.empty:
        return None
    fig, axes = _figure_grid(models["model"].nunique())
    for ax, (model, rows) in zip(axes, models.groupby("model", sort=False), strict=False):
        rows = rows.assign(config=rows["phase"] + " " + _label(rows))
        for config, line in rows.groupby("config", sort=False):
            line = line.sort_values("batch")
            ax.plot(line["batch"], line[value], marker="o", label=config)
        ax.set_title(model)
        _log2_ticks(ax, rows["batch"])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_attention(ok: pd.DataFrame, path: Path) -> Path | None:
    """Micro-benchmark TFLOP/s over sequence length, a line per implementation, a panel per shape."""
    micro = ok[ok["model"] == "attention"]
    if micro.empty:
        return None
    panels = micro.groupby(["phase", "precision", "causal", "head_dim"], sort=False)
    fig, axes = _figure_grid(panels.ngroups)
    for ax, ((phase, precision, causal, head_dim), rows) in zip(axes, panels, strict=False):
        for impl, line in rows.groupby("attention", sort=False):
            line = line.sort_values("seqlen")
            ax.plot(line["seqlen"], line["tflops"], marker="o", label=impl)
        mask = "causal" if str(causal).lower() == "true" else "full"
        ax.set_title(f"{phase} {precision} {mask} d{int(head_dim)}", fontsize=9)
        _log2_ticks(ax, rows["seqlen"])
        ax.set_xlabel("sequence length")
        ax.set_ylabel("TFLOP/s")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def profile_breakdowns(run_dir: Path) -> pd.DataFrame:
    """Category shares of every profiled case, one row per case."""
    shares = {}
    for csv in sorted((run_dir / "traces").glob("*/breakdown.csv")):
        shares[csv.parent.name] = pd.read_csv(csv).set_index("category")["share"]
    if not shares:
        return pd.DataFrame()
    frame = pd.DataFrame(shares).T.fillna(0.0)
    frame.columns.name = None
    return frame


def plot_breakdowns(breakdowns: pd.DataFrame, path: Path) -> Path | None:
    if breakdowns.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(breakdowns) + 1.5))
    breakdowns.mul(100).plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("% of profiled self time")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def log_scalars(ok: pd.DataFrame, tb_dir: Path) -> None:
    """Each case's headline figures as TensorBoard scalars, so runs can be set side by side there."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tb_dir)) as writer:
        for _, row in ok.iterrows():
            for name in ("samples_per_s", "tflops", "median_ms"):
                if pd.notna(row[name]):
                    writer.add_scalar(f"{row['case_id']}/{name}", float(row[name]), 0)


def _markdown(frame: pd.DataFrame, index: bool = False) -> str:
    return frame.to_markdown(index=index, floatfmt=".4g") if not frame.empty else "(none)"


def _html_table(table: pd.DataFrame) -> str:
    """The table as HTML, numbers right-aligned to 4 significant digits, text left-aligned."""
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and table[c].dtype != bool]
    text = [c for c in table.columns if c not in numeric]
    styler = table.style.hide(axis="index").format("{:.4g}", subset=numeric, na_rep="").format(na_rep="", subset=text)
    return styler.set_properties(subset=text, **{"text-align": "left"}).to_html()


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
img{max-width:100%;display:block;margin:1em 0}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}.note{color:#666}"""


def write_report(run: str, reports_dir: Path = REPORTS_DIR) -> Path:
    """Write summary.md, report.html, plots/ and tb/ into the run folder; returns report.html's path."""
    run_dir = resolve(run, reports_dir)
    results = load_results(run_dir)
    try:
        rounds, _ = load_rounds(run_dir)
    except RunError:  # a run where nothing was timed (all skipped) has no raw rounds
        rounds = {}
    frame = recompute(results, {short_name(name): data for name, data in rounds.items()})
    ok = frame[frame["status"] == "ok"]
    calibration = load_calibration(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    breakdowns = profile_breakdowns(run_dir)
    throughput_plot = plot_by_batch(ok, "samples_per_s", "samples/s", plots_dir / "throughput_vs_batch.png")
    memory_plot = plot_by_batch(ok.assign(peak_mem_mib=ok["peak_mem_bytes"] / 2**20), "peak_mem_mib",
                                "peak memory (MiB)", plots_dir / "memory_vs_batch.png")
    attention_plot = plot_attention(ok, plots_dir / "attention_tflops_vs_seqlen.png")
    breakdown_plot = plot_breakdowns(breakdowns, plots_dir / "profile_breakdown.png")
    log_scalars(ok, run_dir / "tb")

    not_ok = frame[frame["status"] != "ok"][["case_id", "status", "reason"]]
    noisy = ok[ok["noisy"]].assign(iqr_ms=lambda f: f["iqr_s"] * 1e3)[["case_id", "median_ms", "iqr_ms", "rounds"]]
    environment = results.iloc[0][[c for c in ENVIRONMENT if c in results.columns]].fillna("").to_frame("value")
    throughputs = list(throughput_tables(ok).items())
    sections = [(f"Throughput: {model} (samples/s)", table.reset_index(),
                 throughput_plot if i == len(throughputs) - 1 else None)
                for i, (model, table) in enumerate(throughputs)]
    sections += [
        ("Peak memory", pd.DataFrame(), memory_plot) if memory_plot else None,
        ("AMP speed-up over fp32", amp_speedups(ok), None),
        ("Attention implementations: time, TFLOP/s and speed-up over naive", attention_speedups(ok), attention_plot),
        ("Profile breakdown (% of self time)",
         breakdowns.mul(100).round(1).reset_index(names="case") if len(breakdowns) else breakdowns, breakdown_plot),
        (f"Noisy cases (IQR above {NOISY_IQR:.0%} of the median)", noisy, None),
        ("Skipped, out-of-memory and failed cases", not_ok, None),
        ("Environment", environment.reset_index(names="field"), None),
    ]
    sections = [section for section in sections if section is not None]
    peaks = calibration.get("matmul_tflops", {})
    intro = (f"Run {run_dir.name}: {len(frame)} cases, {len(ok)} ok, on {results['device_name'].iloc[0]}. "
             f"Timings recomputed from {sum(d.size for d in rounds.values())} raw rounds. Calibrated matmul "
             "peaks (TFLOP/s): " + (", ".join(f"{k} {v:.3g}" for k, v in peaks.items()) or "none") + ".")

    markdown = [f"# archbench report: {run_dir.name}", "", intro, ""]
    body = [f"<h1>archbench report: {html.escape(run_dir.name)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for title, table, plot in sections:
        markdown += [f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        if not table.empty or plot is None:
            markdown += [_markdown(table), ""]
            body.append(_html_table(table) if not table.empty else "<p class=note>(none)</p>")
        if plot is not None:
            markdown += [f"![{plot.stem}](plots/{plot.name})", ""]
            body.append(_embed(plot))
    atomic_write(run_dir / "summary.md", "\n".join(markdown) + "\n")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>archbench {html.escape(run_dir.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    atomic_write(run_dir / "report.html", page)
    return run_dir / "report.html"
