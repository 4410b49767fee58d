"""A run's report, from its files alone: summary.md, a self-contained report.html, plots/*.png, and the
headline figures as TensorBoard scalars under tb/. Timings are recomputed from the raw rounds."""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results.peaks import peak_kernel, peak_tflops
from bench.results.row import DEFAULT_AXES, DEVICE_BOUND_SHARE, ENVIRONMENT, NOISY_IQR, STOLEN_PCT, derived
from bench.results.rundir import (
    REPORTS_DIR,
    RunDir,
    RunError,
    atomic_write,
    load_breakdowns,
    load_calibration,
    load_device_rounds,
    load_results,
    load_rounds,
    resolve,
)
from bench.views.htmlpage import page, table_html
from bench.views.plotting import plt, save
from bench.views.tracepage import write_trace_pages


def _cell(row: pd.Series, column: str):
    """A results.csv cell, None where empty or absent (runs from before the column)."""
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def recompute(results: pd.DataFrame, rounds: dict[str, np.ndarray], calibration: dict,
              device_rounds: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Spread, interval, rates, device figures and flags of every ok case from its raw rounds and device
    rounds (keyed by case id), as a Row derives them."""
    frame = results.copy()
    for column in ("flags", "converged", "bound", "device_method"):  # text and booleans: an all-empty CSV
        # column reads as floats, which pandas will not let hold a string
        frame[column] = frame[column].astype(object) if column in frame else pd.Series(dtype=object)
    device_rounds = device_rounds or {}
    for i, row in frame.iterrows():
        data = rounds.get(row["case_id"])
        if row["status"] != "ok" or data is None:
            continue
        figures = derived(data, device_rounds.get(row["case_id"]), row["batch"], _cell(row, "batch_tokens"),
                          _cell(row, "flops"), peak_tflops(row["precision"], calibration), row.get("device"),
                          _cell(row, "ci_target"), _cell(row, "emulated"), _cell(row, "throttle"),
                          _cell(row, "cpu_steal_pct"))
        for column, value in figures.items():
            if column not in frame:
                frame[column] = np.nan
            frame.loc[i, column] = np.nan if value is None else value
    frame["median_ms"] = frame["median_s"] * 1e3
    frame["noisy"] = frame["iqr_s"] > NOISY_IQR * frame["median_s"]
    return frame


def _axes(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its mode and memory format, eager and contiguous where it has none (runs written
    before those axes, the micro-benchmark)."""
    return frame.assign(**{column: frame[column].fillna(value) if column in frame else value
                           for column, value in DEFAULT_AXES.items()})


def _label(frame: pd.DataFrame) -> pd.Series:
    """precision, plus the attention implementation where there is one, the mode where not eager and the
    memory format where not contiguous."""
    frame, label = _axes(frame), frame["precision"].astype(str)
    for column, default in {"attention": "", **DEFAULT_AXES}.items():
        value = frame[column].fillna(default).astype(str)
        label = label + np.where(value != default, " " + value, "")
    return label


def throughput_tables(ok: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per model: samples/s by (phase, precision [attention]) row and batch size column, each beside its
    95 % interval's half-width (% of the median)."""
    models = ok[ok["kind"] == "model"]
    tables = {}
    for model, rows in models.groupby("model", sort=False):
        rows = rows.assign(config=_label(rows), ci_pct=rows.get("ci_halfwidth", np.nan) * 100)
        table = rows.pivot_table(index=["phase", "config"], columns="batch", values=["samples_per_s", "ci_pct"],
                                 sort=False, dropna=False)
        batches = list(dict.fromkeys(rows["batch"]))
        table = table[[(value, b) for b in batches for value in ("samples_per_s", "ci_pct")]]
        table.columns = [f"b{b} samples/s" if value == "samples_per_s" else f"b{b} +-%" for value, b in table.columns]
        tables[model] = table.dropna(how="all")
    return tables


def amp_speedups(ok: pd.DataFrame) -> pd.DataFrame:
    """Each AMP case's throughput over the same case in fp32."""
    models = _axes(ok[ok["kind"] == "model"]).assign(attention=lambda f: f["attention"].fillna(""))
    key = ["model", "phase", "batch", "attention", "mode", "memory_format"]
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
    rows = _axes(ok[ok["attention"].notna()])
    if rows.empty:
        return pd.DataFrame()
    shape = ["kind", "model", "phase", "precision", "batch", "seqlen", "head_dim", "causal", "mode"]
    rows[["seqlen", "head_dim"]] = rows[["seqlen", "head_dim"]].astype("Int64")
    rows[shape] = rows[shape].astype(object).fillna("").astype(str)  # empty cells must still group
    naive = rows[rows["attention"] == "naive"].set_index(shape)["median_s"].rename("naive_median_s")
    rows = rows.join(naive, on=shape)
    rows["speedup_vs_naive"] = rows["naive_median_s"] / rows["median_s"]
    columns = [*shape, "attention", "median_ms", "tflops", "speedup_vs_naive"]
    return rows[columns]


def compile_speedups(ok: pd.DataFrame) -> pd.DataFrame:
    """Each compiled (or CUDA-graph) case against the same case run eager: speed-up, and what compiling
    cost (the first call's time, graph breaks, recompiles)."""
    models = _axes(ok[ok["kind"] == "model"]).assign(attention=lambda f: f["attention"].fillna(""))
    key = ["model", "phase", "precision", "batch", "attention", "memory_format"]
    eager = models[models["mode"] == "eager"].set_index(key)["median_s"].rename("eager_median_s")
    compiled = models[models["mode"] != "eager"].join(eager, on=key)
    if compiled.empty:
        return pd.DataFrame()
    compiled["eager_ms"] = compiled["eager_median_s"] * 1e3
    compiled["speedup_vs_eager"] = compiled["eager_median_s"] / compiled["median_s"]
    return compiled[[*key, "mode", "median_ms", "eager_ms", "speedup_vs_eager", "compile_s", "graph_breaks",
                     "recompiles"]].reset_index(drop=True)


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


def plot_by_batch(ok: pd.DataFrame, value: str, ylabel: str) -> plt.Figure | None:
    """One panel per model: a line per phase and precision [attention] over batch size."""
    models = ok[ok["kind"] == "model"]
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
    return fig


def plot_attention(ok: pd.DataFrame) -> plt.Figure | None:
    """Micro-benchmark TFLOP/s over sequence length, a line per implementation, a panel per shape."""
    micro = ok[ok["kind"] == "attention"]
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
    return fig


def scaling_table(ok: pd.DataFrame) -> pd.DataFrame:
    """python -m bench scale's rows: global throughput and efficiency by model, strategy and world size."""
    rows = ok[ok["world_size"].notna()]
    columns = ["model", "strategy", "precision", "batch", "world_size", "median_ms", "global_samples_per_s",
               "scaling_efficiency", "communication_share", "rank_medians_s"]
    return rows[columns].sort_values(["model", "strategy", "precision", "batch", "world_size"]).reset_index(drop=True)


def plot_scaling(table: pd.DataFrame) -> plt.Figure | None:
    """A panel per model: global samples/s over world size (a line per strategy, precision and batch), and
    the scaling efficiency on the right-hand axis, dashed."""
    if table.empty:
        return None
    fig, axes = _figure_grid(table["model"].nunique())
    for ax, (model, rows) in zip(axes, table.groupby("model", sort=False), strict=False):
        right = ax.twinx()
        for (strategy, precision, batch), line in rows.groupby(["strategy", "precision", "batch"], sort=False):
            label = f"{strategy} {precision} b{batch}"
            drawn, = ax.plot(line["world_size"], line["global_samples_per_s"], marker="o", label=label)
            right.plot(line["world_size"], line["scaling_efficiency"] * 100, linestyle="--", marker="x",
                       color=drawn.get_color())
        ax.set_title(model)
        _log2_ticks(ax, rows["world_size"])
        ax.set_xlabel("world size (processes)")
        ax.set_ylabel("global samples/s (solid)")
        right.set_ylabel("scaling efficiency % (dashed)")
        right.set_ylim(0, 110)
        ax.legend(fontsize=6)
    return fig


def profile_breakdowns(run_dir: Path) -> pd.DataFrame:
    """Category shares of every profiled case, one row per case."""
    shares = load_breakdowns(run_dir)
    if not shares:
        return pd.DataFrame()
    frame = pd.DataFrame(shares).T.fillna(0.0)
    frame.columns.name = None
    return frame


def plot_breakdowns(breakdowns: pd.DataFrame) -> plt.Figure | None:
    """A stacked bar of category shares per profiled case."""
    if breakdowns.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(breakdowns) + 1.5))
    breakdowns.mul(100).plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("% of profiled self time")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def log_scalars(ok: pd.DataFrame, tb_dir: Path) -> None:
    """Each case's headline figures as TensorBoard scalars, so runs can be set side by side there: the
    events torch's SummaryWriter writes, through TensorBoard's own writer (no torch)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tb_dir))
    try:
        for _, row in ok.iterrows():
            for name in ("samples_per_s", "tflops", "median_ms"):
                if pd.notna(row[name]):
                    value = Summary.Value(tag=f"{row['case_id']}/{name}", simple_value=float(row[name]))
                    writer.add_event(Event(wall_time=time.time(), step=0, summary=Summary(value=[value])))
    finally:
        writer.close()


def _markdown(frame: pd.DataFrame, index: bool = False) -> str:
    return frame.to_markdown(index=index, floatfmt=".4g") if not frame.empty else "(none)"


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _saved(fig: plt.Figure | None, path: Path) -> Path | None:
    return None if fig is None else save(fig, path)


@dataclass(frozen=True)
class Section:
    """A report section: a heading, lines of text, a table (may be empty), a plot (may be None) and links
    (text, path relative to the run folder)."""

    title: str
    table: pd.DataFrame
    plot: Path | None = None
    links: tuple[tuple[str, str], ...] = ()
    text: tuple[str, ...] = ()


STATUSES = ("ok", "skipped", "oom", "error")
WHERE = {"model": "in the models", "attention": "in the micro-benchmark"}
# What each flag means, for the headline (bench/results/row.py's flags() sets them).
FLAG_MEANINGS = {
    "emulated": "the precision has no native arithmetic here: its figures time an emulation",
    "not converged": "timed to its cap before its median's interval was within the target",
    "noisy": f"IQR above {NOISY_IQR:.0%} of the median",
    "host-bound": f"the GPU busy under {DEVICE_BOUND_SHARE:.0%} of a step: its time is the host's",
    "throttled": "the GPU's clocks were held down while timed",
    "CPU stolen": f"the hypervisor took over {STOLEN_PCT:g} % of the CPUs' time while timed",
    "above peak": "faster than its calibrated ceiling: the calibration read low (python -m bench calibrate)",
}


def fastest_configs(ok: pd.DataFrame) -> pd.DataFrame:
    """Per model and phase: the fastest configuration (precision, attention, mode, batch) by samples/s and
    the slowest, each with its 95 % interval, and the speed-up between them, bounded by the ends of the two
    intervals (which both cover their medians at least 90 % of the time)."""
    models = ok[(ok["kind"] == "model") & ok["samples_per_s"].notna()]
    out = []
    for (model, phase), rows in models.groupby(["model", "phase"], sort=False):
        rows = rows.assign(config=_label(rows) + " b" + rows["batch"].astype(str))
        fast, slow = rows.loc[rows["samples_per_s"].idxmax()], rows.loc[rows["samples_per_s"].idxmin()]
        per_sample = {end: (slow[end] / slow["batch"], fast[end] / fast["batch"]) for end in ("ci_low_s", "ci_high_s")}
        out.append({"model": model, "phase": phase, "fastest": fast["config"], "samples/s": fast["samples_per_s"],
                    "+-%": fast["ci_halfwidth"] * 100, "slowest": slow["config"],
                    "slowest samples/s": slow["samples_per_s"], "slowest +-%": slow["ci_halfwidth"] * 100,
                    "speed-up": fast["samples_per_s"] / slow["samples_per_s"],
                    "speed-up low": per_sample["ci_low_s"][0] / per_sample["ci_high_s"][1],
                    "speed-up high": per_sample["ci_high_s"][0] / per_sample["ci_low_s"][1]})
    return pd.DataFrame(out)


def _median_speedup(table: pd.DataFrame, by: list[str], column: str, against: str,
                    notes: dict[str, str] | None = None) -> list[str]:
    """'amp_bf16 against fp32: 1.8x (median of 12 matched cases, 0.9-2.4x)' per group of a speed-up table,
    with the note `notes` has for the group's first key."""
    if table.empty:
        return []
    lines = []
    for name, rows in table.dropna(subset=[column]).groupby(by, sort=False):
        parts = name if isinstance(name, tuple) else (name,)
        values = rows[column]
        lines.append(f"{' '.join(map(str, parts))} against {against}: {values.median():.3g}x (median of {len(values)} "
                     f"matched cases, {values.min():.3g}-{values.max():.3g}x){(notes or {}).get(parts[0], '')}")
    return lines


