"""The history's page: one self-contained HTML file (Plotly inlined once, data in the page, so it opens from
file:// with no network): open regressions on top, then a trend per series with each commit's interval,
the fitted levels, step markers and environment changes, commit and subject on hover, and filters."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from bench.history.trend import SCALE, UNITS, Failure, Trend, open_regressions, summary
from bench.results.rundir import atomic_write
from bench.views.htmlpage import page, table_html

STATE_COLOURS = {"open": "#d62728", "suspected": "#ff7f0e", "recovered": "#7f7f7f", "accepted": "#2ca02c",
                 "faster": "#1f77b4"}

FILTER_JS = """<script>
function filterSeries(){
  const text=document.getElementById('q').value.toLowerCase(), metric=document.getElementById('metric').value,
        machine=document.getElementById('machine').value, steps=document.getElementById('steps').checked;
  let shown=0;
  for(const div of document.querySelectorAll('div.series')){
    const show=div.dataset.series.toLowerCase().includes(text) && (!metric||div.dataset.metric===metric)
      && (!machine||div.dataset.machine===machine) && (!steps||div.dataset.steps!=='0');
    div.style.display=show?'':'none'; shown+=show;
  }
  document.getElementById('shown').textContent=shown;
}
</script>"""


def anchor(series: str) -> str:
    return "s-" + re.sub(r"[^A-Za-z0-9_-]+", "_", series)


def figure(found: Trend):
    """The trend of one series: points with their intervals (outliers apart), the fitted level, a line at each
    step (coloured by its state) and at each environment change."""
    import plotly.graph_objects as go

    points, scale = found.points, SCALE[found.metric]
    hover = (points["commit"].str[:10] + " " + points["subject"].map(lambda s: html.escape(s[:80])) + "<br>"
             + (points["value"] * scale).map("{:.4g}".format) + f" {UNITS[found.metric]}, "
             + points["runs"].astype(str) + " run(s)")
    fig = go.Figure()
    for outlier, group in points.groupby("outlier"):
        error = {"type": "data", "symmetric": False, "array": (group["high"] - group["value"]) * scale,
                 "arrayminus": (group["value"] - group["low"]) * scale, "visible": True}
        fig.add_trace(go.Scatter(x=group["order"], y=group["value"] * scale, mode="markers", error_y=error,
                                 name="outlier" if outlier else "median (95 % interval)", hovertext=hover[group.index],
                                 hoverinfo="text", marker={"symbol": "x" if outlier else "circle",
                                                           "color": "#d62728" if outlier else "#1f77b4"}))
    fig.add_trace(go.Scatter(x=points["order"], y=points["level"] * scale, mode="lines", line_shape="hvh",
                             name="fitted level", hoverinfo="skip", line={"color": "#555", "width": 1.5}))
    for change in found.changes:
        fig.add_vline(x=change.order - 0.5, line_color=STATE_COLOURS[change.state], line_width=2,
                      annotation_text=f"{change.state} x{change.ratio:.3f}", annotation_position="top")
    environment = points["environment"]
    for i in range(1, len(points)):
        if environment.iloc[i] != environment.iloc[i - 1]:
            fig.add_vline(x=points["order"].iloc[i] - 0.5, line_dash="dot", line_color="#9467bd",
                          annotation_text="environment", annotation_position="bottom right")
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=False,
                      yaxis={"type": "log", "title": UNITS[found.metric]},
                      xaxis={"title": "commit (first-parent order)"})
    return fig


def _regressions(found: list[Trend], since: int | None) -> pd.DataFrame:
    rows = [{"series": f"<a href='#{anchor(c.series)}'>{html.escape(c.series)}</a>", "commit": c.commit[:10],
             "subject": html.escape(c.subject), "ratio": c.ratio, "environment": html.escape(c.environment)}
            for c in open_regressions(found, since)]
    return pd.DataFrame(rows)


def _failing(failures: list[Failure]) -> pd.DataFrame:
    return pd.DataFrame([{"case": f.case, "status": f.status, "since commit": f.commit[:10], "subject": f.subject,
                          "last ok": f.last_ok[:10], "reason": f.reason} for f in failures])


def history_page(found: list[Trend], failures: list[Failure], since: int | None = None,
                 title: str = "archbench history") -> str:
    """The whole page: the summary line, the open regressions and failing cases (from `since` on), then every
    trend under the filters."""
    regressions = _regressions(found, since)
    table = _table(regressions)
    options = {key: sorted({t.series.split("/")[0] if key == "machine" else t.metric for t in found})
               for key in ("machine", "metric")}
    selects = "".join(f"<label>{key} <select id={key} onchange=filterSeries()><option value=''>all</option>"
                      + "".join(f"<option>{html.escape(v)}</option>" for v in values) + "</select></label> "
                      for key, values in options.items())
    body = [FILTER_JS, f"<p class=note>{html.escape(summary(found, since))}</p>",
            f"<h2>Open regressions ({len(regressions)})</h2>", table,
            *([f"<h2>Failing at their latest run ({len(failures)})</h2>", table_html(_failing(failures))]
              if failures else []),
            "<h2>Trends</h2><p><label>series <input id=q oninput=filterSeries() placeholder='filter'></label> "
            f"{selects}<label><input type=checkbox id=steps onchange=filterSeries()> only with steps</label> "
            f"<span class=note><span id=shown>{len(found)}</span> shown</span></p>"]
    for i, t in enumerate(found):
        plot = figure(t).to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False})
        body.append(f"<div class=series data-series='{html.escape(t.series)}' data-metric={t.metric} "
                    f"data-machine='{html.escape(t.series.split('/')[0])}' data-steps={len(t.changes)}>"
                    f"<h3 id={anchor(t.series)}>{html.escape(t.series)}</h3>"
                    f"<p class=note>threshold {t.threshold:.0%}; noise {t.sigma * 100:.2g} % a commit; "
                    f"{len(t.points)} commits</p>{plot}</div>")
    return page(title, body)


def _table(frame: pd.DataFrame) -> str:
    """table_html of cells that are HTML already (escaped where text): undo its escaping, once."""
    return html.unescape(table_html(frame)) if not frame.empty else table_html(frame)


def write_history_page(found: list[Trend], failures: list[Failure], out: Path, since: int | None = None) -> Path:
    path = out / "index.html"
    atomic_write(path, history_page(found, failures, since))
    return path
