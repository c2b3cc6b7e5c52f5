"""Throwaway real components for the demo and the tests: a PostgreSQL cluster in a temp folder.

The cluster listens on 127.0.0.1 only, on a free port, with its unix socket in its own folder
and trust authentication; as root, initdb and pg_ctl run as the ``postgres`` OS user, since
the server refuses to run as root. ``stop`` uses ``pg_ctl stop -m fast`` (by the cluster's pid file).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def pg_bin_dir() -> Path | None:
    for candidate in PG_BIN_CANDIDATES:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """A real PostgreSQL server in a temp folder; ``dsn(db)`` connects to it over 127.0.0.1."""

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb) not found; install postgresql-15 (make bootstrap does)"
            )
        self.bin = bin_dir
        self.root = root or Path(tempfile.mkdtemp(prefix="aura-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.port = port or free_port()
        self.running = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_user, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> PostgresCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_user:
            account = pwd.getpwnam("postgres")
            for folder in (self.root, self.socket_dir):
                os.chown(folder, account.pw_uid, account.pw_gid)
            os.chmod(self.root, 0o700)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def wait_until(predicate: object, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds (bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


class DockerDaemon:
    """A Docker engine for the tests and the demo: the system one if its socket answers, else
    ``dockerd --bridge=none --iptables=false --ip-masq=false`` started here (stopped by its pid).
    No network is ever created: containers use host networking."""

    SYSTEM_SOCKET = Path("/var/run/docker.sock")

    def __init__(self, root: Path | None = None) -> None:
        self.owns_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="aura-docker-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"unix://{self.SYSTEM_SOCKET}"

    @staticmethod
    def _answers(socket_path: Path) -> bool:
        import http.client

        if not socket_path.exists():
            return False

        class _Unix(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(2)
                self.sock.connect(str(socket_path))

        try:
            connection = _Unix("localhost")
            connection.request("GET", "/_ping")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def start(self) -> DockerDaemon:
        if self._answers(self.SYSTEM_SOCKET):
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd not found; install docker.io (make bootstrap does)")
        sock = self.root / "docker.sock"
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                dockerd,
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip6tables=false",
                f"--host=unix://{sock}",
                f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}",
                f"--pidfile={self.root / 'dockerd.pid'}",
            ],
            stdout=log,
            stderr=log,
        )
        self.url = f"unix://{sock}"
        if not wait_until(lambda: self._answers(sock), 60):
            self.stop()
            raise RuntimeError(f"dockerd did not answer; see {self.root / 'dockerd.log'}")
        return self

    def stop(self) -> None:
        """Stop the dockerd started here, then undo the mount it leaves behind (the network
        namespace bind-mounted at ``<exec-root>/netns/default``, which dockerd does not unmount
        when it exits) and, when the folder is a temporary one made here, remove it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        unmount_under(self.root)
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mounts, whose octal
    escapes such as ``\\040`` for a space are decoded)."""
    prefix = os.path.realpath(root)
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as table:
        for line in table:
            point = line.split()[1].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + os.sep):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_under(root: Path) -> None:
    """Detach every mount at or below ``root`` (leftovers of a dockerd started there), so the
    folder can be removed. Best effort: a mount that cannot be detached stays, and the rmtree
    that follows reports it."""
    for point in mounts_under(root):
        subprocess.run(["umount", "--lazy", "--", str(point)], check=False, capture_output=True)


def import_busybox_image(client: object, tag: str = "aura-test/busybox") -> str:
    """Build an image offline: /bin/busybox (static) and its applet links, imported as ``tag``."""
    import io
    import tarfile

    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("/bin/busybox not found; install busybox-static")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "httpd", "sleep", "cat", "echo", "ls", "wget", "true", "false", "test"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)
        for folder in ("tmp", "www", "etc"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            archive.addfile(info)
    client.api.import_image_from_data(buffer.getvalue(), repository=tag.split(":")[0], tag="latest")  # type: ignore[attr-defined]
    return tag