def _time_spent(frame: pd.DataFrame) -> list[str]:
    """Where the cases' time went (runs from before the case_s column have none to say)."""
    if "case_s" not in frame or frame["case_s"].isna().all():
        return []
    parts = {name: frame[column].sum() for name, column in (("warm-up", "warmup_s"), ("timed rounds", "timed_s"),
                                                           ("builds", "build_s"), ("FLOP counts", "flops_s"))}
    total = frame["case_s"].sum()
    outside = total - parts["warm-up"] - parts["timed rounds"]
    share = f", {outside / parts['timed rounds']:.0%} of the timed time" if parts["timed rounds"] > 0 else ""
    return [f"{total:.0f} s in cases: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in parts.items())
            + f", the rest (memory, recording, profiling) {outside - parts['builds'] - parts['FLOP counts']:.0f} s; "
            f"outside warm-up and timing {outside:.0f} s{share}."]


def headline_sections(frame: pd.DataFrame, ok: pd.DataFrame, calibration: dict) -> list[Section]:
    """What the run found, before any table: the cases and how precise they are, what precisions and
    attention implementations bought, what to be wary of, and the fastest configuration per model."""
    counts = frame["status"].value_counts()
    converged = ok["converged"].dropna() if "converged" in ok else pd.Series(dtype=object)
    lines = [f"{len(frame)} cases on {frame['device_name'].iloc[0]}: "
             + ", ".join(f"{counts[status]} {status}" for status in STATUSES if status in counts) + "."]
    if len(converged):
        target = ok["ci_target"].dropna()
        within = f" (median within +-{target.iloc[0]:.1%} at 95 %)" if len(target) else ""
        lines.append(f"{int(converged.astype(bool).sum())} of {len(converged)} timed cases converged{within}; "
                     f"median interval +-{ok['ci_halfwidth'].median():.1%} of the median.")
    emulated = ok.loc[ok["emulated"].astype(str) == "True", "precision"] if "emulated" in ok else []
    lines += _median_speedup(amp_speedups(ok), ["precision"], "speedup_vs_fp32", "fp32",
                             dict.fromkeys(emulated, "; emulated here"))
    attn = attention_speedups(ok)
    attn = attn[attn["attention"] != "naive"].assign(where=lambda f: f["kind"].map(WHERE)) if not attn.empty else attn
    lines += _median_speedup(attn, ["attention", "where"], "speedup_vs_naive", "naive")
    lines += _time_spent(frame)
    flagged = ok["flags"].fillna("").str.split("; ").explode() if "flags" in ok else pd.Series(dtype=object)
    for flag, n in flagged[flagged != ""].value_counts().items():
        lines.append(f"Flag '{flag}': {n} cases - {FLAG_MEANINGS.get(flag, flag)}.")
    peaks = calibration.get("matmul_tflops", {})
    lines.append("Calibrated matmul peaks (TFLOP/s): " + (", ".join(
        f"{name} {value:.3g}" + (f" ({kernel})" if (kernel := peak_kernel(name, calibration)) else "")
        for name, value in peaks.items()) or "none") + ".")
    fastest = fastest_configs(ok)
    return [Section("What this run found", pd.DataFrame(), text=tuple(lines)),
            *([Section("Fastest configuration per model and phase (95 % intervals; the speed-up over the slowest "
                       "bounded by their ends)",
                       fastest)] if not fastest.empty else [])]


