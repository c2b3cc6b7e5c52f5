"""PostgreSQL component: consistent, parallel, zstd-compressed dumps and streaming restores.

Backup: a REPEATABLE READ transaction exports its snapshot; ``pg_dump -Fd -Z0 -j N
--snapshot=<id>`` dumps exactly that snapshot while the same transaction records per-table row
counts (and, if asked, content checksums), so the manifest describes exactly the dumped data.
Each table's data file is compressed with zstd as soon as pg_dump reports it finished, hashed as
it is written. ``pg_dumpall --globals-only`` keeps roles and tablespaces.

Restore: ``pg_restore -j N`` reads a staging folder of named pipes, one per data file, each fed
by a decompressing thread when pg_restore opens it: parallel, streaming, and with no
uncompressed copy on disk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import os
import re
import secrets as pysecrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from aura_ops import checksum, faults, logs, secrets
from aura_ops.config import PostgresConfig
from aura_ops.errors import (
    AuraError,
    ConfigError,
    ToolMissing,
    UnreachableError,
    UsageError,
    VerificationError,
    first_line,
)
from aura_ops.host import Command, Host
from aura_ops.repository import Snapshot

DUMP = "dump"
GLOBALS = "globals.sql"
COMPRESSED = ".zst"
F_SETPIPE_SZ = 1031  # Linux fcntl
PIPE_BYTES = 1 << 20
FINISHED_ITEM = re.compile(r"finished item (\d+) ")

# conninfo keyword -> libpq environment variable: the credentials reach tools via env, not argv.
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
}
NOT_TRANSIENT = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "authentication failed",
    "permission denied",
)


# ---------------------------------------------------------------- connection


@dataclass(frozen=True)
class Connection:
    """Connection parameters of one database; ``password`` is registered as a secret."""

    params: dict[str, str]
    attempts: int = 3
    timeout: int = 10

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or os.environ.get("USER", "")

    @property
    def where(self) -> str:
        host = self.params.get("host") or self.params.get("hostaddr") or "local socket"
        return f"{host}:{self.params.get('port', '5432')}"

    def with_db(self, dbname: str) -> Connection:
        return Connection({**self.params, "dbname": dbname}, self.attempts, self.timeout)

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **self.params)

    def env(self) -> dict[str, str]:
        return {LIBPQ_ENV[k]: v for k, v in self.params.items() if k in LIBPQ_ENV and v}


def connection(name: str, cfg: PostgresConfig) -> Connection:
    """Resolve the component's DSN and password from env or file; ConfigError when missing."""
    from psycopg import conninfo

    what = f"component {name}"
    dsn = secrets.from_env(cfg.dsn_env, what) if cfg.dsn_env else (cfg.dsn or "")
    try:
        params = {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items()}
    except Exception:
        raise ConfigError(f"{what}: the DSN cannot be parsed") from None
    secrets.register(params.get("password"))
    if cfg.password_env:
        params["password"] = secrets.from_env(cfg.password_env, what)
    elif cfg.password_file:
        params["password"] = secrets.from_file(cfg.password_file, what)
    return Connection(params, cfg.connect_attempts, cfg.connect_timeout)


def connect(conn: Connection, autocommit: bool = False) -> Any:
    """A psycopg connection; transient failures retried with backoff, then UnreachableError."""
    import psycopg
    import tenacity

    log = logs.get()

    def transient(exc: BaseException) -> bool:
        text = str(exc)
        return isinstance(exc, psycopg.OperationalError) and not any(marker in text for marker in NOT_TRANSIENT)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        log.warning(
            "postgres.connect_retry",
            database=conn.dbname,
            where=conn.where,
            attempt=f"{state.attempt_number}/{conn.attempts}",
            error=secrets.mask(first_line(exc) if state.outcome and (exc := state.outcome.exception()) else ""),
        )

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(conn.attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8),
            retry=tenacity.retry_if_exception(transient),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return psycopg.connect(
                    conn.conninfo(), connect_timeout=conn.timeout, application_name="aura-ops", autocommit=autocommit
                )
    except psycopg.OperationalError as exc:
        lines = str(exc).strip().splitlines()
        reason = secrets.mask(lines[-1] if lines else "connection failed")
        if not transient(exc):
            raise ConfigError(f"database {conn.dbname} at {conn.where}: {reason}") from None
        raise UnreachableError(
            f"database {conn.dbname} at {conn.where} unreachable after {conn.attempts} attempts: {reason}"
        ) from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- commands (pure)


