"""The README documents every key of a step in `runs show --json`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aura_ops.state.journal import StepRecord

README = Path(__file__).resolve().parents[2] / "README.md"
# how the README's `runs show` row names the keys it describes in words
IN_WORDS = {
    "index": "steps",
    "name": "steps",
    "action": "steps",
    "error": "errors",
    "started": "timings",
    "ended": "timings",
}


def test_the_runs_show_row_names_every_key_of_a_step() -> None:
    row = next(line for line in README.read_text().splitlines() if "`runs show RUN`" in line and line.startswith("|"))
    for field in dataclasses.fields(StepRecord):
        word = IN_WORDS.get(field.name)
        assert (word in row) if word else (f"`{field.name}`" in row or field.name in row), field.name
    assert "`saved`" in row and "`undo`" in row
