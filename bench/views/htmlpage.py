"""The look shared by archbench's HTML pages (report.html, the trace pages): one stylesheet, tables with
numbers right-aligned, and a page that loads nothing from outside itself."""

from __future__ import annotations

import html

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td{max-width:60em;overflow-wrap:anywhere}
img{max-width:100%;display:block;margin:1em 0}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}.note{color:#666}"""


def table_html(table: pd.DataFrame) -> str:
    """The table as HTML, numbers right-aligned to 4 significant digits, text left-aligned and escaped."""
    if table.empty:
        return "<p class=note>(none)</p>"
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and table[c].dtype != bool]
    text = [c for c in table.columns if c not in numeric]
    styler = table.style.hide(axis="index").format("{:.4g}", subset=numeric, na_rep="")
    styler = styler.format(na_rep="", subset=text, escape="html")
    return styler.set_properties(subset=text, **{"text-align": "left"}).to_html()


def page(title: str, body: list[str]) -> str:
    """A whole HTML document: the title as heading, then the body's parts as given (already HTML)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