def tool(cfg: PostgresConfig | None, program: str) -> str:
    if cfg is not None and cfg.bin_dir is not None:
        return str(cfg.bin_dir / program)
    return program


def make_pg_dump(cfg: PostgresConfig, conn: Connection, out_dir: Path, snapshot_id: str, jobs: int) -> Command:
    argv = (
        tool(cfg, "pg_dump"),
        "--format=directory",
        "--compress=0",
        f"--jobs={jobs}",
        f"--snapshot={snapshot_id}",
        "--no-sync",
        "--verbose",
        f"--file={out_dir}",
        f"--dbname={conn.dbname}",
    )
    return Command(argv, conn.env())


def make_pg_dumpall_globals(cfg: PostgresConfig, conn: Connection, out_file: Path, superuser: bool) -> Command:
    argv = [tool(cfg, "pg_dumpall"), "--globals-only", f"--file={out_file}", f"--database={conn.dbname}"]
    if not superuser:
        argv.append("--no-role-passwords")  # reading pg_authid needs superuser
    return Command(tuple(argv), conn.env())


def make_pg_restore(
    cfg: PostgresConfig | None, conn: Connection, dump_dir: Path, jobs: int, clean: bool = False
) -> Command:
    argv = [
        tool(cfg, "pg_restore"),
        "--format=directory",
        f"--jobs={jobs}",
        "--exit-on-error",
        f"--dbname={conn.dbname}",
    ]
    if clean:
        argv += ["--clean", "--if-exists"]
    return Command((*argv, str(dump_dir)), conn.env())


def make_psql_file(cfg: PostgresConfig | None, conn: Connection, sql_file: Path) -> Command:
    return Command((tool(cfg, "psql"), "-X", "-q", f"--dbname={conn.dbname}", "-f", str(sql_file)), conn.env())


def tool_major(host: Host, program: str) -> tuple[int, str]:
    """(major version, full version line) of a PostgreSQL client program."""
    text = host.run(Command((program, "--version"))).text.strip()
    match = re.search(r"\) (\d+)(?:\.(\d+))?", text)
    if not match:
        raise ToolMissing(f"{program}: cannot read its version from {text!r}")
    return int(match.group(1)), text


def default_jobs(cfg: PostgresConfig) -> int:
    return cfg.jobs or os.cpu_count() or 2


# ---------------------------------------------------------------- facts (row counts etc.)

TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND (c.relkind = 'r' OR c.relispopulated)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def database_facts(db: Any, with_checksums: bool) -> dict[str, Any]:
    """Per-table row counts (and content checksums), sequence values, large objects."""
    from psycopg import sql

    counts: dict[str, int] = {}
    sums: dict[str, str] = {}
    for schema, table, _kind in db.execute(TABLES_SQL).fetchall():
        key = f"{schema}.{table}"
        ident = sql.Identifier(schema, table)
        if with_checksums:
            query = sql.SQL(
                "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text FROM {} t"
            ).format(ident)
            counts[key], sums[key] = db.execute(query).fetchone()
        else:
            counts[key] = db.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
    sequences = {
        f"{s}.{n}": v
        for s, n, v in db.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
    }
    facts: dict[str, Any] = {
        "row_counts": counts,
        "sequences": sequences,
        "large_objects": db.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0],
    }
    if with_checksums:
        facts["table_checksums"] = sums
        facts["large_object_checksum"] = db.execute(
            "SELECT coalesce(sum(hashtextextended(oid::text || md5(lo_get(oid)), 0)::numeric),"
            " 0)::text FROM pg_largeobject_metadata"
        ).fetchone()[0]
    return facts


