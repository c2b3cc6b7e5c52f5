"""The restore's feeders: success only once every feed has finished and been checked.

A stand-in for pg_restore (a thread that reads every named pipe of the staging folder to its
end) drives the real staging folder, feeders and checks through a LocalHost whose programs are
that stand-in; a hash check slowed down makes the ordering visible: the last feed's verdict
arrives after pg_restore has read everything.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zstandard

from aura_ops import checksum
from aura_ops.components import postgres
from aura_ops.components.postgres import PostgresComponent
from aura_ops.errors import AuraError, VerificationError
from aura_ops.hosts import Command, LocalHost, Result
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries


@pytest.fixture(autouse=True)
def _pipes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every data file through a pipe unless a test says otherwise (the feeder is what these
    tests drive; the small files written out whole have tests of their own at the end)."""
    monkeypatch.setattr(postgres, "SMALL_TOTAL", 0)


class _Reader:
    """Plays pg_restore: opens each pipe of the staging folder in turn and reads it to the end."""

    def __init__(self, command: Command) -> None:
        self.folder = Path(command.argv[-1])
        self.read: dict[str, bytes] = {}
        self.killed = False
        self.thread = threading.Thread(target=self._read_all)
        self.thread.start()

    def _read_all(self) -> None:
        for pipe in sorted(p for p in self.folder.iterdir() if p.is_fifo()):
            if self.killed:
                return
            with open(pipe, "rb") as stream:
                self.read[pipe.name] = stream.read()

    # the Process protocol, as far as _run_restore uses it
    def drain_in_background(self, on_line: Any = None) -> None:
        pass

    def wait(self, check: bool = True, timeout: float | None = None) -> Result:
        self.thread.join()
        return Result(-9 if self.killed else 0, b"", "", 0.0)

    def kill(self) -> None:
        self.killed = True

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else (-9 if self.killed else 0)

    def terminate(self, grace: float = 5.0) -> None:
        self.kill()


class _Host(LocalHost):
    """This machine's files (the staging folder and its pipes); pg_restore played by a _Reader."""

    def __init__(self) -> None:
        super().__init__("fake")
        self.readers: list[_Reader] = []

    def start(self, command: Command, **_: Any) -> _Reader:  # type: ignore[override]
        self.readers.append(_Reader(command))
        return self.readers[-1]

    def run(self, command: Command, **_: Any) -> Result:  # type: ignore[override]
        reader = self.start(command)
        return reader.wait()


def _run_restore(host: _Host, snapshot: Snapshot, conn: postgres.Connection) -> None:
    component = PostgresComponent("db", None, host)
    component._run_restore(snapshot, component.recorded(snapshot), conn, 1)


def _snapshot(tmp_path: Path, wrong_hash_for: str | None) -> Snapshot:
    dump = tmp_path / "snap" / "db" / "dump"
    dump.mkdir(parents=True)
    artifacts: dict[str, dict[str, Any]] = {}
    (dump / "toc.dat").write_bytes(b"PGDMP not really")
    for number in (3401, 3402, 3403):
        data = zstandard.ZstdCompressor(write_checksum=True).compress(f"{number}\t{'x' * 5000}\n".encode() * 50)
        (dump / f"{number}.dat.zst").write_bytes(data)
    for file in sorted(os.listdir(dump)):
        content = (dump / file).read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if file == wrong_hash_for:
            digest = hashlib.sha256(b"something else").hexdigest()
        artifacts[f"dump/{file}"] = {"size": len(content), "hash": digest}
    entry = {"type": "postgres", "database": "app", "artifacts": artifacts}
    manifest = {"checksum_algorithm": "sha256", "components": {"db": entry}}
    return Snapshot("s1", tmp_path / "snap", manifest)


class _SlowVerdict:
    """sha256 whose final digest takes a while, as a big file's last chunk would."""

    def __init__(self) -> None:
        self.inner = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.inner.update(data)

    def hexdigest(self) -> str:
        time.sleep(0.5)
        return self.inner.hexdigest()


def _restore(tmp_path: Path, snapshot: Snapshot) -> _Host:
    host = _Host()
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    conn = postgres.Connection({"dbname": "target"})
    with temporaries.bound(config):
        _run_restore(host, snapshot, conn)
    return host


def test_a_mismatch_found_after_pg_restore_read_everything_still_fails_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checksum, "new", lambda algorithm="sha256": _SlowVerdict())
    with pytest.raises(VerificationError, match=r"^db: dump/3403.dat.zst: checksum mismatch$"):
        _restore(tmp_path, _snapshot(tmp_path, wrong_hash_for="3403.dat.zst"))


