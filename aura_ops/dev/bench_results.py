"""What ``make bench`` prints and keeps: tables of ratios against a named baseline, a scale table,
every figure as JSON in ``bench-results/<UTC time>.json``, and ``compare``, which prints each
figure of a newer results file as a ratio of an older one's."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aura_ops.dev.bench_measure import Measure

RESULTS = Path("bench-results")


def table(title: str, rows: list[Measure], baseline: Measure) -> None:
    """Print ``rows`` with each wall time as a ratio of ``baseline``'s (named in the header)."""
    print(f"\n{title}")
    print(f"  {'command':<44} {'wall s':>7} {'x base':>7} {'CPU s':>7} {'size MB':>8} {'RSS MB':>7}")
    for row in rows:
        ratio = row.wall / baseline.wall if baseline.wall else 0
        size = f"{row.size / 1e6:8.1f}" if row.size else f"{'-':>8}"
        print(f"  {row.label:<44} {row.wall:7.2f} {ratio:7.2f} {row.cpu:7.2f} {size} {row.rss_mb:7.1f}")
    print(f"  (x base: wall time / {baseline.label}'s; median of {len(baseline.runs)} alternated runs)")


def scale_table(title: str, figures: list[Measure], tables: list[str], baselines: dict[str, str]) -> None:
    """One row per (table, command), one column per scale: wall seconds and the ratio to the
    baseline command of that table at that scale."""
    scales = list(dict.fromkeys(f.scale for f in figures if f.table in tables))
    if not scales:  # a partial run, or --part
        return
    by_key = {(f.table, f.label, f.scale): f for f in figures}
    print(f"\n{title}")
    print(f"  {'table':<14} {'command':<36}" + "".join(f" {scale:>28}" for scale in scales))
    for name in tables:
        labels = list(dict.fromkeys(f.label for f in figures if f.table == name))
        for label in labels:
            cells = []
            for scale in scales:
                figure = by_key.get((name, label, scale))
                base = by_key.get((name, baselines[name], scale))
                if figure is None:
                    cells.append(f" {'-':>28}")
                    continue
                ratio = f"{figure.wall / base.wall:5.2f}x" if base and base.wall else "     -"
                cells.append(f" {figure.wall:10.2f} s {ratio:>7} {figure.rss_mb:5.0f} MB")
            print(f"  {name:<14} {label:<36}" + "".join(cells))
    named = "; ".join(f"{name}: x {base}" for name, base in baselines.items() if name in tables)
    print(f"  (wall time, its ratio to the baseline at the same scale ({named}), and peak RSS)")


def write(figures: list[Measure], meta: dict[str, Any], folder: Path = RESULTS) -> Path:
    """Write every figure and ``meta`` to ``folder/<meta['started']>.json``; return its path."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{meta['started']}.json"
    document = {**meta, "figures": [asdict(f) for f in figures]}
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def compare(old: Path | None = None, new: Path | None = None, folder: Path = RESULTS) -> int:
    """Print each figure of ``new`` as a ratio of the same figure (table, command, scale) in
    ``old``; by default the two newest results files in ``folder``. Returns an exit code."""
    if old is None or new is None:
        files = sorted(folder.glob("*.json"))
        if len(files) < 2:
            print(f"bench compare: need two results files in {folder}/ (found {len(files)})", file=sys.stderr)
            return 2
        old, new = files[-2], files[-1]
    before, after = _load(old), _load(new)
    print(f"new {new.name} ({after.get('mode')}) / old {old.name} ({before.get('mode')})")
    if before.get("mode") != after.get("mode"):
        print("  note: the two runs used different modes; only figures present in both are compared")
    if before.get("versions") != after.get("versions"):
        print(f"  versions then: {before.get('versions')}\n  versions now:  {after.get('versions')}")
    previous = {(f["table"], f["label"], f["scale"]): f for f in before["figures"]}
    print(
        f"  {'table':<14} {'command':<44} {'scale':<16} {'old s':>8} {'new s':>8} "
        f"{'wall':>6} {'cpu':>6} {'size':>6} {'rss':>6}"
    )
    unmatched = []
    for figure in after["figures"]:
        then = previous.pop((figure["table"], figure["label"], figure["scale"]), None)
        if then is None:
            unmatched.append(figure)
            continue
        print(
            f"  {figure['table']:<14} {figure['label']:<44} {figure['scale']:<16} "
            f"{then['wall']:8.2f} {figure['wall']:8.2f} {_ratio(figure['wall'], then['wall'])} "
            f"{_ratio(figure['cpu'], then['cpu'])} {_ratio(figure['size'], then['size'])} "
            f"{_ratio(figure.get('rss_mb', 0), then.get('rss_mb', 0))}"
        )
    print("  (new / old: below 1.00 is faster, smaller or lighter; rss: peak RSS)")
    # a figure renamed or measured in one run only is said, not silently left out
    for side, figures in (("new", unmatched), ("old", list(previous.values()))):
        if figures:
            names = "; ".join(f"{f['table']} {f['label']} [{f['scale']}]" for f in figures)
            print(f"  only in the {side} run ({len(figures)}): {names}")
    return 0


def _ratio(new: float, old: float) -> str:
    return f"{new / old:6.2f}" if old and new else f"{'-':>6}"