def server_facts(db: Any) -> dict[str, Any]:
    row = db.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " pg_database_size(current_database()), rolsuper, pg_encoding_to_char(encoding),"
        " datcollate, datctype, current_database()"
        " FROM pg_roles r, pg_database d"
        " WHERE r.rolname = current_user AND d.datname = current_database()"
    ).fetchone()
    return {
        "server_version": row[0],
        "server_major": row[1] // 10000,
        "database_size": row[2],
        "superuser": row[3],
        "encoding": row[4],
        "collate": row[5],
        "ctype": row[6],
        "database": row[7],
    }


# ---------------------------------------------------------------- compression

DATA_FILE = re.compile(r"^(\d+|blob_\d+)\.dat$")


class _Compressor:
    """Compresses dump data files with zstd while pg_dump is still writing them.

    A watcher finds each new ``N.dat``; a follower thread compresses it as it grows (reading
    from the page cache what pg_dump just wrote) and finishes once pg_dump reports the item
    finished (or exits). The output is hashed as it is written; the plain file is then removed.
    """

    def __init__(self, folder: Path, level: int) -> None:
        self.folder = folder
        self.level = level
        self.finished: set[str] = set()
        self.exited = threading.Event()
        self.abort = threading.Event()
        self.results: dict[str, dict[str, Any]] = {}
        self.errors: list[BaseException] = []
        self.followers: dict[str, threading.Thread] = {}
        self.lock = threading.Lock()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def item_finished(self, dump_id: str) -> None:
        with self.lock:
            self.finished.add(f"{dump_id}.dat")

    def _watch(self) -> None:
        while not self.abort.is_set():
            last_pass = self.exited.is_set()
            self._discover()
            if last_pass:
                return
            self.exited.wait(0.02)

    def _discover(self) -> None:
        try:
            names = [e.name for e in os.scandir(self.folder) if DATA_FILE.match(e.name)]
        except FileNotFoundError:  # pg_dump has not created the folder yet
            return
        for name in names:
            if name not in self.followers:
                thread = threading.Thread(target=self._follow, args=(name,), daemon=True)
                self.followers[name] = thread
                thread.start()

    def _done_writing(self, name: str) -> bool:
        with self.lock:
            return name in self.finished or self.exited.is_set()

    def _follow(self, name: str) -> None:
        import zstandard

        source = self.folder / name
        target = source.with_name(name + COMPRESSED)
        try:
            with open(source, "rb", buffering=0) as reader, open(target, "xb") as raw:
                writer = checksum.HashingWriter(raw)
                compressor = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
                stream = compressor.stream_writer(cast(IO[bytes], writer), closefd=False)
                read = 0
                while not self.abort.is_set():
                    done = self._done_writing(name)  # checked before reading: no bytes missed
                    chunk = reader.read(checksum.CHUNK)
                    if chunk:
                        stream.write(chunk)
                        read += len(chunk)
                    elif done:
                        break
                    else:
                        time.sleep(0.01)
                stream.close()  # type: ignore[no-untyped-call]
            os.unlink(source)
            with self.lock:
                self.results[name + COMPRESSED] = {"size": writer.size, "hash": writer.hexdigest(), "raw_size": read}
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            with self.lock:
                self.errors.append(exc)

    def finish(self, succeeded: bool) -> dict[str, dict[str, Any]]:
        """After pg_dump exited: compress what is left, wait, return artifacts by file name."""
        if not succeeded:
            self.abort.set()
        self.exited.set()
        self.watcher.join()
        for thread in list(self.followers.values()):
            thread.join()
        if self.errors:
            raise self.errors[0]
        return dict(self.results)