def test_a_mismatch_stops_pg_restore_before_it_sees_the_end_of_that_file(tmp_path: Path) -> None:
    host = _Host()
    snapshot = _snapshot(tmp_path, wrong_hash_for="3401.dat.zst")
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    with temporaries.bound(config), pytest.raises(VerificationError, match="3401.dat.zst: checksum mismatch"):
        _run_restore(host, snapshot, postgres.Connection({"dbname": "t"}))
    assert host.readers[0].killed


def test_a_good_snapshot_is_fed_whole_and_its_staging_folder_removed(tmp_path: Path) -> None:
    host = _restore(tmp_path, _snapshot(tmp_path, wrong_hash_for=None))
    reader = host.readers[0]
    assert sorted(reader.read) == ["3401.dat", "3402.dat", "3403.dat"]
    assert reader.read["3402.dat"] == (b"3402\t" + b"x" * 5000 + b"\n") * 50
    assert not reader.folder.exists()


def test_a_compressor_failure_stops_pg_dump_at_once_and_names_the_cause(tmp_path: Path) -> None:
    """The compressor cannot write 7.dat.zst (a file of that name is in the way): it must stop
    the producer then, not after pg_dump has dumped everything else."""
    folder = tmp_path / "dump"
    folder.mkdir()
    (folder / "7.dat.zst").write_bytes(b"in the way")
    stopped = threading.Event()
    compressor = postgres._Compressor(LocalHost(), str(folder), 1)
    compressor.on_failure = stopped.set
    (folder / "7.dat").write_bytes(b"1\tone\n" * 1000)
    assert stopped.wait(10), "pg_dump was not stopped"
    with pytest.raises(AuraError, match=r"compressing the dump in .*: \[Errno 17\] File exists"):
        compressor.finish(False)


class _Partial(_Reader):
    """Plays a pg_restore that reads only the first pipe and exits: the others are never opened."""

    def _read_all(self) -> None:
        first = sorted(p for p in self.folder.iterdir() if p.is_fifo())[0]
        with open(first, "rb") as stream:
            self.read[first.name] = stream.read()


def test_pipes_pg_restore_never_opens_do_not_hang_the_restore(tmp_path: Path) -> None:
    host = _Host()
    host.start = lambda command, **_: host.readers.append(_Partial(command)) or host.readers[-1]  # type: ignore[method-assign]
    snapshot = _snapshot(tmp_path, wrong_hash_for=None)
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    done = threading.Event()

    def restore() -> None:
        with temporaries.bound(config):
            _run_restore(host, snapshot, postgres.Connection({"dbname": "t"}))
        done.set()

    thread = threading.Thread(target=restore, daemon=True)
    thread.start()
    assert done.wait(30), "the restore hung on pipes no reader opened"
    assert list(host.readers[0].read) == ["3401.dat"]
    assert not host.readers[0].folder.exists()


def test_a_truncated_frame_whose_hash_was_recorded_is_refused(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path, wrong_hash_for=None)
    dump = tmp_path / "snap" / "db" / "dump"
    cut = (dump / "3402.dat.zst").read_bytes()[:-9]
    (dump / "3402.dat.zst").write_bytes(cut)
    artifacts = snapshot.manifest["components"]["db"]["artifacts"]
    artifacts["dump/3402.dat.zst"] = {"size": len(cut), "hash": hashlib.sha256(cut).hexdigest()}
    with pytest.raises(VerificationError, match=r"^db: dump/3402.dat.zst: cannot be decompressed: truncated$"):
        _restore(tmp_path, snapshot)


