"""One line per recorded error: the first line of its message, cut, an empty message kept empty."""

import pytest

from bench.errors import first_line, one_line


@pytest.mark.parametrize(("text", "width", "line"), [
    ("", 200, ""), ("\n\n", 200, ""),  # no message: an empty line, not an IndexError
    ("  CUDA out of memory.\nTried to allocate 2 GiB", 200, "CUDA out of memory."),
    ("x" * 300, 120, "x" * 120),
])
def test_first_line(text, width, line):
    assert first_line(text, width) == line


def test_one_line_names_the_error_type():
    assert one_line(RuntimeError()) == "RuntimeError: "
    assert one_line(ValueError("bad\nmore"), 2) == "ValueError: ba"
