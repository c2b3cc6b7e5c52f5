"""Tables as the CLI prints them: the layout rich draws (heavy head, one space of padding, each
column as wide as its widest cell), written directly when that is all a table needs.

rich lays out every cell through its renderables (markup, wrapping, measuring): about 0.5 ms a
row, half a second for ``snapshots list`` of 1,000 snapshots. A table whose cells are plain,
printable text and that fits the width needs none of it: ``render`` writes the same characters
rich would, a few microseconds a row. Anything else (a cell rich would read as markup or an
emoji code, a control character, a table wider than the console, no rows) is None: the caller
lets rich draw it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# what rich would not print as written: markup (``[bold]``), an emoji code (``:smile:``; a
# colon-delimited name with anything but digits in it, or one of rich's two numeric codes)
_EMOJI = re.compile(r":(\S*?)(?:-(?:emoji|text))?:")
_NUMERIC_EMOJI = frozenset({"100", "1234"})


def plain(cell: str) -> bool:
    """Whether rich prints ``cell`` exactly as written (no markup, emoji code or control code)."""
    if "[" in cell or not cell.isprintable():
        return False
    if not cell.isascii() and not all(_cells(char) for char in cell):
        return False  # a character rich may measure otherwise (see ``_cells``)
    if ":" in cell:
        for match in _EMOJI.finditer(cell):
            name = match.group(1)
            if not name.isdigit() or name in _NUMERIC_EMOJI:
                return False
    return True


# Characters whose width rich's tables give alike in every Unicode version it knows (its
# ``UNICODE_VERSION``): the ranges it takes as one column, and wide letters (kana, CJK
# ideographs, Hangul syllables, full-width forms). Any other character (a mark of combining class
# 0, Hangul jamo, a symbol made wide in a later Unicode, an emoji modifier) leaves the table to rich.
_NARROW = ((0xA0, 0xAC), (0xAE, 0x2FF), (0x370, 0x482), (0x2500, 0x25FC), (0x2800, 0x28FF))
_WIDE = (
    (0x3041, 0x3096),
    (0x309B, 0x30FF),
    (0x3400, 0x4DB5),
    (0x4E00, 0x9FBB),
    (0xAC00, 0xD7A3),
    (0xFF01, 0xFF60),
    (0xFFE0, 0xFFE6),
)


def _cells(char: str) -> int:
    """The columns rich gives ``char`` (printable), or 0 when it is not one of the above."""
    code = ord(char)
    if code < 0x80 or any(low <= code <= high for low, high in _NARROW):
        return 1
    if any(low <= code <= high for low, high in _WIDE):
        return 2
    return 0


def width(cell: str) -> int:
    """The columns ``cell`` takes on a terminal, for a cell that is ``plain``."""
    if cell.isascii():
        return len(cell)
    return sum(_cells(char) for char in cell)


def render(columns: Sequence[str], rows: Sequence[Sequence[str]], room: int, bold: bool = False) -> str | None:
    """The table rich would print for ``columns`` and ``rows`` (strings) in ``room`` columns,
    its header in bold (``bold``: ANSI, as rich writes it on a terminal); None when rich must
    draw it (see the module docstring)."""
    if not rows or any(not plain(cell) for cell in columns):
        return None
    sizes = [width(name) for name in columns]
    for row in rows:
        if len(row) != len(columns):
            return None
        for index, cell in enumerate(row):
            if not plain(cell):
                return None
            size = width(cell)
            if size > sizes[index]:
                sizes[index] = size
    if sum(sizes) + 3 * len(sizes) + 1 > room:
        return None
    lines = [
        "┏" + "┳".join("━" * (size + 2) for size in sizes) + "┓",
        "┃" + "┃".join(_header(name, size, bold) for name, size in zip(columns, sizes, strict=True)) + "┃",
        "┡" + "╇".join("━" * (size + 2) for size in sizes) + "┩",
    ]
    for row in rows:
        cells = [f" {cell}{' ' * (size - width(cell))} " for cell, size in zip(row, sizes, strict=True)]
        lines.append("│" + "│".join(cells) + "│")
    lines.append("└" + "┴".join("─" * (size + 2) for size in sizes) + "┘")
    return "\n".join(lines) + "\n"


def _header(name: str, size: int, bold: bool) -> str:
    padded = name + " " * (size - width(name))
    if not bold:
        return f" {padded} "
    return f"\x1b[1m \x1b[0m\x1b[1m{padded}\x1b[0m\x1b[1m \x1b[0m"
