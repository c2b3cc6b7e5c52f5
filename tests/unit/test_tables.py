"""The CLI's tables: written directly, character for character what rich draws, or left to rich
when a cell is not plain text."""

from __future__ import annotations

import io
import random
import string

import pytest
from rich.console import Console
from rich.table import Table

from aura_ops.cli import tables


def _rich(columns: list[str], rows: list[list[str]], room: int, terminal: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out, soft_wrap=True, width=room, force_terminal=terminal, color_system="standard" if terminal else None
    )
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return out.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_a_plain_table_is_written_as_rich_draws_it(terminal: bool) -> None:
    shuffled = random.Random(12)
    alphabet = string.ascii_letters + string.digits + " .,:-_/()+%é日本"
    compared = 0
    for _ in range(120):
        count = shuffled.randint(1, 8)
        columns = ["".join(shuffled.choice(alphabet) for _ in range(shuffled.randint(1, 8))) for _ in range(count)]
        rows = [
            ["".join(shuffled.choice(alphabet) for _ in range(shuffled.randint(0, 14))) for _ in range(count)]
            for _ in range(shuffled.randint(1, 5))
        ]
        drawn = tables.render(columns, rows, 150, bold=terminal)
        if drawn is not None:
            assert drawn == _rich(columns, rows, 150, terminal)
            compared += 1
    assert compared > 60


def test_a_snapshot_listing_row_is_written_as_rich_draws_it() -> None:
    columns = ["id", "created", "components", "size", "own", "shared", "tags", "state", "pin"]
    row = ["20261201-103639-231", "2026-12-01T10:36:39+00:00", "etc, site", "6.3 kB", "36.9 kB", "90.1 kB"]
    rows = [row + ["t0", "ok", ""], row + ["", "DAMAGED: manifest is missing", "pinned"]]
    assert tables.render(columns, rows, 1000) == _rich(columns, rows, 1000, False)


@pytest.mark.parametrize(
    "cell", ["[bold]x", "a :smile: b", "x:100:y", "line\nbreak", "bell\x07", "tab\there", "\x1b[31mred"]
)
def test_a_cell_rich_would_not_print_as_written_leaves_the_table_to_rich(cell: str) -> None:
    assert tables.render(["a", "b"], [["x", cell]], 1000) is None


def test_a_table_wider_than_the_room_or_without_rows_leaves_it_to_rich() -> None:
    assert tables.render(["a"], [["x" * 50]], 40) is None
    assert tables.render(["a"], [["x" * 50]], 54) is not None
    assert tables.render(["a", "b"], [], 1000) is None


def test_timestamps_are_plain_text() -> None:
    assert tables.plain("2026-12-01T10:36:39+00:00") and tables.plain("12:30:45")
