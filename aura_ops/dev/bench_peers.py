"""The tools a user would pick instead of aura-ops, set up as their documentation recommends, for
``make bench``: restic and borg for file trees, pgBackRest for a PostgreSQL cluster.

- restic 0.14: ``restic init`` (repository format 2, compression ``auto``, the default), the
  password from ``RESTIC_PASSWORD``, its cache in the bench's work folder.
- borg 1.2: ``borg init --encryption repokey`` or ``repokey-blake2``, "depending on which is
  faster on your client machines" (``borg init --help``): repokey's SHA-256 when the CPU has SHA
  instructions, else BLAKE2b; default compression (lz4); the passphrase from
  ``BORG_PASSPHRASE``; archives made from inside the tree (relative paths), extracted in the
  target folder.
- pgBackRest 2.45: a stanza on the cluster, ``archive_mode=on`` with
  ``archive_command = 'pgbackrest ... archive-push %p'``, ``process-max=2``,
  ``compress-type=zst`` ("recommended because it is much faster and provides compression similar
  to gz", its configuration reference), ``start-fast=y``; full backups; a restore is
  ``--type=immediate --target-action=promote`` (consistent at the end of the backup, then
  read-write), timed until the restored server answers a query outside recovery.
All run as the ``postgres`` OS user where they touch the cluster, and everything binds 127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from aura_ops.dev.bench_measure import move_aside, size_of
from aura_ops.dev.sandbox import PostgresCluster, free_port

PASSWORD = "bench-only-passphrase"  # noqa: S105 (a throwaway repository's)


def version(argv: list[str]) -> str:
    """First line of a tool's version output, or ``missing``."""
    if shutil.which(argv[0]) is None:
        return "missing"
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0].strip("* ")


class Restic:
    """restic repositories under ``root``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(root / "cache")}

    def init(self, repo: Path) -> None:
        if repo.exists():
            move_aside(repo)
        subprocess.run(["restic", "-r", str(repo), "init", "--quiet"], env=self.env, check=True)

    @staticmethod
    def backup(repo: Path, tree: Path) -> list[str]:
        return ["restic", "-r", str(repo), "backup", "--quiet", str(tree)]

    @staticmethod
    def restore(repo: Path, target: Path) -> list[str]:
        return ["restic", "-r", str(repo), "restore", "latest", "--quiet", "--target", str(target)]


class Borg:
    """borg repositories under ``root``; its config, keys and caches in ``root/home``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "BORG_PASSPHRASE": PASSWORD, "BORG_BASE_DIR": str(root / "home")}
        self.encryption = borg_encryption()

    def init(self, repo: Path) -> None:
        if repo.exists():
            move_aside(repo)
        subprocess.run(
            ["borg", "init", f"--encryption={self.encryption}", str(repo)],
            env=self.env,
            check=True,
            capture_output=True,
        )

    @staticmethod
    def create(repo: Path, archive: str) -> list[str]:
        """Run in the tree (``cwd``): the archive holds paths relative to it."""
        return ["borg", "create", f"{repo}::{archive}", "."]

    @staticmethod
    def extract(repo: Path, archive: str) -> list[str]:
        """Run in the target folder (``cwd``)."""
        return ["borg", "extract", f"{repo}::{archive}"]


def borg_encryption() -> str:
    """``repokey`` (SHA-256) when the CPU has SHA instructions, else ``repokey-blake2``."""
    try:
        sha = " sha_ni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        sha = False
    return "repokey" if sha else "repokey-blake2"


AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def server_options(port: int, socket_dir: Path) -> str:
    """The sandbox cluster's server options (see ``PostgresCluster.start``), on ``port``."""
    return (
        f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c full_page_writes=off -c max_connections=50"
    )


