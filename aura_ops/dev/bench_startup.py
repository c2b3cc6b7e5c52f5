"""The start-up table of ``make bench``: what a short command costs, beside the floor of a Python
process and the raw tools.

Three groups, each measured in alternated rounds (at least ``MIN_ROUNDS``, median kept):

- ``aura-ops --help`` beside ``python -c pass`` (the floor: the interpreter and its site
  packages) and ``rsync --version``;
- a backup of a files component with nothing changed (a tree of ``TREE_FILES`` small files,
  each run a new sealed snapshot of hard links against the previous one) beside
  ``rsync -a --link-dest`` of the same tree against its previous copy;
- ``aura-ops snapshots list`` (and ``--json``) on a repository of ``SNAPSHOTS`` snapshots (fewer
  in quick mode, said in the title), against the goal in seconds: the snapshots are real backups
  of a tiny tree, taken in this process through the workflow API (about 20 ms each), so every one
  verifies. restic has no such figure here: a restic repository of as many snapshots takes one
  ``restic backup`` process each (about 0.3-0.5 s apiece), minutes for the comparison alone.

aura-ops runs here with its bytecode compiled (``PYTHONPYCACHEPREFIX`` in the work folder, filled
by an untimed first run), as a package installed by pip has it: with ``PYTHONDONTWRITEBYTECODE=1``
and no ``__pycache__`` beside the sources, every run compiles every module it imports first.
Works in a small folder of its own on the host's file system (no file system of its own needed).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from aura_ops.dev.bench_data import make_tree
from aura_ops.dev.bench_measure import Argv, Measure, measure_once

AURA = [sys.executable, "-m", "aura_ops"]
MIN_ROUNDS = 7
TREE_FILES = 200
SNAPSHOTS = 1_000
QUICK_SNAPSHOTS = 200
TABLE = "startup"
# the goals of issue 12, by label (seconds)
GOALS = {
    "aura-ops --help": 0.1,
    "aura-ops backup --component files": 0.4,
    "aura-ops snapshots list": 0.5,
    "aura-ops snapshots list --json": 0.5,
}
FLOORS = {"help": "python -c pass", "backup": "rsync -a --link-dest"}


def compiled_env(env: Mapping[str, str], cache: Path) -> dict[str, str]:
    """``env`` for an aura-ops run with its bytecode cached in ``cache`` (written by the first
    run, read by the next), whatever ``PYTHONDONTWRITEBYTECODE`` says in the caller's environment."""
    compiled = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    compiled["PYTHONPYCACHEPREFIX"] = str(cache)
    return compiled


def _config(path: Path, repository: Path, tree: Path, env: Mapping[str, str]) -> dict[str, str]:
    path.write_text(f"repository: {{path: {repository}}}\ncomponents:\n  files: {{type: files, path: {tree}}}\n")
    return {**env, "AURA_CONFIG": str(path)}


def _take_snapshots(config_path: Path, count: int) -> None:
    """``count`` real backups of the configured files component, in this process (the workflow
    API, as the CLI calls it, with the CLI's umask)."""
    from aura_ops import config as config_module
    from aura_ops import logs
    from aura_ops.hosts import remember_user_umask, user_umask
    from aura_ops.hosts.inventory import Inventory
    from aura_ops.workflows import snapshots

    logs.configure(None, "warning", sys.stderr, pretty=False)
    remembered = user_umask()
    previous = os.umask(0o077)
    remember_user_umask(previous)
    try:
        config = config_module.load(config_path)
        hosts = Inventory(config)
        for _ in range(count):
            snapshots.backup(config, ["files"], hosts=hosts)
    finally:
        os.umask(previous)
        remember_user_umask(remembered)


Timed = tuple[str, Argv, dict[str, str]]  # label, argv (or the round's argv), environment


