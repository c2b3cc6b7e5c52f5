"""``make bench``: aura-ops against the raw tools and the tools users would pick instead, on the
same data in the same run, printed as ratios and written as JSON.

Data: a pgbench database (``--scale``) plus a TOAST-heavy table; databases of 100 and 600 small
tables (two indexes and a foreign key each); file trees of 20,000 files (1 GB) and 200,000 small
files (``--tree-rounds``, default 1). Everything happens on a file system of the bench's own
(``bench_scratch``), unless ``--on-host``. Tools: pg_dump/pg_restore and pgBackRest for the
databases, rsync, restic and borg for the file trees, and aura-ops (see ``bench_peers`` for how
each peer is set up). Each figure is the
median of ``--repeat`` runs, the tools of a table alternating round after round (paired runs), on
a warm page cache with ``sync`` before each run: wall time, CPU time of the client processes (the
PostgreSQL server's own CPU is not counted, for any tool), output size and peak RSS of the
largest client process. Nothing here is asserted: it prints numbers, and writes them to
``bench-results/<UTC time>.json`` for ``python -m aura_ops.dev.bench compare``.

``--quick`` runs the same tables on small data (meant for under 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aura_ops.dev import bench_measure, bench_results, bench_startup
from aura_ops.dev.bench_data import change_one_percent, make_database, make_many_tables, make_tree
from aura_ops.dev.bench_measure import Measure, Task, move_aside, paired, size_of
from aura_ops.dev.bench_peers import Borg, PgBackRest, Restic, borg_encryption, version
from aura_ops.dev.bench_scratch import Scratch
from aura_ops.dev.sandbox import PostgresCluster, pg_bin_dir

REPEAT = 3
PART = "all"  # or "db", "files" or "startup" (--part, while working on one of them)
AURA = [sys.executable, "-m", "aura_ops"]


@dataclass(frozen=True)
class Plan:
    """The data of one bench mode."""

    mode: str
    scale: int  # pgbench scale of the main database
    toast_mb: int
    tree: tuple[int, int, int]  # small files, large files, MB per large file
    trees: tuple[int, ...]  # file counts of the small-file trees of the scale table
    tree_rounds: int  # rounds for those trees (at most --repeat): 200,000 files take minutes per tool
    tables: tuple[int, ...]  # table counts of the many-table databases
    disk_gb: int  # size of the bench's own file system (a sparse image)


FULL = Plan("full", 70, 200, (19_900, 100, 8), (200_000,), 1, (100, 600), 40)
QUICK = Plan("quick", 3, 20, (990, 10, 2), (5_000,), 1, (100,), 8)

# per table: the baseline its ratios are against
BASELINES = {
    "db-backup": "pg_dump -Fc",
    "db-restore": "createdb + pg_restore -j2 (from -Fd)",
    "files-first": "rsync -a",
    "files-1%": "rsync -a --delete --link-dest",
    "files-restore": "rsync -a (from the last copy)",
}


def _aura_config(path: Path, repository: Path, component: str) -> dict[str, str]:
    """Write an aura.yaml with one component and return the environment that selects it, with
    aura-ops' bytecode cached beside it (as an installed package has it), whatever
    ``PYTHONDONTWRITEBYTECODE`` says here: each run would otherwise compile what it imports."""
    path.write_text(f"repository: {{path: {repository}}}\ncomponents:\n  {component}\n")
    return {**bench_startup.compiled_env(os.environ, path.parent / "pycache"), "AURA_CONFIG": str(path)}


def _pg_config(work: Path, name: str, dsn: str, bin_dir: Path) -> dict[str, str]:
    """aura-ops' config for database ``name``, running the same PostgreSQL binaries as the raw
    tools it is compared with (Debian's /usr/bin/pg_dump is a Perl wrapper: 0.1 s a call)."""
    env = _aura_config(
        work / f"aura-{name}.yaml",
        work / f"repo-{name}",
        f"db: {{type: postgres, dsn_env: AURA_DB_DSN, jobs: 2, bin_dir: {bin_dir}}}",
    )
    return {**env, "AURA_DB_DSN": dsn}


def _no_database(cluster: PostgresCluster, name: str) -> Callable[[int], None]:
    def prepare(_round: int) -> None:
        cluster.sql(f'DROP DATABASE IF EXISTS "{name}"')

    return prepare


def _createdb(cluster: PostgresCluster, name: str) -> Callable[[int], None]:
    """``createdb name`` with the cluster's own binary: what a user restoring into a new
    database runs before pg_restore, and what aura-ops does inside its restore."""

    def begin(_round: int) -> None:
        argv = [str(cluster.bin / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", name]
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench: createdb {name} failed (exit {done.returncode}):\n{done.stderr.strip()}")

    return begin


def _reset(path: Path) -> Callable[[int], None]:
    def prepare(_round: int) -> None:
        if path.exists():
            move_aside(path)

    return prepare


def db_tables(
    cluster: PostgresCluster, pgbr: PgBackRest, work: Path, name: str, scale: str, full: bool, figures: list[Measure]
) -> None:
    """Backup and restore of database ``name`` by pg_dump/pg_restore, aura-ops and pgBackRest
    (``full``: also ``-Fc`` and the zstd pipe). Restores go into new databases (pgBackRest: a new
    cluster on its own port)."""
    dsn = cluster.dsn(name)
    env = _pg_config(work, name, dsn, cluster.bin)
    pg = cluster.bin
    out = work / f"out-{name}"
    out.mkdir()
    repo = work / f"repo-{name}"
    backups = [
        Task(
            "pg_dump -Fd -j2",
            "pg_dump",
            [str(pg / "pg_dump"), "-Fd", "-j2", "-f", str(out / "d.dump"), dsn],
            env,
            out / "d.dump",
        ),
        Task(
            "aura-ops backup --component db",
            "aura-ops",
            [*AURA, "backup", "--component", "db"],
            env,
            repo / "snapshots",
            prepare=_reset(repo),
        ),
        Task("pgBackRest backup (full)", "pgbackrest", pgbr.backup(), env, size=pgbr.backup_size),
    ]
    if full:
        backups[:0] = [
            Task(
                "pg_dump -Fc",
                "pg_dump",
                [str(pg / "pg_dump"), "-Fc", "-f", str(out / "c.dump"), dsn],
                env,
                out / "c.dump",
            ),
        ]
        backups.insert(
            2,
            Task(
                "pg_dump -Fp | zstd -T2 -3",
                "pg_dump+zstd",
                [],
                env,
                out / "p.sql.zst",
                pipe=[[str(pg / "pg_dump"), "-Fp", dsn], ["zstd", "-q", "-T2", "-3", "-c"]],
            ),
        )
    pgbr.archiving(True)
    figures += paired(backups, REPEAT, "db-backup", scale)
    pgbr.archiving(False)
    restores = [
        Task(
            BASELINES["db-restore"],
            "pg_restore",
            [str(pg / "pg_restore"), "-j2", "-d", cluster.dsn(f"{name}_r1"), str(out / "d.dump")],
            env,
            prepare=_no_database(cluster, f"{name}_r1"),
            begin=_createdb(cluster, f"{name}_r1"),
            report_size=False,
        ),
        Task(
            "aura-ops restore --to-database",
            "aura-ops",
            [*AURA, "restore", "latest", "--component", "db", "--to-database", f"{name}_r3"],
            env,
            prepare=_no_database(cluster, f"{name}_r3"),
            report_size=False,
        ),
        Task(
            "pgBackRest restore, until writable",
            "pgbackrest",
            pgbr.restore,
            env,
            prepare=pgbr.prepare_restore,
            finish=lambda round_: pgbr.start_restored(round_, name),
            after=pgbr.stop_restored,
            report_size=False,
        ),
    ]
    figures += paired(restores, REPEAT, "db-restore", scale)
    for copy in (f"{name}_r1", f"{name}_r3"):
        cluster.sql(f'DROP DATABASE IF EXISTS "{copy}"')


def file_tables(
    tree: Path, work: Path, tag: str, scale: str, tools: tuple[Restic, Borg], rounds: int, figures: list[Measure]
) -> None:
    """First snapshot, 1% incremental and restore of ``tree`` by rsync, aura-ops, restic and borg.
    Each round of the first snapshot starts from a new repository; the incremental rounds each
    change another 1% first and back up against the previous round's snapshot (rsync: its copy)."""
    restic, borg = tools
    out = work / f"out-{tag}"
    out.mkdir()
    repo = work / f"repo-{tag}"
    env = _aura_config(work / f"aura-{tag}.yaml", repo, f"files: {{type: files, path: {tree}}}")
    restic_repo, borg_repo = restic.root / tag, borg.root / tag
    first = [
        Task("rsync -a", "rsync", ["rsync", "-a", f"{tree}/", str(out / "rsync-first")], env, out / "rsync-first"),
        Task(
            "aura-ops backup --component files",
            "aura-ops",
            [*AURA, "backup", "--component", "files"],
            env,
            prepare=_reset(repo),
            size=lambda _r: size_of(repo / "snapshots"),
        ),
        Task(
            "restic backup",
            "restic",
            Restic.backup(restic_repo, tree),
            restic.env,
            prepare=lambda _r: restic.init(restic_repo),
            size=lambda _r: size_of(restic_repo),
        ),
        Task(
            "borg create",
            "borg",
            Borg.create(borg_repo, "first"),
            borg.env,
            cwd=tree,
            prepare=lambda _r: borg.init(borg_repo),
            size=lambda _r: size_of(borg_repo),
        ),
    ]
    figures += paired(first, rounds, "files-first", scale)

    def rsync_copy(round_: int) -> Path:
        return out / ("rsync-first" if round_ < 0 else f"rsync-inc-{round_}")

    incremental = [
        Task(
            "rsync -a --delete --link-dest",
            "rsync",
            lambda r: ["rsync", "-a", "--delete", f"--link-dest={rsync_copy(r - 1)}", f"{tree}/", str(rsync_copy(r))],
            env,
            rsync_copy,
            report_size=False,
        ),
        Task(
            "aura-ops backup --component files",
            "aura-ops",
            [*AURA, "backup", "--component", "files"],
            env,
            report_size=False,
        ),
        Task("restic backup", "restic", Restic.backup(restic_repo, tree), restic.env, report_size=False),
        Task(
            "borg create", "borg", lambda r: Borg.create(borg_repo, f"inc-{r}"), borg.env, cwd=tree, report_size=False
        ),
    ]
    figures += paired(incremental, rounds, "files-1%", scale, before_round=lambda r: change_one_percent(tree, r))
    last = rounds - 1
    restore = [
        Task(
            "rsync -a (from the last copy)",
            "rsync",
            ["rsync", "-a", f"{rsync_copy(last)}/", str(out / "r-rsync")],
            env,
            out / "r-rsync",
            report_size=False,
        ),
        Task(
            "aura-ops restore --to-path",
            "aura-ops",
            [*AURA, "restore", "latest", "--component", "files", "--to-path", str(out / "r-aura")],
            env,
            out / "r-aura",
            report_size=False,
        ),
        Task(
            "restic restore",
            "restic",
            Restic.restore(restic_repo, out / "r-restic"),
            restic.env,
            out / "r-restic",
            report_size=False,
        ),
        Task(
            "borg extract",
            "borg",
            Borg.extract(borg_repo, f"inc-{last}"),
            borg.env,
            out / "r-borg",
            cwd=out / "r-borg",
            prepare=lambda _r: (out / "r-borg").mkdir(),
            report_size=False,
        ),
    ]
    figures += paired(restore, rounds, "files-restore", scale)


def _cluster(work: Path, name: str) -> tuple[PostgresCluster, PgBackRest]:
    cluster = PostgresCluster(root=work / f"pg-{name}")
    cluster.start()
    return cluster, PgBackRest(work / f"pgbackrest-{name}", cluster, name)


def run(workdir: Path, plan: Plan, results: Path, on_host: bool) -> None:
    """Measure everything in ``workdir`` (its own file system unless ``on_host``), print the
    tables, write the JSON results into ``results``; leave nothing behind."""
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if on_host or PART == "startup":  # the start-up table alone needs no file system of its own
        if workdir.exists():  # a run that did not finish: moved aside now, deleted at the end
            workdir.rename(workdir.with_name(f"{workdir.name}-old-{stamp}"))
        workdir.mkdir(parents=True)
        _measure_all(workdir, plan, results, stamp, started)
        return
    with Scratch(workdir, plan.disk_gb):
        bench_measure.CLEAR_ASIDE = True
        _measure_all(workdir, plan, results, stamp, started)
    workdir.rmdir()


def _measure_all(workdir: Path, plan: Plan, results: Path, stamp: str, started: float) -> None:
    """Measure, clean up, then print and write what was measured: after a failure or a stop too
    (the results file then says ``partial``)."""
    bench_measure.ASIDE = workdir / "aside"  # removed with the work folder at the end
    clusters: list[tuple[PostgresCluster, PgBackRest]] = []
    figures: list[Measure] = []
    partial = ""
    try:
        if PART in ("all", "startup"):
            figures += bench_startup.measure(workdir / "startup", plan.mode == "quick", REPEAT)
        if PART in ("all", "db"):
            database_part(workdir, plan, clusters, figures)
        if PART in ("all", "files"):
            files_part(workdir, plan, figures)
    except BaseException as error:
        partial = f"stopped: {type(error).__name__} {str(error)[:200]}".strip()
        raise
    finally:
        duration = time.monotonic() - started
        cleanup = time.monotonic()
        for cluster, pgbr in clusters:
            pgbr.stop_all()
            cluster.stop()
        if not bench_measure.CLEAR_ASIDE:  # on the host: the file system of the work folder is not ours
            shutil.rmtree(workdir, ignore_errors=True)
            for old in workdir.parent.glob(f"{workdir.name}-old-*"):
                shutil.rmtree(old, ignore_errors=True)
        print(f"bench: cleaned up in {time.monotonic() - cleanup:.0f} s", file=sys.stderr)
        if figures:
            _report(figures, plan, results, stamp, duration, partial)


def _report(figures: list[Measure], plan: Plan, results: Path, stamp: str, duration: float, partial: str) -> None:
    versions = _versions()
    _print_all(figures, plan, versions, duration)
    meta: dict[str, object] = {"started": stamp, "mode": plan.mode, "repeat": REPEAT, "duration_s": round(duration, 1)}
    if partial:
        meta["partial"] = partial
        print(f"\nPARTIAL RESULTS ({partial})")
    written = bench_results.write(figures, {**meta, "versions": versions, "plan": plan.__dict__}, results)
    print(f"\nresults: {written} (compare with an earlier run: make bench-compare)", flush=True)


def database_part(
    work: Path, plan: Plan, clusters: list[tuple[PostgresCluster, PgBackRest]], figures: list[Measure]
) -> None:
    """The pgbench database (backup, restore, rollback paths), then the many-table databases
    (backup and restore), each in its own cluster with its own pgBackRest stanza."""
    cluster, pgbr = _cluster(work, "main")
    clusters.append((cluster, pgbr))
    make_database(cluster, plan.scale, plan.toast_mb)
    pgbr.setup()
    scale = f"pgbench s{plan.scale}"
    db_tables(cluster, pgbr, work, "bench", scale, True, figures)
    figures += rollback_paths(cluster, pgbr, work, scale)
    cluster.stop()
    for count in plan.tables:
        name = f"t{count}"
        cluster, pgbr = _cluster(work, name)
        clusters.append((cluster, pgbr))
        make_many_tables(cluster, name, count)
        pgbr.setup()
        db_tables(cluster, pgbr, work, name, f"{count} tables", False, figures)
        cluster.stop()


def files_part(work: Path, plan: Plan, figures: list[Measure]) -> None:
    restic = Restic(work / "restic", dict(os.environ))
    borg = Borg(work / "borg", dict(os.environ))
    small, large, large_mb = plan.tree
    tree = work / "tree"
    make_tree(tree, small, large, large_mb)
    file_tables(tree, work, "files", f"{small + large:,} files", (restic, borg), REPEAT, figures)
    for count in plan.trees:
        tree = work / f"tree-{count}"
        make_tree(tree, count, max_small=4_000)
        rounds = min(REPEAT, plan.tree_rounds)
        file_tables(tree, work, f"files-{count}", f"{count:,} files", (restic, borg), rounds, figures)


def _timed(action: Callable[[], object], prepare: Callable[[], object]) -> tuple[float, list[float]]:
    """Median wall time of REPEAT runs of ``action``, each after an untimed ``prepare``; and all runs."""
    times = []
    for _ in range(REPEAT):
        prepare()
        started = time.monotonic()
        action()
        times.append(time.monotonic() - started)
    return sorted(times)[len(times) // 2], times


def rollback_paths(cluster: PostgresCluster, pgbr: PgBackRest, workdir: Path, scale: str) -> list[Measure]:
    """Time to put the database back when a deploy rolls back after its migration: swapping in
    the clone taken after the services stopped (fast path) against restoring the run's snapshot
    (pg_restore into a new database, then the same swap), on the same database; the fast path
    again on a database a tenth the size, to show it does not grow with the data; and
    pgBackRest's way (stop the server, ``restore --delta`` of the cluster, start, wait)."""
    from aura_ops import config as config_module
    from aura_ops import logs
    from aura_ops.components.postgres import PostgresComponent
    from aura_ops.components.postgres import clone as pgclone
    from aura_ops.hosts import LocalHost
    from aura_ops.workflows import snapshots

    logs.configure(None, "warning", sys.stderr, pretty=False)
    os.environ["AURA_DB_DSN"] = cluster.dsn("bench")
    config = config_module.load(workdir / "aura-bench.yaml")
    cfg = config.components["db"]
    assert isinstance(cfg, config_module.PostgresConfig)
    snapshot = snapshots.repository(config).snapshots()[-1].id
    migrate = "UPDATE pgbench_branches SET bbalance = bbalance + 1"  # the damage a bad deploy did
    small = cluster.create_database("bench_small")
    subprocess.run(
        [str(cluster.bin / "pgbench"), "-i", "-q", "-s", str(max(1, cluster_scale(cluster) // 10)), "-d", small],
        check=True,
        stderr=subprocess.DEVNULL,
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
    sizes = {
        name: int(cluster.sql(f"SELECT pg_database_size('{name}')")[0][0])  # type: ignore[call-overload]
        for name in ("bench", "bench_small")
    }
    clone_small, swap_small, drop_small = fast_path("bench_small", small_cfg)
    slow, slow_runs = _timed(
        lambda: snapshots.restore(config, snapshot, ["db"]),
        lambda: cluster.sql(migrate, "bench"),
    )
    cluster.sql("DROP DATABASE bench_small")  # not in pgBackRest's backup: its restore would delete it
    pgbr.archiving(True)
    delta, delta_runs = _timed(lambda: pgbr.rollback_delta("bench"), lambda: cluster.sql(migrate, "bench"))
    print(f"\nRollback: time to put the database back after a migration (median of {REPEAT})")
    print(f"  {'path':<62} {'wall s':>7} {'x slow':>7}")
    big, little = sizes["bench"] / 1e9, sizes["bench_small"] / 1e9
    rows = [
        (f"restore the snapshot (pg_restore -j2, swap), {big:.2f} GB", slow, slow_runs),
        (f"fast path, {big:.2f} GB: swap the clone back", swap, []),
        (f"fast path, {little:.2f} GB: swap the clone back", swap_small, []),
        ("pgBackRest: stop, restore --delta, start, until writable", delta, delta_runs),
    ]
    for label, seconds, _ in rows:
        print(f"  {label:<62} {seconds:7.3f} {seconds / slow:7.3f}")
    print(
        f"  paid while the services are stopped: the clone, {clone:.2f} s at {big:.2f} GB, "
        f"{clone_small:.2f} s at {little:.2f} GB (CREATE DATABASE ... STRATEGY FILE_COPY)\n"
        f"  paid after the services are up again: dropping the migrated copy, {drop:.2f} s at {big:.2f} GB, "
        f"{drop_small:.2f} s at {little:.2f} GB\n"
        "  pgBackRest restores the whole cluster (here: the bench database and the empty system ones)"
    )
    labels = [
        "restore the snapshot",
        "fast path: swap the clone back",
        "fast path, a tenth: swap the clone back",
        "pgBackRest restore --delta",
    ]
    tools = ["aura-ops", "aura-ops", "aura-ops", "pgbackrest"]
    return [
        Measure(label, seconds, 0.0, 0.0, 0, tool, "rollback", scale, runs or [seconds])
        for label, tool, (_, seconds, runs) in zip(labels, tools, rows, strict=True)
    ]


def cluster_scale(cluster: PostgresCluster) -> int:
    """The pgbench scale of the ``bench`` database (its number of branches)."""
    count = cluster.sql("SELECT count(*) FROM pgbench_branches", "bench")[0][0]
    assert isinstance(count, int)
    return count


def _versions() -> dict[str, str]:
    bin_dir = pg_bin_dir() or Path("/usr/bin")
    return {
        "cores": f"{os.cpu_count()} cores",
        "pg_dump": version([str(bin_dir / "pg_dump"), "--version"]),
        "rsync": version(["rsync", "--version"]),
        "restic": version(["restic", "version"]),
        "borg": f"{version(['borg', '--version'])} ({borg_encryption()})",
        "pgbackrest": version(["pgbackrest", "version"]),
        "zstd": version(["zstd", "--version"]),
        "python": f"Python {sys.version.split()[0]}",
    }


def _print_all(figures: list[Measure], plan: Plan, versions: dict[str, str], duration: float) -> None:
    def pick(name: str, scale: str) -> list[Measure]:
        return [f for f in figures if f.table == name and f.scale == scale]

    def base(rows: list[Measure], name: str) -> Measure:
        return next(f for f in rows if f.label == BASELINES[name])

    main = f"pgbench s{plan.scale}"
    tree = f"{sum(plan.tree[:2]):,} files"
    titles = {
        "db-backup": f"DB backup (pgbench scale {plan.scale} + {plan.toast_mb} MB TOAST table)",
        "db-restore": "DB restore (pgBackRest: the whole cluster, until it answers outside recovery)",
        "files-first": f"Files, first snapshot ({tree})",
        "files-1%": f"Files, 1% of them changed ({tree})",
        "files-restore": f"Files, restore ({tree})",
    }
    bench_startup.print_table(figures)
    for name, title in titles.items():
        rows = pick(name, main if name.startswith("db") else tree)
        if not rows:  # --part
            continue
        table_title = f"{title}, vs {BASELINES[name]}"
        bench_results.table(table_title, rows, base(rows, name))
    scale_baselines = {"db-backup": "pg_dump -Fd -j2", "db-restore": BASELINES["db-restore"]}
    bench_results.scale_table("Scale: databases", figures, ["db-backup", "db-restore"], scale_baselines)
    files = {name: BASELINES[name] for name in ("files-first", "files-1%", "files-restore")}
    bench_results.scale_table("Scale: file trees", figures, list(files), files)
    line = "; ".join(versions.values())
    print(
        f"\n{line}; peak RSS is the largest client process (GNU time's %M; {resource.getpagesize()} B pages)"
        f"\n{plan.mode} run, {REPEAT} alternated rounds per table "
        f"({min(REPEAT, plan.tree_rounds)} for the trees of {', '.join(f'{n:,}' for n in plan.trees)} files): "
        f"{duration / 60:.1f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    compare = commands.add_parser("compare", help="print each figure of NEW as a ratio of OLD's")
    compare.add_argument("old", nargs="?", type=Path)
    compare.add_argument("new", nargs="?", type=Path)
    compare.add_argument("--results", type=Path, default=bench_results.RESULTS)
    parser.add_argument("--quick", action="store_true", help="small data, under 5 minutes")
    parser.add_argument("--scale", type=int, help="pgbench scale (full: 70, about 1.1 GB; quick: 3)")
    parser.add_argument("--toast-mb", type=int, help="size of the TOAST-heavy table (full: 200; quick: 20)")
    parser.add_argument("--dir", type=Path, default=Path(".bench"))
    parser.add_argument("--results", type=Path, default=bench_results.RESULTS, help="folder of the JSON results")
    parser.add_argument("--repeat", type=int, default=3, help="alternated rounds per table (median shown)")
    parser.add_argument("--tree-rounds", type=int, help="rounds for the scale table's trees (full: 1; quick: 1)")
    parts = ("all", "db", "files", "startup")
    parser.add_argument("--part", choices=parts, default="all", help="measure only these tables")
    parser.add_argument(
        "--on-host", action="store_true", help="work in --dir on the host's file system, not on one of its own"
    )
    args = parser.parse_args()
    # a stopped bench (kill PID) still stops its servers and unmounts its file system
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.command == "compare":
        if (args.old is None) != (args.new is None):
            parser.error("compare takes no files (the two newest) or both OLD and NEW")
        sys.exit(bench_results.compare(args.old, args.new, args.results))
    global REPEAT, PART
    REPEAT, PART = max(1, args.repeat), args.part
    plan = QUICK if args.quick else FULL
    overrides = {"scale": args.scale, "toast_mb": args.toast_mb, "tree_rounds": args.tree_rounds}
    plan = Plan(**{**plan.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    run(args.dir.absolute(), plan, args.results, args.on_host)


if __name__ == "__main__":
    main()