def _hash_plain(path: Path) -> dict[str, Any]:
    digest, size = checksum.file_digest(path)
    return {"size": size, "hash": digest}


# ---------------------------------------------------------------- snapshot


def _check_versions(host: Host, cfg: PostgresConfig, server_major: int) -> str:
    major, version = tool_major(host, tool(cfg, "pg_dump"))
    if major < server_major:
        raise ToolMissing(
            f"pg_dump {major} is older than the server ({server_major}); install "
            f"postgresql-client-{server_major} or set bin_dir"
        )
    return version


def snapshot(host: Host, name: str, cfg: PostgresConfig, dest: Path, previous: Snapshot | None) -> dict[str, Any]:
    """Dump the database into ``dest``; return the manifest entry (facts and artifacts)."""
    conn = connection(name, cfg)
    jobs = default_jobs(cfg)
    dump_dir = dest / DUMP
    artifacts: dict[str, dict[str, Any]] = {}
    db = connect(conn)
    try:
        facts = server_facts(db)
        facts["database_properties"] = _database_properties(db, facts["database"])
        db.rollback()
        pg_dump_version = _check_versions(host, cfg, facts["server_major"])
        db.isolation_level = _repeatable_read()
        db.read_only = True
        snapshot_id = db.execute("SELECT pg_export_snapshot()").fetchone()[0]
        if cfg.globals:
            host.run(make_pg_dumpall_globals(cfg, conn, dest / GLOBALS, facts["superuser"]))
            artifacts[GLOBALS] = _hash_plain(dest / GLOBALS)
        compressor = _Compressor(dump_dir, cfg.compression_level)
        started = time.monotonic()
        succeeded = False
        try:
            process = host.start(make_pg_dump(cfg, conn, dump_dir, snapshot_id, jobs), stdout=None)
            process.drain_in_background(lambda line: _on_pg_dump_line(line, compressor))
            try:
                facts.update(database_facts(db, cfg.checksums))
            except BaseException:
                process.kill()
                raise
            process.wait()
            succeeded = True
        finally:
            data = compressor.finish(succeeded)
        db.rollback()  # the exported snapshot may end now: pg_dump has finished with it
        dump_seconds = time.monotonic() - started
    finally:
        db.close()
    for plain in ("toc.dat", "blobs.toc"):
        if (dump_dir / plain).exists():
            artifacts[f"{DUMP}/{plain}"] = _hash_plain(dump_dir / plain)
    artifacts.update({f"{DUMP}/{file}": info for file, info in data.items()})
    raw = sum(info.get("raw_size", info["size"]) for info in artifacts.values())
    logs.get().info(
        "postgres.snapshot",
        database=facts["database"],
        seconds=round(dump_seconds, 2),
        tables=len(facts["row_counts"]),
        raw_bytes=raw,
    )
    return {
        "type": "postgres",
        **{k: v for k, v in facts.items() if k != "superuser"},
        "where": conn.where,
        "pg_dump_version": pg_dump_version,
        "jobs": jobs,
        "compression": f"zstd:{cfg.compression_level}",
        "uncompressed_bytes": raw,
        "globals": GLOBALS if cfg.globals else None,
        "artifacts": artifacts,
    }


def _database_properties(db: Any, dbname: str) -> dict[str, Any] | None:
    """Owner, connection limit, comment, grants, settings: recreated with the database when
    it no longer exists at restore time (``pgdatabase.read_properties``)."""
    from aura_ops.components import pgdatabase

    return pgdatabase.read_properties(db, dbname)


def _repeatable_read() -> Any:
    from psycopg import IsolationLevel

    return IsolationLevel.REPEATABLE_READ


def _on_pg_dump_line(line: str, compressor: _Compressor) -> None:
    match = FINISHED_ITEM.search(line)
    if match:
        compressor.item_finished(match.group(1))


# ---------------------------------------------------------------- restore (streaming)


