"""Timing for ``make bench``: one command (or a command plus an in-process finish, such as waiting
until a restored cluster answers) measured for wall time, client CPU, peak RSS and output size;
several tools measured in alternation, round after round, and each tool's median kept.

Peak RSS comes from GNU time (``%M``), not from this process's ``wait4``: Python starts a child
with vfork, and Linux records the vforking parent's own high-water RSS in the child's when it
execs, so every tool measured directly would show at least this bench's own peak. GNU time forks
from a process of about 2 MB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

TIME = "/usr/bin/time"  # GNU time (Debian package ``time``; scripts/bootstrap.sh installs it)


@dataclass
class Measure:
    """One figure: the median run of one tool on one data set (``scale``), with every run's wall."""

    label: str
    wall: float
    cpu: float
    rss_mb: float
    size: int
    tool: str = ""
    table: str = ""
    scale: str = ""
    runs: list[float] = field(default_factory=list)


Argv = list[str] | Callable[[int], list[str]]


@dataclass
class Task:
    """How to measure one tool. ``argv`` may depend on the round (e.g. ``--link-dest`` of the
    previous round's output). ``prepare`` and ``after`` run untimed before and after each run;
    ``begin`` runs inside the timed window before the command (e.g. ``createdb``, which aura-ops
    does inside its own run); ``finish`` runs inside the timed window after the command exits (e.g. start the restored
    server and wait until it answers). ``size`` reports the output size after a run when it is
    not ``output``'s."""

    label: str
    tool: str
    argv: Argv
    env: dict[str, str]
    output: Path | Callable[[int], Path] | None = None
    pipe: list[list[str]] | None = None
    cwd: Path | Callable[[int], Path] | None = None
    prepare: Callable[[int], object] | None = None
    finish: Callable[[int], object] | None = None
    after: Callable[[int], object] | None = None
    begin: Callable[[int], object] | None = None
    size: Callable[[int], int] | None = None
    report_size: bool = True


def _at(value: object, round_: int) -> object:
    return value(round_) if callable(value) else value


def paired(
    tasks: Sequence[Task],
    repeat: int,
    table: str,
    scale: str,
    before_round: Callable[[int], object] | None = None,
) -> list[Measure]:
    """Measure every task ``repeat`` times, alternating: round r runs each task once, in an order
    rotated by r, after ``before_round(r)`` (untimed). Returns each task's median run, in the
    order given, with all its walls in ``runs``."""
    runs: dict[int, list[Measure]] = {index: [] for index in range(len(tasks))}
    for round_ in range(repeat):
        if before_round is not None:
            before_round(round_)
        order = list(range(len(tasks)))
        shift = round_ % len(order)
        for index in order[shift:] + order[:shift]:
            runs[index].append(_run_task(tasks[index], round_))
    results = []
    for index, task in enumerate(tasks):
        chosen = _median(runs[index])
        chosen.runs = [m.wall for m in runs[index]]
        chosen.tool, chosen.table, chosen.scale = task.tool, table, scale
        if not task.report_size:  # e.g. a --link-dest tree, whose size is mostly the linked base's
            chosen.size = 0
        walls = ", ".join(f"{wall:.2f}" for wall in chosen.runs)
        print(f"  {task.label} [{scale}]: {walls} s -> median {chosen.wall:.2f}", file=sys.stderr, flush=True)
        results.append(chosen)
    if CLEAR_ASIDE:
        shutil.rmtree(ASIDE, ignore_errors=True)
        os.sync()
    return results


def _median(runs: list[Measure]) -> Measure:
    ordered = sorted(runs, key=lambda m: m.wall)
    return ordered[len(ordered) // 2]


def _run_task(task: Task, round_: int) -> Measure:
    output = _at(task.output, round_)
    assert output is None or isinstance(output, Path)
    if output is not None and output.exists():
        move_aside(output)
    if task.prepare is not None:
        task.prepare(round_)
    os.sync()  # every run starts with nothing dirty to write back
    argv = _at(task.argv, round_)
    cwd = _at(task.cwd, round_)
    assert isinstance(argv, list) and (cwd is None or isinstance(cwd, Path))
    measure = measure_once(task.label, argv, task.env, output, task.pipe, cwd, task.finish, round_, task.begin)
    if task.size is not None:
        measure.size = task.size(round_)
    elif task.report_size and output is not None and output.exists():
        measure.size = size_of(output)
    if task.after is not None:
        task.after(round_)
    return measure


def measure_once(
    label: str,
    argv: list[str],
    env: dict[str, str],
    output: Path | None = None,
    pipe: list[list[str]] | None = None,
    cwd: Path | None = None,
    finish: Callable[[int], object] | None = None,
    round_: int = 0,
    begin: Callable[[int], object] | None = None,
) -> Measure:
    """Run ``begin``, then ``argv`` (or the pipeline ``pipe``, whose last stage writes ``output``)
    under GNU time, then ``finish``, all inside the timed window. CPU is the client processes'
    (a server started by ``finish`` is not counted). Raises SystemExit when a stage fails."""
    stages = pipe or [argv]
    with tempfile.TemporaryDirectory(prefix="aura-bench-") as scratch:
        reports = [Path(scratch) / f"rss{index}" for index in range(len(stages))]
        errors = [open(Path(scratch) / f"err{index}", "w+b") for index in range(len(stages))]  # noqa: SIM115
        before = os.times()
        started = time.monotonic()
        if begin is not None:
            begin(round_)
        processes = []
        previous = None
        for index, stage in enumerate(stages):
            last = index == len(stages) - 1
            if pipe:
                sink: IO[bytes] | int = open(output, "wb") if last and output else subprocess.PIPE  # noqa: SIM115
            else:
                sink = subprocess.DEVNULL
            timed = [TIME, "--format=%M", f"--output={reports[index]}", "--", *stage]
            processes.append(
                subprocess.Popen(timed, stdin=previous, stdout=sink, stderr=errors[index], env=env, cwd=cwd)
            )
            if previous is not None:
                previous.close()
            previous = processes[-1].stdout
        try:
            for process, error in zip(processes, errors, strict=True):
                if process.wait() != 0:
                    error.seek(0)
                    tail = b"".join(error.readlines()[-20:]).decode(errors="replace")
                    raise SystemExit(f"bench: {label} failed (exit {process.returncode}):\n{tail}")
                error.close()
        except BaseException:  # a failed stage or a signal: leave no process behind
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            raise
        if finish is not None:
            finish(round_)
        wall = time.monotonic() - started
        after = os.times()
        rss = max(int(report.read_text().split()[-1]) for report in reports) / 1024
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return Measure(label, wall, cpu, rss, 0)


ASIDE = Path(".bench-aside")  # the bench points it into its work folder (same file system)
CLEAR_ASIDE = False  # delete what was moved aside after each table (on the bench's own file system)


def move_aside(path: Path, aside: Path | None = None) -> None:
    """Move ``path`` out of the way, to be deleted after the timed runs: on this machine's
    journal-less ext4, creating inodes is several times slower for a minute after a large
    deletion, which would slow whichever tool runs next."""
    folder = aside or ASIDE
    folder.mkdir(exist_ok=True)
    path.rename(folder / f"{len(list(folder.iterdir()))}-{path.name}")


def size_of(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder), each hard-linked inode counted once."""
    if path.is_file():
        return path.stat().st_size
    seen: set[int] = set()
    total = 0
    for item in path.rglob("*"):
        st = item.lstat()
        if item.is_file() and not item.is_symlink() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_size
    return total