def _rounds(tasks: list[Timed], rounds: int, scale: str) -> list[Measure]:
    """Each task once a round, the order rotated each round; every task's median run (its
    CPU: the median of the runs' CPU)."""
    runs: dict[str, list[Measure]] = {label: [] for label, _, _ in tasks}
    for round_ in range(rounds):
        shift = round_ % len(tasks)
        for label, argv, env in tasks[shift:] + tasks[:shift]:
            runs[label].append(measure_once(label, argv(round_) if callable(argv) else argv, env))
    figures = []
    for label, _, _ in tasks:
        measured = sorted(runs[label], key=lambda m: m.wall)
        median = measured[len(measured) // 2]
        median.runs = [m.wall for m in runs[label]]
        median.cpu = statistics.median(m.cpu for m in runs[label])
        median.tool, median.table, median.scale = label.split()[0], TABLE, scale
        walls = ", ".join(f"{wall:.3f}" for wall in median.runs)
        print(f"  {label} [{scale}]: {walls} s -> median {median.wall:.3f}", file=sys.stderr, flush=True)
        figures.append(median)
    return figures


def measure(work: Path, quick: bool, repeat: int) -> list[Measure]:
    """Measure the three groups in ``work`` (created here; the caller removes it)."""
    work.mkdir(parents=True)
    rounds = max(MIN_ROUNDS, repeat)
    env = compiled_env(os.environ, work / "pycache")
    plain = dict(os.environ)
    figures = []

    help_tasks: list[Timed] = [
        ("python -c pass", [sys.executable, "-c", "pass"], env),
        ("aura-ops --help", [*AURA, "--help"], env),
        ("rsync --version", ["rsync", "--version"], plain),
    ]
    subprocess.run([*AURA, "--help"], env=env, check=True, stdout=subprocess.DEVNULL)  # compiles, untimed
    figures += _rounds(help_tasks, rounds, "--help")

    tree = work / "tree"
    make_tree(tree, TREE_FILES, max_small=4_000)
    backup_env = _config(work / "aura-backup.yaml", work / "repo-backup", tree, env)
    backup = [*AURA, "backup", "--component", "files"]
    subprocess.run(backup, env=backup_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    copies = work / "rsync"
    copies.mkdir()
    subprocess.run(["rsync", "-a", f"{tree}/", str(copies / "first")], check=True)

    def rsync_round(round_: int) -> list[str]:  # a new copy each round, linked against the previous one
        previous = copies / ("first" if round_ == 0 else f"copy-{round_ - 1}")
        return ["rsync", "-a", "--delete", f"--link-dest={previous}", f"{tree}/", str(copies / f"copy-{round_}")]

    backup_tasks: list[Timed] = [
        ("rsync -a --link-dest", rsync_round, plain),
        ("aura-ops backup --component files", backup, backup_env),
    ]
    figures += _rounds(backup_tasks, rounds, f"{TREE_FILES} files, unchanged")

    count = QUICK_SNAPSHOTS if quick else SNAPSHOTS
    tiny = work / "tiny"
    tiny.mkdir()
    for index in range(3):
        (tiny / f"f{index}").write_text(f"file {index}\n")
    list_config = work / "aura-list.yaml"
    list_env = _config(list_config, work / "repo-list", tiny, env)
    print(f"bench: {count} snapshots of a tiny tree, in process", file=sys.stderr, flush=True)
    _take_snapshots(list_config, count)
    listing = [*AURA, "snapshots", "list"]
    subprocess.run(listing, env=list_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    list_tasks: list[Timed] = [
        ("aura-ops snapshots list", listing, list_env),
        ("aura-ops snapshots list --json", [*listing, "--json"], list_env),
    ]
    figures += _rounds(list_tasks, rounds, f"{count:,} snapshots")
    return figures


def print_table(figures: list[Measure]) -> None:
    """The start-up table (nothing when the run measured none): wall and CPU in seconds, each
    group's ratio to its floor, and the goal each aura-ops figure is held against."""
    rows = [f for f in figures if f.table == TABLE]
    if not rows:
        return
    rounds = len(rows[0].runs)
    print(f"\nStart-up (median of {rounds} alternated runs; aura-ops with its bytecode compiled)")
    print(f"  {'command':<36} {'scale':<20} {'wall s':>7} {'x base':>7} {'CPU s':>7} {'RSS MB':>7}  goal")
    for row in rows:
        group = "help" if row.scale == "--help" else "backup" if "unchanged" in row.scale else ""
        base = next((f for f in rows if f.scale == row.scale and f.label == FLOORS.get(group)), None)
        ratio = f"{row.wall / base.wall:7.2f}" if base is not None and base.wall else f"{'-':>7}"
        goal = GOALS.get(row.label)
        verdict = "" if goal is None else f"< {goal:.1f} s: {'met' if row.wall < goal else 'NOT met'}"
        print(f"  {row.label:<36} {row.scale:<20} {row.wall:7.3f} {ratio} {row.cpu:7.3f} {row.rss_mb:7.1f}  {verdict}")
    print(
        "  (x base: wall / python -c pass's for --help, / rsync --link-dest's for the backup; "
        "restic snapshots not measured: building its repository takes a process per snapshot)"
    )
