"""The backup's compressor follows at most ``followers`` data files at once (issue 12, memory:
one thread per file found let a 600-table backup's peak RSS reach 98 MB), and still compresses
every file, also when more files are being written than it may follow at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO, cast

import zstandard

from aura_ops.components import postgres
from aura_ops.hosts.local import LocalHost


class _Counted:
    """A reader counted while open; each read a little slow, so that followers overlap
    whenever they may."""

    def __init__(self, store: _CountingStore, raw: IO[bytes]) -> None:
        self.store, self.raw = store, raw

    def read(self, size: int = -1) -> bytes:
        time.sleep(0.002)
        return self.raw.read(size)

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.store.guard:
            self.store.open_readers -= 1
        self.raw.close()


class _CountingStore(LocalHost):
    """Real files; the readers a follower holds until its file is compressed are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.open_readers = 0
        self.most = 0
        self.guard = threading.Lock()

    def open_read(self, path: str) -> IO[bytes]:
        raw = super().open_read(path)
        with self.guard:
            self.open_readers += 1
            self.most = max(self.most, self.open_readers)
        return cast(IO[bytes], _Counted(self, raw))


def _finish_within(compressor: postgres._Compressor, seconds: float = 60.0) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    thread = threading.Thread(target=lambda: found.update(compressor.finish(True)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the compressor never finished"
    return found


def test_at_most_the_given_number_of_files_is_followed_at_once_and_every_file_is_compressed(tmp_path: Path) -> None:
    store = _CountingStore()
    plain = {f"{n}.dat": f"{n}\trow of table {n}\n".encode() * 300 for n in range(1, 41)}
    for name, data in plain.items():
        (tmp_path / name).write_bytes(data)
    compressor = postgres._Compressor(store, str(tmp_path), 1, followers=3)
    for n in range(1, 41):
        compressor.item_finished(str(n))
    found = _finish_within(compressor)
    assert 1 <= store.most <= 3  # one thread per file found had all 40 open at once
    assert sorted(found) == sorted(f"{name}.zst" for name in plain)
    for name, data in plain.items():
        assert zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / f"{name}.zst").read_bytes()) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.zst" for name in plain)


def test_files_still_being_written_beyond_the_bound_are_all_compressed_once_finished(tmp_path: Path) -> None:
    """Two followers, three files growing at once (as pg_dump -j3 writes): the third waits for a
    slot, which the first file's end frees; nothing is missed of what was written meanwhile."""
    store = _CountingStore()
    for n in (1, 2, 3):
        (tmp_path / f"{n}.dat").write_bytes(b"first part\n")
    compressor = postgres._Compressor(store, str(tmp_path), 1, followers=2)
    deadline = time.monotonic() + 30
    while store.most < 2 and time.monotonic() < deadline:  # two followers took a slot each
        time.sleep(0.01)
    assert store.most == 2
    time.sleep(0.1)  # the two have read what there is and wait for more; the third waits for a slot
    for n in (1, 2, 3):  # pg_dump writes on
        with open(tmp_path / f"{n}.dat", "ab") as out:
            out.write(b"second part\n")
    for n in (1, 2, 3):
        compressor.item_finished(str(n))
    found = _finish_within(compressor)
    assert sorted(found) == ["1.dat.zst", "2.dat.zst", "3.dat.zst"]
    assert store.most == 2
    for n in (1, 2, 3):
        data = zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / f"{n}.dat.zst").read_bytes())
        assert data == b"first part\nsecond part\n"
