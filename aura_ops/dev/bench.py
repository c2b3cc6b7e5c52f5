"""``make bench``: aura-ops against the raw tools on the same data, printed as ratios.

Generates a pgbench database (``--scale``) plus a TOAST-heavy table, and a file tree of about
20k files / 1 GB, then measures, in one run on a warm page cache: wall time, CPU time of the
client processes (the PostgreSQL server's own CPU is not counted, for either side), output size
and peak RSS of the largest client process. Nothing here is asserted: it prints numbers.

Peak RSS comes from GNU time (``%M``), not from this process's ``wait4``: Python starts a child
with vfork, and Linux records the vforking parent's own high-water RSS in the child's when it
execs, so every tool measured directly would show at least this bench's own peak. GNU time forks
from a process of about 2 MB.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aura_ops.dev.sandbox import PostgresCluster


@dataclass
class Measure:
    label: str
    wall: float
    cpu: float
    rss_mb: float
    size: int


REPEAT = 3
TIME = "/usr/bin/time"  # GNU time (Debian package ``time``; scripts/bootstrap.sh installs it)


def measure(
    label: str,
    argv: list[str],
    env: dict[str, str],
    output: Path | None = None,
    shell_pipe: list[list[str]] | None = None,
    prepare: Callable[[], None] | None = None,
    report_size: bool = True,
) -> Measure:
    """Run ``prepare`` (untimed) then the command, REPEAT times; return the median run."""
    runs = []
    for _ in range(REPEAT):
        if prepare is not None:
            prepare()
        if output is not None and output.exists():
            _move_aside(output)
        os.sync()  # every run starts with nothing dirty to write back
        runs.append(_measure_once(label, argv, env, output, shell_pipe))
    runs.sort(key=lambda m: m.wall)
    chosen = runs[len(runs) // 2]
    if not report_size:  # e.g. a --link-dest tree, whose size is mostly the linked base's
        chosen.size = 0
    print(
        f"  {label}: {', '.join(f'{m.wall:.2f}' for m in runs)} s -> median {chosen.wall:.2f}",
        file=sys.stderr,
        flush=True,
    )
    return chosen


def _measure_once(
    label: str, argv: list[str], env: dict[str, str], output: Path | None, shell_pipe: list[list[str]] | None
) -> Measure:
    stages = shell_pipe or [argv]
    with tempfile.TemporaryDirectory(prefix="aura-bench-") as scratch:
        reports = [Path(scratch) / f"rss{index}" for index in range(len(stages))]
        started = time.monotonic()
        processes = []
        previous = None
        for index, stage in enumerate(stages):
            last = index == len(stages) - 1
            if shell_pipe:
                sink: IO[bytes] | int = open(output, "wb") if last and output else subprocess.PIPE  # noqa: SIM115
            else:
                sink = subprocess.DEVNULL
            timed = [TIME, "--format=%M", f"--output={reports[index]}", "--", *stage]
            processes.append(subprocess.Popen(timed, stdin=previous, stdout=sink, env=env))
            if previous is not None:
                previous.close()
            previous = processes[-1].stdout
        usages = []
        for process in processes:
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise SystemExit(f"bench: {label} failed (exit {process.returncode})")
            usages.append(usage)
        wall = time.monotonic() - started
        rss = max(int(report.read_text().split()[-1]) for report in reports) / 1024
    cpu = sum(u.ru_utime + u.ru_stime for u in usages)
    size = _size(output) if output else 0
    return Measure(label, wall, cpu, rss, size)


ASIDE = Path(".bench-aside")  # run() points it into its work folder (same file system)


def _move_aside(path: Path, aside: Path | None = None) -> None:
    """Move ``path`` out of the way, to be deleted after the timed runs: on this machine's
    journal-less ext4, creating inodes is several times slower for a minute after a large
    deletion, which would slow whichever tool runs next."""
    folder = aside or ASIDE
    folder.mkdir(exist_ok=True)
    path.rename(folder / f"{len(list(folder.iterdir()))}-{path.name}")


def _reset(repo: Path) -> None:
    if repo.exists():
        _move_aside(repo)


def _keep_first_snapshot(repo: Path) -> None:
    """Leave only the oldest snapshot (its folder and its checksum file), so each run is the
    same incremental one; the others are moved aside (``_move_aside``)."""
    snapshots = repo / "snapshots"
    first = min(p.name for p in snapshots.iterdir() if p.is_dir())
    for extra in snapshots.iterdir():
        if extra.name != first and not extra.name.startswith(first + "."):
            _move_aside(extra)


def _size(path: Path) -> int:
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


def make_database(cluster: PostgresCluster, scale: int, toast_mb: int) -> str:
    dsn = cluster.create_database("bench")
    print(f"bench: pgbench -i -s {scale} and a {toast_mb} MB TOAST table", file=sys.stderr)
    subprocess.run(
        [str(cluster.bin / "pgbench"), "-i", "-q", "-s", str(scale), "-d", dsn], check=True, stderr=subprocess.DEVNULL
    )
    rows = toast_mb * 1024 // 8
    cluster.sql(
        "CREATE TABLE documents (id serial PRIMARY KEY, body text);"  # noqa: S608 (ints only)
        "ALTER TABLE documents ALTER body SET STORAGE EXTERNAL;"
        f"INSERT INTO documents (body) SELECT string_agg(md5(g::text || i::text), ' ') "
        f"FROM generate_series(1, {rows}) g, generate_series(1, 240) i GROUP BY g",
        "bench",
    )
    cluster.sql("VACUUM ANALYZE", "bench")
    return dsn


def make_tree(root: Path, small: int = 19_900, large: int = 100, large_mb: int = 8) -> None:
    print(f"bench: file tree of {small + large} files", file=sys.stderr)
    rng = random.Random(42)
    for index in range(small):
        folder = root / f"d{index % 200:03d}" / f"e{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.dat").write_bytes(rng.randbytes(rng.randint(1_000, 20_000)))
    for index in range(large):
        (root / f"big{index:03d}.bin").write_bytes(os.urandom(large_mb * 1_000_000))


def change_one_percent(root: Path) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files[::100]:
        with open(path, "r+b") as handle:
            handle.write(os.urandom(64))


def table(title: str, rows: list[Measure], baseline: Measure) -> None:
    print(f"\n{title}")
    print(f"  {'command':<44} {'wall s':>7} {'x base':>7} {'CPU s':>7} {'size MB':>8} {'RSS MB':>7}")
    for row in rows:
        ratio = row.wall / baseline.wall if baseline.wall else 0
        size = f"{row.size / 1e6:8.1f}" if row.size else f"{'-':>8}"
        print(f"  {row.label:<44} {row.wall:7.2f} {ratio:7.2f} {row.cpu:7.2f} {size} {row.rss_mb:7.1f}")


def run(workdir: Path, scale: int, toast_mb: int) -> None:
    global ASIDE
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    ASIDE = workdir / "aside"  # removed with the work folder at the end
    cluster = PostgresCluster()
    try:
        cluster.start()
        dsn = make_database(cluster, scale, toast_mb)
        size = int(cluster.sql("SELECT pg_database_size('bench')")[0][0])  # type: ignore[call-overload]
        tree = workdir / "tree"
        make_tree(tree)
        (workdir / "aura.yaml").write_text(
            "repository: {path: repo}\n"
            "components:\n"
            "  db: {type: postgres, dsn_env: AURA_DB_DSN, jobs: 2}\n"
            f"  files: {{type: files, path: {tree}}}\n"
        )
        env = {**os.environ, "AURA_DB_DSN": dsn, "AURA_CONFIG": str(workdir / "aura.yaml")}
        aura = [sys.executable, "-m", "aura_ops"]
        pg = cluster.bin
        out = workdir / "out"
        out.mkdir()

        db_rows = [
            measure("pg_dump -Fc", [str(pg / "pg_dump"), "-Fc", "-f", str(out / "c.dump"), dsn], env, out / "c.dump"),
            measure(
                "pg_dump -Fd -j2",
                [str(pg / "pg_dump"), "-Fd", "-j2", "-f", str(out / "d.dump"), dsn],
                env,
                out / "d.dump",
            ),
            measure(
                "pg_dump -Fp | zstd -T2 -3",
                [],
                env,
                out / "p.sql.zst",
                shell_pipe=[[str(pg / "pg_dump"), "-Fp", dsn], ["zstd", "-q", "-T2", "-3", "-c"]],
            ),
            measure(
                "aura-ops backup --component db",
                [*aura, "backup", "--component", "db"],
                env,
                workdir / "repo" / "snapshots",
                prepare=lambda: _reset(workdir / "repo"),
            ),
        ]
        table(f"DB backup ({size / 1e9:.2f} GB database, scale {scale})", db_rows, db_rows[0])

        def fresh(name: str, create: bool) -> Callable[[], None]:
            def prepare() -> None:
                cluster.sql(f"DROP DATABASE IF EXISTS {name}")
                if create:
                    cluster.sql(f"CREATE DATABASE {name}")

            return prepare

        restore_rows = [
            measure(
                "pg_restore -j2 (from -Fd)",
                [str(pg / "pg_restore"), "-j2", "-d", cluster.dsn("r1"), str(out / "d.dump")],
                env,
                prepare=fresh("r1", create=True),
            ),
            measure(
                "aura-ops restore --to-database",
                [*aura, "restore", "latest", "--component", "db", "--to-database", "r3"],
                env,
                prepare=fresh("r3", create=False),
            ),
        ]
        table("DB restore", restore_rows, restore_rows[0])
        rollback_paths(cluster, workdir, env)

        files_rows = [
            measure("rsync -a", ["rsync", "-a", f"{tree}/", str(out / "rsync1")], env, out / "rsync1"),
            measure(
                "aura-ops backup --component files",
                [*aura, "backup", "--component", "files"],
                env,
                prepare=lambda: _reset(workdir / "repo"),
            ),
        ]
        subprocess.run(["rsync", "-a", f"{tree}/", str(out / "base")], check=True)
        change_one_percent(tree)
        files_rows += [
            measure(
                "rsync -a --delete --link-dest",
                ["rsync", "-a", "--delete", f"--link-dest={out / 'base'}", f"{tree}/", str(out / "rsync2")],
                env,
                out / "rsync2",
                report_size=False,
            ),
            measure(
                "aura-ops backup --component files",
                [*aura, "backup", "--component", "files"],
                env,
                prepare=lambda: _keep_first_snapshot(workdir / "repo"),
            ),
        ]
        table("Files, first snapshot (vs rsync -a)", files_rows[:2], files_rows[0])
        table("Files, 1% of them changed (vs rsync --link-dest)", files_rows[2:], files_rows[2])
        _versions(pg)
    finally:
        cluster.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def _timed(action: Callable[[], object], prepare: Callable[[], object]) -> float:
    """Median wall time of REPEAT runs of ``action``, each after an untimed ``prepare``."""
    times = []
    for _ in range(REPEAT):
        prepare()
        started = time.monotonic()
        action()
        times.append(time.monotonic() - started)
    times.sort()
    return times[len(times) // 2]


def rollback_paths(cluster: PostgresCluster, workdir: Path, env: dict[str, str]) -> None:
    """Time to put the database back when a deploy rolls back after its migration: swapping in
    the clone taken after the services stopped (fast path) against restoring the run's snapshot
    (pg_restore into a new database, then the same swap), on the same database; and the fast
    path again on a database a tenth the size, to show it does not grow with the data."""
    from aura_ops import config as config_module
    from aura_ops import logs
    from aura_ops.components.postgres import PostgresComponent
    from aura_ops.components.postgres import clone as pgclone
    from aura_ops.hosts import LocalHost
    from aura_ops.workflows import snapshots

    logs.configure(None, "warning", sys.stderr, pretty=False)
    os.environ["AURA_DB_DSN"] = env["AURA_DB_DSN"]
    config = config_module.load(workdir / "aura.yaml")
    cfg = config.components["db"]
    assert isinstance(cfg, config_module.PostgresConfig)
    snapshot = snapshots.repository(config).snapshots()[-1].id
    migrate = "UPDATE pgbench_branches SET bbalance = bbalance + 1"  # the damage a bad deploy did
    small = cluster.create_database("bench_small")
    subprocess.run(
        [str(cluster.bin / "pgbench"), "-i", "-q", "-s", "7", "-d", small], check=True, stderr=subprocess.DEVNULL
    )
    small_cfg = config_module.PostgresConfig.model_validate({"type": "postgres", "dsn": small})

    def fast_path(name: str, db_cfg: config_module.PostgresConfig) -> tuple[float, float, float]:
        """Medians of: making the clone, swapping it back (the database is back), and dropping the
        migrated copy it replaced (a deploy does that after the services are up again)."""
        runs = []
        for _ in range(REPEAT):
            db = PostgresComponent("db", db_cfg, LocalHost())
            made = pgclone.create(db, "bench-run", wait=10)
            cluster.sql(migrate, name)
            started = time.monotonic()
            done = pgclone.swap_back(db, "bench-run")
            swapped = time.monotonic()
            pgclone.drop_replaced(db, "bench-run")
            assert done is not None
            runs.append((float(made["seconds"]), swapped - started, time.monotonic() - swapped))
        clone, swap, drop = (sorted(column)[len(column) // 2] for column in zip(*runs, strict=True))
        return clone, swap, drop

    clone, swap, drop = fast_path("bench", cfg)
    clone_small, swap_small, drop_small = fast_path("bench_small", small_cfg)
    slow = _timed(
        lambda: snapshots.restore(config, snapshot, ["db"]),
        lambda: cluster.sql(migrate, "bench"),
    )
    sizes = {
        name: int(cluster.sql(f"SELECT pg_database_size('{name}')")[0][0])  # type: ignore[call-overload]
        for name in ("bench", "bench_small")
    }
    print(f"\nRollback: time to put the database back after a migration (median of {REPEAT})")
    print(f"  {'path':<62} {'wall s':>7} {'x slow':>7}")
    big, little = sizes["bench"] / 1e9, sizes["bench_small"] / 1e9
    rows = [
        (f"restore the snapshot (pg_restore -j2, swap), {big:.2f} GB", slow),
        (f"fast path, {big:.2f} GB: swap the clone back", swap),
        (f"fast path, {little:.2f} GB: swap the clone back", swap_small),
    ]
    for label, seconds in rows:
        print(f"  {label:<62} {seconds:7.3f} {seconds / slow:7.3f}")
    print(
        f"  paid while the services are stopped: the clone, {clone:.2f} s at {big:.2f} GB, "
        f"{clone_small:.2f} s at {little:.2f} GB (CREATE DATABASE ... STRATEGY FILE_COPY)\n"
        f"  paid after the services are up again: dropping the migrated copy, {drop:.2f} s at {big:.2f} GB, "
        f"{drop_small:.2f} s at {little:.2f} GB"
    )


def _versions(pg: Path) -> None:
    pg_dump = subprocess.run([str(pg / "pg_dump"), "--version"], capture_output=True, text=True).stdout.strip()
    rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout
    print(
        f"\n{os.cpu_count()} cores; {pg_dump}; {rsync.splitlines()[0]}; "
        f"Python {sys.version.split()[0]}; peak RSS is the largest client process "
        f"(GNU time's %M; {resource.getpagesize()} B pages)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is about 1.1 GB)")
    parser.add_argument("--toast-mb", type=int, default=200, help="size of the TOAST-heavy table")
    parser.add_argument("--dir", type=Path, default=Path(".bench"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median shown)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    run(args.dir.absolute(), args.scale, args.toast_mb)


if __name__ == "__main__":
    main()