def flagged_sections(ok: pd.DataFrame) -> list[Section]:
    """Every ok case with a flag, and which."""
    if "flags" not in ok:
        return []
    rows = ok[ok["flags"].fillna("") != ""]
    return [Section("Flagged cases", rows[["case_id", "median_ms", "ci_halfwidth", "rounds", "flags"]])]


def throughput_sections(ok: pd.DataFrame, plots: Path) -> list[Section]:
    """A samples/s table per model, the throughput plot under the last."""
    tables = list(throughput_tables(ok).items())
    plot = _saved(plot_by_batch(ok, "samples_per_s", "samples/s"), plots / "throughput_vs_batch.png")
    return [Section(f"Throughput: {model} (samples/s)", table.reset_index(), plot if i == len(tables) - 1 else None)
            for i, (model, table) in enumerate(tables)]


def memory_sections(ok: pd.DataFrame, plots: Path) -> list[Section]:
    plot = _saved(plot_by_batch(ok.assign(peak_mem_mib=ok["peak_mem_bytes"] / 2**20), "peak_mem_mib",
                                "peak memory (MiB)"), plots / "memory_vs_batch.png")
    return [Section("Peak memory", pd.DataFrame(), plot)] if plot else []


def speedup_sections(ok: pd.DataFrame, plots: Path) -> list[Section]:
    return [
        Section("AMP speed-up over fp32", amp_speedups(ok)),
        *([Section("Execution modes: speed-up over eager, compile time (first call, s), graph breaks, recompiles",
                   compile_speedups(ok))] if (_axes(ok)["mode"] != "eager").any() else []),
        Section("Attention implementations: time, TFLOP/s and speed-up over naive", attention_speedups(ok),
                _saved(plot_attention(ok), plots / "attention_tflops_vs_seqlen.png")),
    ]


