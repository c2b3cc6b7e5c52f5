"""The bench's own logic: alternated rounds, medians, results files and their comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aura_ops.dev import bench_measure, bench_results
from aura_ops.dev.bench_measure import Measure, Task, paired


@pytest.fixture(autouse=True)
def _no_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench syncs before each run; on a busy disk that takes seconds, and tests must be fast."""
    monkeypatch.setattr(bench_measure.os, "sync", lambda: None)


def test_paired_rounds_rotate_the_order_and_keep_each_tools_median(tmp_path: Path) -> None:
    order: list[str] = []
    tasks = [
        Task(name, name, ["true"], {"PATH": "/usr/bin:/bin"}, prepare=lambda _r, name=name: order.append(name))
        for name in ("a", "b", "c")
    ]
    figures = paired(tasks, 3, "t", "small")
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [f.label for f in figures] == ["a", "b", "c"]
    for figure in figures:
        assert len(figure.runs) == 3
        assert figure.wall == sorted(figure.runs)[1]
        assert (figure.table, figure.scale, figure.tool) == ("t", "small", figure.label)


def test_a_failing_command_stops_the_bench_with_its_error_output() -> None:
    task = Task("broken", "sh", ["sh", "-c", "echo no such thing >&2; exit 3"], {"PATH": "/usr/bin:/bin"})
    with pytest.raises(SystemExit, match="(?s)broken failed \\(exit 3\\).*no such thing"):
        paired([task], 1, "t", "small")


def test_an_output_left_by_an_earlier_run_is_moved_aside_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_measure, "ASIDE", tmp_path / "aside")
    output = tmp_path / "out"
    output.write_text("earlier")
    task = Task("touch", "touch", ["touch", str(output)], {"PATH": "/usr/bin:/bin"}, output)
    paired([task], 1, "t", "small")
    assert [p.read_text() for p in (tmp_path / "aside").iterdir()] == ["earlier"]
    assert output.read_text() == ""


def _figure(label: str, wall: float, size: int = 0, rss: float = 10.0) -> Measure:
    return Measure(label, wall, wall / 2, rss, size, "tool", "db-backup", "pgbench s3", [wall])


def test_compare_prints_each_figure_new_over_old_for_the_two_newest_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_results.write(
        [_figure("pg_dump -Fc", 2.0, 100), _figure("gone", 1.0)], {"started": "1", "mode": "quick"}, tmp_path
    )
    bench_results.write(
        [_figure("pg_dump -Fc", 3.0, 50, rss=25.0), _figure("new", 1.0)], {"started": "2", "mode": "quick"}, tmp_path
    )
    assert bench_results.compare(folder=tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if "pg_dump -Fc" in line]
    assert len(lines) == 1
    assert lines[0].split()[-4:] == ["1.50", "1.50", "0.50", "2.50"]  # wall, cpu, size, peak RSS
    # a figure in one run only (a renamed command) is named, not silently dropped
    assert "  only in the new run (1): db-backup new [pgbench s3]" in out
    assert "  only in the old run (1): db-backup gone [pgbench s3]" in out
    document = json.loads((tmp_path / "2.json").read_text())
    assert document["figures"][0]["runs"] == [3.0]


def test_compare_needs_two_results_files(tmp_path: Path) -> None:
    assert bench_results.compare(folder=tmp_path) == 2
