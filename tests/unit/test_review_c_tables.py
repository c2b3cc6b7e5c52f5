"""Review of the start-up and listing changes: a table written by ``cli/tables.py`` must be what
rich prints, else rich draws it. Found different: cells whose characters rich measures otherwise
than ``unicodedata`` (marks of combining class 0, Hangul jamo, symbols Unicode made wide), an
output stream that is not UTF-8 (rich draws ASCII boxes; the heavy box crashed the command), and
FORCE_COLOR off a terminal (rich styles the header)."""

from __future__ import annotations

import io
import sys

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from aura_ops.cli import base, tables


def _rich(columns: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    console = Console(file=out, soft_wrap=True, width=1000, force_terminal=False, color_system=None)
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return out.getvalue()


@pytest.mark.parametrize(
    "cell",
    [
        "a\u0e31b",  # Thai vowel sign: a mark of combining class 0
        "x\u034fy",  # combining grapheme joiner
        "\u1100\u1161",  # a Hangul syllable as jamo (NFD, as macOS writes names)
        "\u2630 menu",  # a trigram: wide since Unicode 16
        "\u0915\u0903",  # Devanagari with a spacing mark
        "\U0001f44d\U0001f3fb",  # an emoji with a skin tone modifier
        "caf\u00e9 \u65e5\u672c \u30ab\u30ca \ud55c\uad6d\uc5b4",  # what the fast path keeps
    ],
)
def test_a_table_written_directly_is_what_rich_prints(cell: str) -> None:
    columns, rows = ["id", "tags"], [["20261201-103639-231", cell]]
    drawn = tables.render(columns, rows, 1000)
    assert drawn is None or drawn == _rich(columns, rows)


def test_letters_every_rich_cell_table_measures_alike_keep_the_fast_path() -> None:
    columns = ["id", "tags"]
    rows = [["20261201-103639-231", "caf\u00e9 \u65e5\u672c \u30ab\u30ca \ud55c\uad6d\uc5b4 \u0394\u0436"]]
    drawn = tables.render(columns, rows, 1000)
    assert drawn is not None and drawn == _rich(columns, rows)


def test_every_character_the_fast_path_keeps_is_measured_as_rich_measures_it() -> None:
    for code in range(0xA0, 0x10000):
        char = chr(code)
        if tables.plain(char):
            assert tables.width(char) == cell_len(char), hex(code)


def test_a_table_on_an_ascii_stream_is_drawn_as_rich_draws_it(monkeypatch: pytest.MonkeyPatch) -> None:
    columns, rows = ["id", "state"], [["20261201-103639-231", "ok"]]
    expected = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", expected)
    table = Table(*columns, show_lines=False)
    table.add_row(*rows[0])
    Console(soft_wrap=True, width=1000).print(table)
    expected.flush()
    written = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", written)
    base._table(columns, rows)  # before: UnicodeEncodeError on the heavy box
    written.flush()
    assert written.buffer.getvalue() == expected.buffer.getvalue()  # type: ignore[attr-defined]
    assert b"+--" in written.buffer.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("variable", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_a_table_off_a_terminal_with_a_forced_terminal_is_drawn_as_rich_draws_it(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    columns, rows = ["id", "state"], [["20261201-103639-231", "ok"]]
    expected = io.StringIO()
    monkeypatch.setattr(sys, "stdout", expected)
    table = Table(*columns, show_lines=False)
    table.add_row(*rows[0])
    Console(soft_wrap=True, width=1000).print(table)
    written = io.StringIO()
    monkeypatch.setattr(sys, "stdout", written)
    base._table(columns, rows)
    assert "\x1b[1m" in expected.getvalue()  # rich styles the header of a forced terminal
    assert written.getvalue() == expected.getvalue()