def profile_sections(run_dir: RunDir, plots: Path) -> list[Section]:
    """The category shares of every profiled case, and a link to each case's offline trace page (written
    here, from its trace)."""
    breakdowns = profile_breakdowns(run_dir.path)
    table = breakdowns.mul(100).round(1).reset_index(names="case") if len(breakdowns) else breakdowns
    pages = write_trace_pages(run_dir)
    links = tuple((case_id, page.relative_to(run_dir.path).as_posix()) for case_id, page in pages.items())
    return [Section("Profile breakdown (% of self time)", table,
                    _saved(plot_breakdowns(breakdowns), plots / "profile_breakdown.png")),
            *([Section("Trace pages (timeline, top operators and kernels; open offline)", pd.DataFrame(),
                       links=links)] if links else [])]


def scaling_sections(ok: pd.DataFrame, plots: Path) -> list[Section]:
    table = scaling_table(ok)
    if table.empty:
        return []
    return [Section("Data-parallel scaling (torchrun): global samples/s and efficiency against one process", table,
                    _saved(plot_scaling(table), plots / "scaling.png"))]


def instruction_sections(ok: pd.DataFrame) -> list[Section]:
    """An --instructions run's one figure per case: callgrind's instructions per step (nothing is timed)."""
    counted = ok[ok["instructions"].notna()] if "instructions" in ok else ok.iloc[:0]
    if counted.empty:
        return []
    table = counted[["case_id", "instructions"]].assign(instructions=counted["instructions"].round().astype("int64"))
    return [Section("Instructions per step (callgrind)", table)]