class _Sink:
    """A pipe's write end that keeps only the sizes written."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    def write(self, data: bytes) -> int:
        self.writes.append(len(data))
        return len(data)

    def flush(self) -> None:
        pass


def test_a_highly_compressed_file_is_fed_in_bounded_chunks(tmp_path: Path) -> None:
    plain = b"\0" * (64 << 20)  # 64 MiB of zeros: a few KiB compressed, one frame
    source = tmp_path / "1.dat.zst"
    source.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(plain))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    host = LocalHost()
    feeder = postgres._Feeder(
        {}, 1, "sha256", host.open_fifo_writer_waiting, host.open_fifo_reader, host.open_read, host.open_fifo_writer
    )
    sink = _Sink()
    assert feeder._copy(str(source), sink, digest) is None  # type: ignore[arg-type]
    assert sum(sink.writes) == len(plain)
    assert max(sink.writes) <= checksum.CHUNK


@pytest.mark.parametrize("options", [{}, {"write_checksum": True}, {"write_content_size": False}, {"level": 19}])
def test_the_frame_follower_finds_the_end_of_a_frame_and_never_of_a_cut_one(options: dict[str, Any]) -> None:
    rows = b"".join(f"{n}\t{n * 7919 % 1000}\tsome text\n".encode() for n in range(20000))
    for plain in (b"", b"x", rows, os.urandom(300_000)):
        frame = zstandard.ZstdCompressor(**options).compress(plain)
        for step in (1, 3, 4096, len(frame) + 10):
            follower = postgres._ZstdFrame()
            data = frame + b"trailing bytes"
            used = sum(follower.feed(data[at : at + step]) for at in range(0, len(data), step))
            assert follower.ended and used == len(frame)
        for cut in sorted({1, 4, 5, 6, len(frame) // 2, len(frame) - 4, len(frame) - 1}):
            follower = postgres._ZstdFrame()
            assert follower.feed(frame[:cut]) == cut and not follower.ended
    follower = postgres._ZstdFrame()
    assert follower.feed(b"not a zstd frame at all") == 23 and not follower.ended


class _Backwards(_Reader):
    """Plays a pg_restore that opens the pipes in the reverse of the expected order."""

    def _read_all(self) -> None:
        for pipe in sorted((p for p in self.folder.iterdir() if p.is_fifo()), reverse=True):
            with open(pipe, "rb") as stream:
                self.read[pipe.name] = stream.read()


def test_pipes_opened_in_another_order_than_expected_are_still_fed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres._Feeder, "WINDOW", 1)  # one waiting thread: 3403 is past the window
    host = _Host()
    host.start = lambda command, **_: host.readers.append(_Backwards(command)) or host.readers[-1]  # type: ignore[method-assign]
    host.run = lambda command, **_: Result(1, b"", "no listing", 0.0)  # type: ignore[method-assign]
    snapshot = _snapshot(tmp_path, wrong_hash_for=None)
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    done = threading.Event()

    def restore() -> None:
        with temporaries.bound(config):
            _run_restore(host, snapshot, postgres.Connection({"dbname": "t"}))
        done.set()

    thread = threading.Thread(target=restore, daemon=True)
    thread.start()
    assert done.wait(60), "the restore hung on a pipe past the window"
    reader = host.readers[0]
    assert sorted(reader.read) == ["3401.dat", "3402.dat", "3403.dat"]
    assert reader.read["3403.dat"] == (b"3403\t" + b"x" * 5000 + b"\n") * 50


def test_pipes_are_expected_in_dump_id_order_in_parallel_and_in_toc_order_when_serial() -> None:
    pipes = ["/s/blob_20.dat", "/s/1000.dat", "/s/999.dat", "/s/blob_3.dat", "/s/7.dat"]
    listing = (
        ";\n; Archive created at 2026-12-01\n"
        "1000; 0 16390 TABLE DATA public accounts app\n"
        "998; 0 0 BLOBS - BLOBS \n"
        "7; 0 16400 TABLE DATA public zebras app\n"
        "999; 0 16395 TABLE DATA public branches app\n"
    )
    by_id = ["/s/7.dat", "/s/999.dat", "/s/1000.dat", "/s/blob_3.dat", "/s/blob_20.dat"]
    assert postgres._expected_order(pipes, None, serial=False) == by_id
    assert postgres._expected_order(pipes, listing, serial=False) == [  # the BLOBS entry looks largest to -j
        "/s/blob_3.dat",
        "/s/blob_20.dat",
        "/s/7.dat",
        "/s/999.dat",
        "/s/1000.dat",
    ]
    assert postgres._expected_order(pipes, listing, serial=True) == [
        "/s/1000.dat",
        "/s/blob_3.dat",
        "/s/blob_20.dat",
        "/s/7.dat",
        "/s/999.dat",
    ]


# -- small data files written out whole before pg_restore starts ----------------------------------


class _EveryFile(_Reader):
    """Plays pg_restore: reads every data file of the staging folder, regular file or pipe, in
    name order, noting which was which."""

    def _read_all(self) -> None:
        self.kinds: dict[str, str] = {}
        for path in sorted(p for p in self.folder.iterdir() if p.name[0].isdigit()):
            self.kinds[path.name] = "pipe" if path.is_fifo() else "file"
            with open(path, "rb") as stream:
                self.read[path.name] = stream.read()


def _mixed_snapshot(tmp_path: Path) -> tuple[Snapshot, dict[str, bytes]]:
    """3401: small; 3402: small compressed but large once decompressed; 3403: large compressed."""
    plain = {
        "3401.dat": b"3401\tsmall\n" * 100,
        "3402.dat": b"3402\t" + b"z" * 600_000 + b"\n",
        "3403.dat": os.urandom(300_000).hex().encode() + b"\n",
    }
    dump = tmp_path / "snap" / "db" / "dump"
    dump.mkdir(parents=True)
    (dump / "toc.dat").write_bytes(b"PGDMP not really")
    for file, data in plain.items():
        (dump / f"{file}.zst").write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    artifacts = {
        f"dump/{file}": {
            "size": (dump / file).stat().st_size,
            "hash": hashlib.sha256((dump / file).read_bytes()).hexdigest(),
        }
        for file in sorted(os.listdir(dump))
    }
    manifest = {
        "checksum_algorithm": "sha256",
        "components": {"db": {"type": "postgres", "database": "app", "artifacts": artifacts}},
    }
    return Snapshot("s1", tmp_path / "snap", manifest), plain


def _small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "SMALL_TOTAL", 64 << 20)
    monkeypatch.setattr(postgres, "SMALL_COMPRESSED", 100_000)  # 3403 (600 KB of hex) is past it
    monkeypatch.setattr(postgres, "SMALL_PLAIN", 500_000)  # 3402 grows past it while decompressing


def _restore_every_file(tmp_path: Path, snapshot: Snapshot) -> _Host:
    host = _Host()
    host.start = lambda command, **_: host.readers.append(_EveryFile(command)) or host.readers[-1]  # type: ignore[method-assign]
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    with temporaries.bound(config):
        _run_restore(host, snapshot, postgres.Connection({"dbname": "t"}))
    return host


def test_small_files_are_written_out_whole_and_large_ones_piped_each_read_as_backed_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_limits(monkeypatch)
    snapshot, plain = _mixed_snapshot(tmp_path)
    host = _restore_every_file(tmp_path, snapshot)
    reader = host.readers[0]
    assert reader.kinds == {"3401.dat": "file", "3402.dat": "pipe", "3403.dat": "pipe"}  # type: ignore[attr-defined]
    assert reader.read == plain
    assert reader.folder.parent == Path(host.fast_temp_root(postgres.SMALL_TOTAL))
    assert not reader.folder.exists()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda data: data[:5] + bytes([data[5] ^ 1]) + data[6:], "checksum mismatch"),
        (lambda data: data[:-3], "cannot be decompressed: truncated"),
        (lambda data: data + b"more", "cannot be decompressed: data after the end of its frame"),
    ],
)
def test_a_bad_small_file_is_refused_before_pg_restore_starts_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Any, problem: str
) -> None:
    """A changed file (its recorded hash kept), or one recorded whole but cut or followed by more
    bytes (its hash recorded as it is): never written where pg_restore could read it."""
    _small_limits(monkeypatch)
    snapshot, _ = _mixed_snapshot(tmp_path)
    victim = tmp_path / "snap" / "db" / "dump" / "3401.dat.zst"
    victim.write_bytes(damage(victim.read_bytes()))
    if problem != "checksum mismatch":
        artifacts = snapshot.manifest["components"]["db"]["artifacts"]
        artifacts["dump/3401.dat.zst"] = {
            "size": victim.stat().st_size,
            "hash": hashlib.sha256(victim.read_bytes()).hexdigest(),
        }
    host = _Host()
    root = Path(host.fast_temp_root(postgres.SMALL_TOTAL))
    before = {p.name for p in root.iterdir()}
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    with temporaries.bound(config), pytest.raises(VerificationError, match=rf"^db: dump/3401.dat.zst: {problem}$"):
        _run_restore(host, snapshot, postgres.Connection({"dbname": "t"}))
    assert host.readers == []  # pg_restore never started
    assert {p.name for p in root.iterdir() if p.name.startswith("aura-restore-")} <= before


def test_small_files_stop_being_written_out_once_their_total_is_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_limits(monkeypatch)
    monkeypatch.setattr(postgres, "SMALL_TOTAL", 1000)  # 3401 (1,100 bytes) does not fit
    snapshot, plain = _mixed_snapshot(tmp_path)
    reader = _restore_every_file(tmp_path, snapshot).readers[0]
    assert set(reader.kinds.values()) == {"pipe"}  # type: ignore[attr-defined]
    assert reader.read == plain


def test_materialize_never_writes_more_than_its_cap_and_leaves_nothing_when_past_it(tmp_path: Path) -> None:
    data = zstandard.ZstdCompressor().compress(b"\0" * (8 << 20))  # a few hundred bytes, 8 MiB once decompressed
    (tmp_path / "a.dat.zst").write_bytes(data)
    host = LocalHost()
    digest = hashlib.sha256(data).hexdigest()
    target = str(tmp_path / "a.dat")
    assert postgres._materialize(host, str(tmp_path / "a.dat.zst"), host, target, digest, "sha256", 1 << 20) == -1
    assert not os.path.exists(target)
    assert postgres._materialize(host, str(tmp_path / "a.dat.zst"), host, target, digest, "sha256", 8 << 20) == 8 << 20
    assert os.path.getsize(target) == 8 << 20 and os.stat(target).st_mode & 0o777 == 0o600
    assert (
        postgres._materialize(host, str(tmp_path / "missing"), host, target + "2", digest, "sha256", 1) == "is missing"
    )