class _Feeder:
    """Feeds each named pipe of a staging folder with its decompressed file once a reader
    opens it; checks every compressed stream against its recorded hash."""

    def __init__(self, pipes: dict[Path, tuple[Path, str]], workers: int, algorithm: str) -> None:
        self.pending = dict(pipes)
        self.algorithm = algorithm
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self.futures: list[concurrent.futures.Future[None]] = []
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.pending and not self.stop.is_set():
            for pipe in list(self.pending):
                try:
                    fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                        self.errors.append(f"{pipe.name}: {exc.strerror}")
                        self.pending.pop(pipe)
                    continue
                os.set_blocking(fd, True)
                with contextlib.suppress(OSError):  # fewer wake-ups than the default 64 KiB
                    fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
                self.futures.append(self.pool.submit(self._feed, fd, *self.pending.pop(pipe)))
            self.stop.wait(0.005)

    def _feed(self, fd: int, source: Path, expected: str) -> None:
        import zstandard

        hasher = checksum.new(self.algorithm)
        try:
            with open(source, "rb") as raw, os.fdopen(fd, "wb") as out:
                reader = _HashingReader(raw, hasher)
                zstandard.ZstdDecompressor().copy_stream(
                    cast(IO[bytes], reader), out, read_size=checksum.CHUNK, write_size=checksum.CHUNK
                )
        except BrokenPipeError:
            self.errors.append(f"pg_restore stopped reading {source.name}")
            return
        except (zstandard.ZstdError, OSError) as exc:
            self.errors.append(f"{source}: {exc}")
            return
        if hasher.hexdigest() != expected:
            self.errors.append(f"{source}: checksum mismatch")

    def __enter__(self) -> _Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _HashingReader:
    def __init__(self, raw: IO[bytes], hasher: Any) -> None:
        self.raw = raw
        self.hasher = hasher

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hasher.update(data)
        return data


@contextlib.contextmanager
def _staging(snapshot: Snapshot, name: str, workers: int) -> Iterator[tuple[Path, _Feeder]]:
    """A folder pg_restore can read: toc files copied, a named pipe per compressed data file."""
    entry = snapshot.manifest["components"][name]
    dump_dir = snapshot.component_dir(name) / DUMP
    staging = Path(tempfile.mkdtemp(prefix="aura-restore-"))
    try:
        pipes: dict[Path, tuple[Path, str]] = {}
        for artifact, info in entry["artifacts"].items():
            if not artifact.startswith(DUMP + "/"):
                continue
            file = artifact.split("/", 1)[1]
            if file.endswith(COMPRESSED):
                pipe = staging / file[: -len(COMPRESSED)]
                os.mkfifo(pipe, 0o600)
                pipes[pipe] = (dump_dir / file, info["hash"])
            else:
                shutil.copyfile(dump_dir / file, staging / file)
        algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
        with _Feeder(pipes, workers, algorithm) as feeder:
            yield staging, feeder
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_restore(
    host: Host,
    cfg: PostgresConfig | None,
    snapshot: Snapshot,
    name: str,
    conn: Connection,
    jobs: int,
    clean: bool = False,
) -> float:
    started = time.monotonic()
    with _staging(snapshot, name, jobs + 2) as (staging, feeder):
        try:
            host.run(make_pg_restore(cfg, conn, staging, jobs, clean=clean), stdout=None)
        finally:
            feeder.stop.set()
        if feeder.errors:
            raise VerificationError(f"{name}: {feeder.errors[0]}")
    return time.monotonic() - started


def _create_database(admin: Any, dbname: str, entry: dict[str, Any]) -> None:
    from psycopg import sql

    admin.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(dbname),
            sql.Literal(entry.get("encoding", "UTF8")),
            sql.Literal(entry.get("collate", "C")),
            sql.Literal(entry.get("ctype", "C")),
        )
    )


def _drop_database(admin: Any, dbname: str) -> None:
    """Drop ``dbname`` if it exists (subscriptions first: ``pgdatabase.drop_database``)."""
    from aura_ops.components import pgdatabase

    pgdatabase.drop_database(admin, dbname)


