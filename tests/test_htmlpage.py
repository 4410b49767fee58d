"""The shared look of the HTML pages: tables to four significant digits, text left-aligned and escaped,
and a page that is one document with its title as heading."""

import numpy as np
import pandas as pd

from bench.views.htmlpage import CSS, page, table_html


def test_tables_print_four_significant_digits_left_align_text_and_blank_missing_numbers():
    table = pd.DataFrame({"case": ["a", None], "median_ms": [1.234567, np.nan], "flops": [1234567.0, 2.0],
                          "noisy": [True, False]})
    html = table_html(table)
    assert ">1.235</td>" in html and ">1.235e+06</td>" in html and "1.23457" not in html
    assert "nan" not in html.lower() and "None" not in html and "XX" not in html
    assert 'class="data row1 col0" ></td>' in html and 'class="data row1 col1" ></td>' in html  # blank
    style = html.split("</style>")[0]
    left = {cell.split("_", 2)[2] for cell in style.split("{")[0].replace(",", " ").split() if cell.startswith("#T")}
    assert left == {"row0_col0", "row0_col3", "row1_col0", "row1_col3"}  # text and flags, not numbers
    assert style.split("{")[1].split("}")[0].strip() == "text-align: left;"
    assert ">True</td>" in html


def test_text_is_escaped_so_a_templated_kernel_name_shows_as_written():
    html = table_html(pd.DataFrame({"name": ["void k<128, float>(int)"], "calls": [3]}))
    assert ">void k&lt;128, float&gt;(int)</td>" in html and ">3</td>" in html


def test_an_empty_table_says_none():
    assert table_html(pd.DataFrame()) == "<p class=note>(none)</p>"


def test_a_page_is_one_document_with_its_title_escaped_and_the_stylesheet_inline():
    html = page("a <b> & c", ["<p>x</p>", "<p>y</p>"])
    assert html.startswith("<!doctype html><html><head><meta charset='utf-8'><title>a &lt;b&gt; &amp; c</title>")
    assert f"<style>{CSS}</style>" in html and "<link" not in html and "src=" not in html
    assert html.endswith("<body><h1>a &lt;b&gt; &amp; c</h1><p>x</p><p>y</p></body></html>")
