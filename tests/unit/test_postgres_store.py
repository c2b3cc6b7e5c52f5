"""The postgres component reads and writes its part of a snapshot only through its store host
(the control machine, where the snapshot folders are), and takes its default parallelism from
its own host (where pg_dump and pg_restore run): here both are FakeHosts, so a file reached
around them would not be found."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import zstandard

from aura_ops.components import postgres
from aura_ops.components.postgres import PostgresComponent, default_jobs
from aura_ops.config import PostgresConfig
from aura_ops.errors import AuraError, VerificationError
from aura_ops.hosts.fake import FakeHost, result
from aura_ops.repository import Snapshot

DUMP = "/repo/snapshots/s1/db/dump"


def test_the_compressor_compresses_each_data_file_on_the_store_and_removes_the_plain_one() -> None:
    store = FakeHost("control")
    plain = b"1\tone\n" * 5000
    store.add_file(f"{DUMP}/7.dat", plain)
    store.add_file(f"{DUMP}/toc.dat", b"PGDMP")
    compressor = postgres._Compressor(store, DUMP, 3)
    compressor.item_finished("7")
    found = compressor.finish(True)
    compressed = store.read_bytes(f"{DUMP}/7.dat.zst")
    assert store.listdir(DUMP) == ["7.dat.zst", "toc.dat"]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compressed) == plain
    digest = hashlib.sha256(compressed).hexdigest()
    assert found == {"7.dat.zst": {"size": len(compressed), "hash": digest, "raw_size": len(plain)}}
    st = store.stat(f"{DUMP}/7.dat.zst")
    assert st is not None and st.mode & 0o777 == 0o600


def test_a_compressed_file_already_on_the_store_fails_the_compressor_naming_it() -> None:
    store = FakeHost("control")
    store.add_file(f"{DUMP}/7.dat", b"1\tone\n")
    store.add_file(f"{DUMP}/7.dat.zst", b"in the way")
    compressor = postgres._Compressor(store, DUMP, 1)
    with pytest.raises(AuraError, match=r"^compressing the dump in /repo/snapshots/s1/db/dump: \[Errno 17\]"):
        compressor.finish(True)
    assert store.read_bytes(f"{DUMP}/7.dat.zst") == b"in the way"


def test_the_configured_level_reaches_zstd_and_level_1_is_the_default() -> None:
    """Level 1 by default (issue 12: the cheapest level, as small as level 2 on COPY text); a
    configured level is the one each data file is compressed at."""
    import random

    words = [f"word{n}" for n in range(400)]
    rng = random.Random(12)
    plain = b"".join(f"{n}\t{' '.join(rng.choices(words, k=12))}\n".encode() for n in range(20000))
    sizes = {}
    for level in (PostgresConfig(type="postgres", dsn_env="X").compression_level, 19):
        store = FakeHost("control")
        store.add_file(f"{DUMP}/7.dat", plain)
        compressor = postgres._Compressor(store, DUMP, level)
        compressor.item_finished("7")
        sizes[level] = compressor.finish(True)["7.dat.zst"]["size"]
        assert zstandard.ZstdDecompressor().decompressobj().decompress(store.read_bytes(f"{DUMP}/7.dat.zst")) == plain
    assert list(sizes) == [1, 19]
    assert sizes[19] < sizes[1] * 0.9


def _stored_snapshot(store: FakeHost, files: dict[str, bytes]) -> Snapshot:
    artifacts: dict[str, Any] = {}
    for name, data in files.items():
        store.add_file(f"{DUMP}/{name}", data)
        artifacts[f"dump/{name}"] = {"size": len(data), "hash": hashlib.sha256(data).hexdigest()}
    section = {"type": "postgres", "database": "shop", "artifacts": artifacts}
    manifest = {"checksum_algorithm": "sha256", "components": {"db": section}}
    return Snapshot("s1", Path("/repo/snapshots/s1"), manifest)


def test_verify_reads_the_dump_through_the_store_and_lists_it_on_the_host() -> None:
    store, host = FakeHost("control"), FakeHost("db1")
    data = zstandard.ZstdCompressor().compress(b"1\tone\n")
    snapshot = _stored_snapshot(store, {"toc.dat": b"PGDMP toc", "3401.dat.zst": data})
    host.on(["pg_restore", "--list"], result(";\n; Archive\n3401; 0 16390 TABLE DATA public items app\n"))
    report = PostgresComponent("db", None, host, store).verify(snapshot, deep=False)
    assert report == {"toc_entries": 1}
    assert host.argvs == [["pg_restore", "--list", DUMP]]


def test_verify_finds_a_file_on_the_store_the_manifest_does_not_list() -> None:
    store, host = FakeHost("control"), FakeHost("db1")
    snapshot = _stored_snapshot(store, {"toc.dat": b"PGDMP toc"})
    store.add_file(f"{DUMP}/9.dat.zst", b"stray")
    with pytest.raises(VerificationError, match=r"^db: dump/9.dat.zst is not in the manifest$"):
        PostgresComponent("db", None, host, store).verify(snapshot, deep=False)


def test_check_inputs_hashes_through_the_store() -> None:
    store = FakeHost("control")
    snapshot = _stored_snapshot(store, {"toc.dat": b"PGDMP toc"})
    component = PostgresComponent("db", None, FakeHost("db1"), store)
    postgres.check_inputs(store, snapshot, "db", component.recorded(snapshot), full=True)
    store.add_file(f"{DUMP}/toc.dat", b"PGDMP tod")  # same size, other content
    with pytest.raises(VerificationError, match=r"^db: dump/toc.dat: checksum mismatch$"):
        postgres.check_inputs(store, snapshot, "db", component.recorded(snapshot))


def test_default_jobs_are_the_component_hosts_cpus_unless_configured() -> None:
    host = FakeHost("db1")
    host.cpus = 6
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1/shop")
    assert default_jobs(config, host) == 6
    assert default_jobs(config.model_copy(update={"jobs": 2}), host) == 2