def device_sections(ok: pd.DataFrame) -> list[Section]:
    """On a GPU: the host-bound cases, whose end-to-end time is the host's (comparing them compares CPUs),
    and how each case's device time was measured."""
    gpu = ok[ok["bound"].isin(["host", "device"])]
    if gpu.empty:
        return []
    ms = gpu.assign(device_ms=gpu["device_s"] * 1e3, host_overhead_ms=gpu["host_overhead_s"] * 1e3,
                    gpu_busy_pct=100 * gpu["device_s"] / gpu["median_s"])
    columns = ["case_id", "median_ms", "device_ms", "host_overhead_ms", "gpu_busy_pct", "device_method"]
    return [Section(f"Host-bound cases (the GPU busy under {DEVICE_BOUND_SHARE:.0%} of a step: their end-to-end "
                    "time follows the host's CPU, and comparing it across machines compares CPUs)",
                    ms[ms["bound"] == "host"][columns]),
            Section("Device time per case (graph: CUDA-graph replays; profiler: busy time, where the step could not "
                    "be captured)", ms[columns[:-2] + ["device_tflops", "device_method"]])]


def health_sections(frame: pd.DataFrame, ok: pd.DataFrame) -> list[Section]:
    """Noisy cases, cases timed while the hypervisor took CPU time or the GPU's clocks were held down, cases
    that did not run, and the environment they ran in."""
    noisy = ok[ok["noisy"]].assign(iqr_ms=lambda f: f["iqr_s"] * 1e3)[["case_id", "median_ms", "iqr_ms", "rounds"]]
    stolen = ok[ok["cpu_steal_pct"] > STOLEN_PCT][["case_id", "median_ms", "cpu_steal_pct"]]
    held = ok["throttle"].notna()  # read back from results.csv, "" (clocks not held) is NaN
    throttled = ok[held][["case_id", "median_ms", "sm_clock_mhz", "throttle"]]
    environment = frame.iloc[0][[c for c in ENVIRONMENT if c in frame.columns]].fillna("").to_frame("value")
    return [
        Section(f"Noisy cases (IQR above {NOISY_IQR:.0%} of the median)", noisy),
        Section(f"CPU time stolen (the hypervisor gave other guests over {STOLEN_PCT:.0f} % of it while timed)",
                stolen),
        *([Section("GPU clocks held down while timed (NVML's reasons: power cap, thermal or hardware slowdown)",
                   throttled)] if not throttled.empty else []),
        Section("Skipped, out-of-memory and failed cases", frame[frame["status"] != "ok"][["case_id", "status",
                                                                                           "reason"]]),
        Section("Environment", environment.reset_index(names="field")),
    ]


