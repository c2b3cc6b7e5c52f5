"""Off a terminal the CLI draws its tables itself (rich measures every cell, too slow for a list
of 1,000 snapshots): byte for byte what rich drew there, and rich itself wherever it would draw
something else."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console
from rich.table import Table

from aura_ops.cli.base import _plain_table


def _rich(columns: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True, width=1000, file=out).print(table)
    return out.getvalue()


SNAPSHOT_ROW = ["20261201-104438-091", "2026-12-01T10:44:38+00:00", "db, files", "561 B", "20.5 kB", "", "ok", ""]


@pytest.mark.parametrize(
    ("columns", "rows"),
    [
        (["id", "created", "components", "size", "own", "tags", "state", "pin"], [SNAPSHOT_ROW] * 3),
        (["id", "x"], []),
        (["a"], [[""]]),
        (["a", "bb"], [["x" * 50, "y"], ["", "two  spaces "]]),
        (["check", "detail"], [["pg_dump", 'version 15 "ok" \\ (path: /usr/lib/x:y)']]),
    ],
)
def test_a_plain_table_is_what_rich_draws(columns: list[str], rows: list[list[str]]) -> None:
    assert _plain_table(columns, rows) == _rich(columns, rows)


def test_random_ascii_tables_are_drawn_as_rich_draws_them_or_left_to_rich() -> None:
    rng = random.Random(12)
    drawn = 0
    for _ in range(300):
        columns = [
            "".join(rng.choice("abc d-_:/.") for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 6))
        ]
        alphabet = "abcXYZ 019-_:/.()=,*+\\'\""
        rows = [
            ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in columns]
            for _ in range(rng.randint(0, 5))
        ]
        plain = _plain_table(columns, rows)
        if plain is not None:
            drawn += 1
            assert plain == _rich(columns, rows), (columns, rows)
    assert drawn > 100


@pytest.mark.parametrize(
    "cell", ["[bold]x[/bold]", "a :smile: b", ":100:", "x:+1:", "é", "wide 漢字", "two\nlines", "tab\there", "x" * 1001]
)
def test_whatever_rich_would_draw_differently_is_left_to_rich(cell: str) -> None:
    assert _plain_table(["h"], [[cell]]) is None