def _rename_database(admin: Any, old: str, new: str) -> None:
    from psycopg import sql

    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _database_exists(admin: Any, dbname: str) -> bool:
    return bool(admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone())


def compare_facts(name: str, recorded: dict[str, Any], actual: dict[str, Any]) -> None:
    """VerificationError naming the first table whose count or checksum differs."""
    for key in ("row_counts", "table_checksums"):
        want, got = recorded.get(key), actual.get(key)
        if want is None or got is None:
            continue
        for table in sorted(set(want) | set(got)):
            if want.get(table) != got.get(table):
                raise VerificationError(
                    f"{name}: {key.replace('_', ' ')[:-1]} of {table} is "
                    f"{got.get(table)}, the snapshot recorded {want.get(table)}"
                )
    for key in ("large_objects", "large_object_checksum", "sequences"):
        if key in recorded and key in actual and recorded[key] != actual[key]:
            raise VerificationError(f"{name}: {key.replace('_', ' ')} differ from the snapshot")


def restore(
    host: Host,
    name: str,
    cfg: PostgresConfig,
    snapshot: Snapshot,
    to_database: str | None,
    with_globals: bool = False,
    replace: bool = True,
    globals_overwrite: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Restore into ``to_database`` or, when None, in place of the original. The database is
    built beside its target and put in its place atomically (``pgdatabase.put_in_place``); a
    target that does not exist is created with the snapshot's database-level properties. With
    ``cfg.restore_in_place == "clean"`` an existing live database is restored into with
    ``pg_restore --clean --if-exists`` instead. ``replace`` False: UsageError when the target
    holds data (the caller has no consent to replace it). ``with_globals``: roles and
    tablespaces first (``pgglobals``; ``globals_overwrite`` also changes existing ones).
    ``dry_run``: judge the target and the globals, change nothing."""
    from aura_ops.components import pgdatabase, pgglobals

    entry = snapshot.manifest["components"][name]
    conn = connection(name, cfg)
    admin_conn = conn.with_db(cfg.maintenance_db)
    jobs = default_jobs(cfg)
    report: dict[str, Any] = {}
    with contextlib.closing(connect(admin_conn, autocommit=True)) as admin:
        target = pgdatabase.inspect_target(admin, conn, cfg, to_database)
        report["database"] = target.database
        if target.replaces and not replace and not dry_run:
            raise UsageError(f"{name}: the restore would {target.describe()}, which was not confirmed; nothing changed")
        if (with_globals or globals_overwrite) and entry.get("globals"):
            script = (snapshot.component_dir(name) / entry["globals"]).read_text()
            report["globals"] = pgglobals.apply(admin, script, overwrite=globals_overwrite, dry_run=dry_run)
            report["notes"] = pgglobals.summary(report["globals"])
        if dry_run:
            return {**report, "dry_run": True, "changes": [f"{target.describe()} from snapshot {snapshot.id}"]}
        if target.live and target.exists and cfg.restore_in_place == "clean":
            seconds = _run_restore(host, cfg, snapshot, name, conn, jobs, clean=True)
            return {**report, "mode": "clean", "restore_seconds": round(seconds, 2)}
        check = None
        if target.live or target.exists:  # what takes a name in use (or the live one) is checked first
            check = lambda built: _check_restored(conn.with_db(built), name, entry)  # noqa: E731
        seconds = pgdatabase.put_in_place(
            admin_conn,
            admin,
            name,
            target,
            entry,
            lambda built: _run_restore(host, cfg, snapshot, name, conn.with_db(built), jobs),
            check,
        )
    mode = "swap" if target.exists else ("created" if target.live else "new")
    return {**report, "mode": mode, "restore_seconds": round(seconds, 2)}


def restore_target(name: str, cfg: PostgresConfig, to_database: str | None) -> Any:
    """Where a restore of component ``name`` would go and what is there (read-only): a
    ``pgdatabase.Target``; UsageError for a target that must not be used."""
    from aura_ops.components import pgdatabase

    conn = connection(name, cfg)
    with contextlib.closing(connect(conn.with_db(cfg.maintenance_db), autocommit=True)) as admin:
        return pgdatabase.inspect_target(admin, conn, cfg, to_database)


def _check_restored(conn: Connection, name: str, entry: dict[str, Any]) -> None:
    with contextlib.closing(connect(conn)) as db:
        compare_facts(name, entry, database_facts(db, "table_checksums" in entry))


def copy_database_settings(admin: Any, source: str, target: str) -> None:
    """Give ``target`` the catalog-level properties of ``source`` (``pgdatabase.copy_properties``)."""
    from aura_ops.components import pgdatabase

    pgdatabase.copy_properties(admin, source, target)


# ---------------------------------------------------------------- verify


def verify(host: Host, name: str, cfg: PostgresConfig | None, snapshot: Snapshot, deep: bool) -> dict[str, Any]:
    """``pg_restore --list`` must parse; ``deep``: restore to a scratch database and compare."""
    dump_dir = snapshot.component_dir(name) / DUMP
    listing = host.run(Command((tool(cfg, "pg_restore"), "--list", str(dump_dir))))
    report: dict[str, Any] = {
        "toc_entries": sum(1 for line in listing.text.splitlines() if line and not line.startswith(";"))
    }
    if not deep:
        return report
    if cfg is None:
        raise UsageError(f"component {name} is not in the configuration: cannot deep-verify")
    from aura_ops.components import pgdatabase

    entry = snapshot.manifest["components"][name]
    conn = connection(name, cfg)
    scratch = f"aura_verify_{pysecrets.token_hex(4)}"
    with (
        contextlib.closing(connect(conn.with_db(cfg.maintenance_db), autocommit=True)) as admin,
        pgdatabase.temporary_database(admin, name, scratch),  # journaled before it exists, dropped after
    ):
        _create_database(admin, scratch, entry)
        faults.point("verify:after-create")
        seconds = _run_restore(host, cfg, snapshot, name, conn.with_db(scratch), default_jobs(cfg))
        _check_restored(conn.with_db(scratch), name, entry)
    report.update(
        {
            "restore_seconds": round(seconds, 2),
            "tables_compared": len(entry.get("row_counts", {})),
            "checksums_compared": "table_checksums" in entry,
        }
    )
    return report


# ---------------------------------------------------------------- doctor


def doctor(host: Host, name: str, cfg: PostgresConfig) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    versions: dict[str, int] = {}
    for program in ("pg_dump", "pg_restore", "pg_dumpall", "psql"):
        try:
            major, text = tool_major(host, tool(cfg, program))
            versions[program] = major
            checks.append({"check": f"{name}: {program}", "ok": True, "detail": text})
        except AuraError as exc:
            checks.append({"check": f"{name}: {program}", "ok": False, "detail": str(exc), "exit_code": 2})
    try:
        conn = connection(name, cfg)
        with contextlib.closing(connect(conn)) as db:
            facts = server_facts(db)
        checks.append(
            {
                "check": f"{name}: database {conn.dbname} at {conn.where}",
                "ok": True,
                "detail": f"PostgreSQL {facts['server_version']}, {facts['database_size'] / 1e6:.1f} MB",
            }
        )
        dump_major = versions.get("pg_dump")
        if dump_major is not None:
            ok = dump_major >= facts["server_major"]
            checks.append(
                {
                    "check": f"{name}: pg_dump not older than server",
                    "ok": ok,
                    "detail": f"pg_dump {dump_major}, server {facts['server_major']}",
                    "exit_code": 2,
                }
            )
    except AuraError as exc:
        checks.append({"check": f"{name}: database", "ok": False, "detail": str(exc), "exit_code": exc.exit_code})
    return checks