def render(title: str, intro: str, sections: list[Section]) -> tuple[str, str]:
    """The sections as Markdown (plots linked) and as one self-contained HTML page (plots embedded)."""
    markdown = [f"# {title}", "", intro, ""]
    body = [f"<p>{html.escape(intro)}</p>"]
    for section in sections:
        markdown += [f"## {section.title}", ""]
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            markdown += [*(f"- {line}" for line in section.text), ""]
            body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in section.text) + "</ul>")
        if not section.table.empty or (section.plot is None and not section.links and not section.text):
            markdown += [_markdown(section.table), ""]
            body.append(table_html(section.table))
        if section.links:
            markdown += [*(f"- [{text}]({href})" for text, href in section.links), ""]
            body.append("<ul>" + "".join(f"<li><a href='{html.escape(href)}'>{html.escape(text)}</a></li>"
                                         for text, href in section.links) + "</ul>")
        if section.plot is not None:
            markdown += [f"![{section.plot.stem}](plots/{section.plot.name})", ""]
            body.append(_embed(section.plot))
    return "\n".join(markdown) + "\n", page(title, body)


def write_report(run: str | Path, reports_dir: Path = REPORTS_DIR) -> Path:
    """Write summary.md, report.html, plots/ and tb/ into the run folder; returns report.html's path."""
    run_dir = RunDir(resolve(run, reports_dir))
    results = load_results(run_dir.path)
    try:
        rounds, _ = load_rounds(run_dir.path)
    except RunError:  # a run where nothing was timed (all skipped) has no raw rounds
        rounds = {}
    calibration = load_calibration(run_dir.path)
    device_rounds = {case: data for case, (data, _) in load_device_rounds(run_dir.path).items()} if rounds else {}
    frame = recompute(results, rounds, calibration, device_rounds)
    ok = frame[frame["status"] == "ok"]
    one_process = ok[ok["world_size"].isna()]  # scale's rows have a section of their own
    run_dir.plots_dir.mkdir(exist_ok=True)
    plots = run_dir.plots_dir
    sections = [*headline_sections(frame, one_process, calibration), *throughput_sections(one_process, plots),
                *memory_sections(one_process, plots), *device_sections(one_process),
                *speedup_sections(one_process, plots), *scaling_sections(ok, plots), *profile_sections(run_dir, plots),
                *instruction_sections(ok), *flagged_sections(ok), *health_sections(frame, ok)]
    log_scalars(ok, run_dir.tb_dir)
    intro = (f"Run {run_dir.run_id} on {results['device_name'].iloc[0]}: every figure recomputed from its "
             f"{sum(d.size for d in rounds.values())} raw rounds; intervals are of the median, at 95 %.")
    markdown, page = render(f"archbench report: {run_dir.run_id}", intro, sections)
    atomic_write(run_dir.summary_md, markdown)
    atomic_write(run_dir.report_html, page)
    return run_dir.report_html