class PgBackRest:
    """A pgBackRest stanza on ``cluster``: repository, logs and restored clusters under ``root``
    (owned by the postgres user, which runs every pgBackRest command)."""

    def __init__(self, root: Path, cluster: PostgresCluster, stanza: str = "bench") -> None:
        self.root, self.cluster, self.stanza = root, cluster, stanza
        self.config = root / "pgbackrest.conf"
        self.repo = root / "repo"
        self.socket_dir = root / "socket"
        self.restored: dict[int, tuple[Path, int]] = {}
        for folder in (root, self.repo, root / "log", root / "lock", self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.repo}\n"
            "repo1-retention-full=9\n"
            "process-max=2\n"
            "compress-type=zst\n"
            "start-fast=y\n"
            f"log-path={root / 'log'}\n"
            f"lock-path={root / 'lock'}\n"
            "log-level-console=warn\n\n"
            f"[{stanza}]\n"
            f"pg1-path={cluster.data}\n"
            f"pg1-port={cluster.port}\n"
            f"pg1-socket-path={cluster.socket_dir}\n"
            "pg1-user=postgres\n"
        )
        _chown_postgres(root)

    def command(self, *args: str) -> list[str]:
        return [*AS_POSTGRES, "pgbackrest", f"--config={self.config}", f"--stanza={self.stanza}", *args]

    def setup(self) -> None:
        """Turn WAL archiving on (a restart: ``archive_mode`` needs one) and create the stanza."""
        push = " ".join(self.command("archive-push", "%p")[len(AS_POSTGRES) :])
        self.cluster.sql("ALTER SYSTEM SET archive_mode = on")
        self.cluster.sql(f"ALTER SYSTEM SET archive_command = '{push}'")
        _pg_ctl(self.cluster, "restart", "-m", "fast")
        subprocess.run(self.command("stanza-create"), check=True, stdout=subprocess.DEVNULL)

    def archiving(self, on: bool) -> None:
        """Point ``archive_command`` at pgBackRest (``on``) or at ``/bin/true``: without pgBackRest
        a user would not archive WAL, so the raw tools' and aura-ops' restores into this cluster
        do not pay for it (``archive_mode`` itself needs a restart to change)."""
        push = " ".join(self.command("archive-push", "%p")[len(AS_POSTGRES) :]) if on else "/bin/true"
        self.cluster.sql(f"ALTER SYSTEM SET archive_command = '{push}'")
        self.cluster.sql("SELECT pg_reload_conf()")

    def backup(self) -> list[str]:
        return self.command("--type=full", "backup")

    def backup_size(self, _round: int = 0) -> int:
        """Bytes of the newest full backup in the repository."""
        backups = sorted(p for p in (self.repo / "backup" / self.stanza).glob("*F") if p.is_dir())
        return size_of(backups[-1]) if backups else 0

    def prepare_restore(self, round_: int) -> None:
        """An empty data folder (owned by postgres, mode 0700) and a free port for round ``round_``."""
        data = self.root / f"restored-{round_}"
        if data.exists():
            move_aside(data)
        data.mkdir(mode=0o700)
        _chown_postgres(data)
        self.restored[round_] = (data, free_port())

    def restore(self, round_: int) -> list[str]:
        data, _ = self.restored[round_]
        return self.command(
            f"--pg1-path={data}", "--type=immediate", "--target-action=promote", "--archive-mode=off", "restore"
        )

    def start_restored(self, round_: int, database: str) -> None:
        """Start the cluster restored in round ``round_`` on its own 127.0.0.1 port and wait until
        ``database`` answers outside recovery."""
        data, port = self.restored[round_]
        options = server_options(port, self.socket_dir) + " -c archive_mode=off"
        _pg_ctl_at(data, "start", "-o", options, "-l", str(self.root / f"restored-{round_}.log"))
        wait_writable(port, database)

    def stop_restored(self, round_: int) -> None:
        data, _ = self.restored[round_]
        _pg_ctl_at(data, "stop", "-m", "fast")

    def stop_all(self) -> None:
        """Stop every restored cluster still running (after a failed run); errors are ignored."""
        for data, _ in self.restored.values():
            if (data / "postmaster.pid").exists():
                subprocess.run(
                    [*AS_POSTGRES, str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                    check=False,
                    capture_output=True,
                )

    def rollback_delta(self, database: str) -> None:
        """Put the cluster back as the newest backup had it, pgBackRest's way: stop the server,
        ``restore --delta`` over its data folder, start it, wait until ``database`` is writable."""
        cluster = self.cluster
        _pg_ctl(cluster, "stop", "-m", "fast")
        subprocess.run(
            self.command("--delta", "--type=immediate", "--target-action=promote", "restore"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = server_options(cluster.port, cluster.socket_dir)
        _pg_ctl(cluster, "start", "-o", options, "-l", str(cluster.root / "server.log"))
        wait_writable(cluster.port, database)


def wait_writable(port: int, database: str, timeout: float = 600.0) -> None:
    """Poll until ``SELECT NOT pg_is_in_recovery()`` is true on 127.0.0.1:``port``; bounded."""
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{database}", connect_timeout=5) as conn:
                row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
                if row is not None and row[0]:
                    return
        except psycopg.OperationalError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"bench: the server on 127.0.0.1:{port} did not leave recovery within {timeout:.0f} s")


def _pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    _pg_ctl_at(cluster.data, *args)


def _pg_ctl_at(data: Path, *args: str) -> None:
    pg_ctl = _pg_bin() / "pg_ctl"
    subprocess.run(
        [*AS_POSTGRES, str(pg_ctl), "-D", str(data), "-w", "-t", "600", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _pg_bin() -> Path:
    from aura_ops.dev.sandbox import pg_bin_dir

    found = pg_bin_dir()
    if found is None:
        raise SystemExit("bench: PostgreSQL binaries not found")
    return found


def _chown_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    account = pwd.getpwnam("postgres")
    os.chown(path, account.pw_uid, account.pw_gid)
    for item in path.rglob("*"):
        os.chown(item, account.pw_uid, account.pw_gid, follow_symlinks=False)
