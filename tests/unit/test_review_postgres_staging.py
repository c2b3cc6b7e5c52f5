"""Review of the restore's staging folder on a memory file system (small data files written out
whole, the folder made beside CREATE DATABASE): what a full, read-only or refused staging place
does, through the real staging code on this machine's files (pg_restore played by a reader)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest

from aura_ops.components import postgres
from aura_ops.components.postgres import PostgresComponent
from aura_ops.errors import AuraError, VerificationError
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries
from tests.unit.test_postgres_feeder import _EveryFile, _Host, _mixed_snapshot, _small_limits


class _Refusing(_Host):
    """This machine, but the staging place refuses new files with ``error`` (a full tmpfs: out of
    blocks or of inodes; a read-only one; a denied permission), from the ``after``-th on."""

    def __init__(self, error: int, after: int = 0) -> None:
        super().__init__()
        self.error, self.left = error, after
        self.started = 0

    def _refuse(self, path: str) -> None:
        if "/aura-restore-" in path:
            if self.left <= 0:
                raise OSError(self.error, os.strerror(self.error), path)
            self.left -= 1

    def open_write(self, path: str, *, mode: int = 0o600, exclusive: bool = True) -> IO[bytes]:
        self._refuse(path)
        return super().open_write(path, mode=mode, exclusive=exclusive)

    def make_fifo(self, path: str) -> None:
        self._refuse(path)
        super().make_fifo(path)

    def start(self, command: Any, **_: Any) -> Any:
        self.started += 1
        self.readers.append(_EveryFile(command))
        return self.readers[-1]


def _staged_restore(host: _Host, snapshot: Snapshot, background: bool) -> None:
    """The restore's two ways to its staging folder: made beside CREATE DATABASE (a swap or a
    new database), or at once (a deep verify, ``restore_in_place: clean``)."""
    component = PostgresComponent("db", None, host)
    recorded = component.recorded(snapshot)
    conn = postgres.Connection({"dbname": "t"})
    if not background:
        component._run_restore(snapshot, recorded, conn, 2)
        return
    with component._staging_in_background(snapshot, recorded, 2) as staged:
        component._run_restore(snapshot, recorded, conn, 2, staged=staged)


@pytest.mark.parametrize("background", [True, False], ids=["beside CREATE DATABASE", "at once"])
@pytest.mark.parametrize(
    ("error", "after", "hint"),
    [
        (errno.ENOSPC, 1, True),  # the table of contents written, a small data file refused
        (errno.ENOSPC, 3, True),  # a pipe refused (out of inodes)
        (errno.EROFS, 0, True),
        (errno.EACCES, 1, False),
    ],
)
def test_a_staging_place_that_refuses_a_file_is_one_clear_line_with_nothing_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool, error: int, after: int, hint: bool
) -> None:
    """Was "unexpected OSError: [Errno 28] ... (traceback saved to ...)": an AuraError (exit 1)
    naming the folder, the file and the reason (and that TMPDIR chooses another place when the
    place is full or read-only); pg_restore never started, no folder and no record left."""
    _small_limits(monkeypatch)
    snapshot, _ = _mixed_snapshot(tmp_path)
    host = _Refusing(error, after)
    root = Path(host.fast_temp_root(postgres.SMALL_TOTAL))
    before = {p.name for p in root.iterdir() if p.name.startswith("aura-restore-")}
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    with temporaries.bound(config), pytest.raises(AuraError) as raised:
        _staged_restore(host, snapshot, background)
    assert type(raised.value) is AuraError and not isinstance(raised.value, VerificationError)
    message = str(raised.value)
    assert message.startswith(f"db: cannot prepare the restore's staging folder {root}/aura-restore-"), message
    assert f": {os.strerror(error)} ({root}/aura-restore-" in message
    assert message.endswith(" (TMPDIR chooses another folder)") == hint, message
    assert "\n" not in message
    assert host.started == 0  # pg_restore never ran
    assert {p.name for p in root.iterdir() if p.name.startswith("aura-restore-")} <= before
    with temporaries.bound(config) as registry:
        assert registry.all() == []


def test_a_staging_folder_that_cannot_be_made_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_limits(monkeypatch)
    snapshot, _ = _mixed_snapshot(tmp_path)
    host = _Host()

    def refuse(path: str, **_: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    host.mkdir = refuse  # type: ignore[method-assign]
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    with temporaries.bound(config), pytest.raises(AuraError, match=r"^db: cannot prepare the restore's staging "):
        _staged_restore(host, snapshot, True)
    assert host.readers == []


# -- the snapshot's small files read after the restore's first check -----------------------------


class _Counting(_Host):
    """This machine; counts the bytes read from the snapshot's dump folder."""

    def __init__(self) -> None:
        super().__init__()
        self.read_from_dump = 0

    def read_bytes(self, path: str) -> bytes:
        data = super().read_bytes(path)
        if "/dump/" in path:
            self.read_from_dump += len(data)
        return data

    def open_read(self, path: str) -> IO[bytes]:
        stream = super().open_read(path)
        if "/dump/" not in path:
            return stream
        host, read = self, stream.read

        def counted(size: int = -1) -> bytes:
            data = read(size)
            host.read_from_dump += len(data)
            return data

        stream.read = counted  # type: ignore[method-assign]
        return stream


def test_a_small_file_grown_after_the_check_is_refused_without_being_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder made beside CREATE DATABASE reads files the restore checked (present, with
    their recorded size) a moment before: one that grew since (here by 64 MiB) is refused
    (exit 3) after reading no more than its recorded size and one byte."""
    _small_limits(monkeypatch)
    snapshot, _ = _mixed_snapshot(tmp_path)
    victim = tmp_path / "snap" / "db" / "dump" / "3401.dat.zst"
    recorded = victim.stat().st_size
    with open(victim, "ab") as grow:
        grow.write(b"\0" * (64 << 20))
    host = _Counting()
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    with (
        temporaries.bound(config),
        pytest.raises(VerificationError, match=r"^db: dump/3401.dat.zst: checksum mismatch$"),
    ):
        _staged_restore(host, snapshot, True)
    assert host.readers == []
    assert host.read_from_dump <= len(b"PGDMP not really") + 1 + recorded + 1


@pytest.mark.parametrize("victim", ["3401.dat.zst", "toc.dat"])
def test_a_small_file_replaced_by_a_fifo_after_the_check_is_refused_never_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, victim: str
) -> None:
    """A FIFO put in a small file's place after the check would have the folder's thread wait
    for a writer forever (and the restore with it, in front of its new database): refused,
    exit 3 naming it, as the pipes' feeder refuses one."""
    _small_limits(monkeypatch)
    snapshot, _ = _mixed_snapshot(tmp_path)
    path = tmp_path / "snap" / "db" / "dump" / victim
    path.unlink()
    os.mkfifo(path)
    host = _Host()
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    failure: list[BaseException] = []

    def restore() -> None:
        try:
            with temporaries.bound(config):
                _staged_restore(host, snapshot, True)
        except BaseException as exc:  # noqa: BLE001 - looked at below
            failure.append(exc)

    thread = threading.Thread(target=restore, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # waiting in the FIFO's open: a writer that closes at once ends it
        os.close(os.open(path, os.O_WRONLY))
        thread.join(60)
        pytest.fail("the restore waited for a writer of the FIFO")
    assert len(failure) == 1 and isinstance(failure[0], VerificationError), failure
    assert str(failure[0]) == f"db: dump/{victim}: cannot be read: not a regular file"
    assert host.readers == []
