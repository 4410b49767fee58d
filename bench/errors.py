"""One line for an error, wherever a failure is recorded rather than raised (a row's reason, a stage's
detail): the first line of its message, cut to a width, an empty message kept empty. Also the error for
bad input, which the command line and the sweep report in that one line."""

from __future__ import annotations


class OptionError(ValueError):
    """A bad option value; the message is one line naming the valid choices."""


def first_line(text: str, width: int = 200) -> str:
    """The first non-blank-led line of `text`, at most `width` characters ("" for no text)."""
    return (text.strip().splitlines() or [""])[0][:width]


def one_line(err: BaseException, width: int = 200) -> str:
    """`Type: first line of the message`, as rows and logs record an error."""
    return f"{type(err).__name__}: {first_line(str(err), width)}"
