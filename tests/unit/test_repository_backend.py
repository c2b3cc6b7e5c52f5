"""The repository over its backend: the local layout is today's, and another backend needs no
other change (a dict of objects stands in for a bucket here)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
from pathlib import Path
from typing import IO, Any

import pytest

from aura_ops.components.manifests import section_problem
from aura_ops.errors import VerificationError
from aura_ops.repository import Entry, LocalBackend, Repository

SNAPSHOT = "20250101-000000-000"


def _manifest(snapshot_id: str, **components: dict[str, Any]) -> dict[str, Any]:
    return {"format": 2, "id": snapshot_id, "created": "2025-01-01T00:00:00+00:00", "components": components}


def _files_section(size: int, digest: str) -> dict[str, Any]:
    return {
        "type": "files",
        "source": "/srv/x",
        "file_count": 1,
        "bytes": size,
        "copied_bytes": size,
        "artifacts": {"data.bin": {"size": size, "hash": digest}},
    }


def _seal(repo: Repository, snapshot_id: str, content: bytes = b"payload") -> None:
    folder = repo.begin(snapshot_id)
    (folder / "site").mkdir()
    (folder / "site" / "data.bin").write_bytes(content)
    section = _files_section(len(content), hashlib.sha256(content).hexdigest())
    repo.commit(snapshot_id, _manifest(snapshot_id, site=section))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_local_commit_writes_todays_layout_owner_only(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo", validate=section_problem)
    repo.ensure()
    _seal(repo, SNAPSHOT)
    root = tmp_path / "repo"
    assert sorted(p.name for p in (root / "snapshots").iterdir()) == [SNAPSHOT, SNAPSHOT + ".sha256"]
    raw = (root / "snapshots" / SNAPSHOT / "manifest.json").read_bytes()
    recorded = (root / "snapshots" / (SNAPSHOT + ".sha256")).read_text()
    assert recorded == f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n"
    assert json.loads((root / "format.json").read_text()) == {"format": 2, "checksummed_from": SNAPSHOT}
    assert (root / "snapshots" / SNAPSHOT / "site" / "data.bin").read_bytes() == b"payload"
    assert {_mode(root), _mode(root / "snapshots"), _mode(root / "snapshots" / SNAPSHOT)} == {0o700}
    assert _mode(root / "snapshots" / SNAPSHOT / "manifest.json") == 0o600
    assert not list(root.rglob("*.tmp")) and not list(root.rglob("*.partial"))
    assert repo.get("latest").manifest["components"]["site"]["source"] == "/srv/x"


def test_deleting_a_snapshot_removes_its_folder_and_checksum_file(tmp_path: Path) -> None:
    repo = Repository(tmp_path, validate=section_problem)
    repo.ensure()
    _seal(repo, SNAPSHOT)
    repo.delete(SNAPSHOT)
    assert repo.ids() == []
    assert sorted(p.name for p in repo.snapshots_dir.iterdir()) == []


def test_a_partial_and_a_half_deleted_snapshot_are_never_listed_and_are_cleaned(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    repo.ensure()
    repo.begin(SNAPSHOT)
    (repo.snapshots_dir / "20250101-000000-001.deleting.partial").mkdir()
    (repo.snapshots_dir / "20250101-000000-002.sha256").write_text("orphan")
    assert repo.ids() == [] and repo.stray() == []
    assert sorted(repo.clean_partials()) == [SNAPSHOT + ".partial", "20250101-000000-001.deleting.partial"]
    assert list(repo.snapshots_dir.iterdir()) == []


def test_a_put_stream_lands_whole_and_a_missing_key_is_file_not_found(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("big", io.BytesIO(b"x" * 3_000_000))
    with backend.get("big") as stream:
        assert stream.read() == b"x" * 3_000_000
    assert backend.stat("big") == Entry("big", False, 3_000_000)
    assert backend.stat("nothing") is None
    with pytest.raises(FileNotFoundError):
        backend.get("nothing")
    assert backend.list("no-such-folder") == []


def test_without_a_validate_hook_the_repository_accepts_any_component_type(tmp_path: Path) -> None:
    """Storage knows no component: what a section must hold is the caller's check."""
    plain, checked = Repository(tmp_path), Repository(tmp_path, validate=section_problem)
    plain.ensure()
    plain.begin(SNAPSHOT)
    plain.commit(SNAPSHOT, _manifest(SNAPSHOT, s={"type": "tape-robot"}))
    assert plain.get(SNAPSHOT).manifest["components"]["s"]["type"] == "tape-robot"
    with pytest.raises(VerificationError, match="unknown type 'tape-robot'"):
        checked.get(SNAPSHOT)


@pytest.mark.parametrize("kind", [["files"], {"a": 1}, None, 3])
def test_a_section_whose_type_is_not_a_name_marks_the_snapshot_damaged(kind: object, tmp_path: Path) -> None:
    repo = Repository(tmp_path, validate=section_problem)
    repo.ensure()
    repo.begin(SNAPSHOT)
    repo.commit(SNAPSHOT, _manifest(SNAPSHOT, s={"type": kind}))
    assert "unknown type" in str(repo.load(SNAPSHOT).damaged)


class MemoryBackend:
    """A bucket stand-in: objects in a dict; staged folders and read copies in a local cache."""

    def __init__(self, cache: Path) -> None:
        self.root = cache
        self.objects: dict[str, bytes] = {}
        self.order: list[str] = []

    def ensure(self, *folders: str) -> None:
        pass

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        self.objects[key] = data if isinstance(data, bytes) else data.read()
        self.order.append(key)

    def get(self, key: str) -> IO[bytes]:
        if key not in self.objects:
            raise FileNotFoundError(key)
        return io.BytesIO(self.objects[key])

    def list(self, prefix: str) -> list[Entry]:
        found: dict[str, Entry] = {}
        for key, data in self.objects.items():
            if key.startswith(prefix + "/"):
                first, sep, _ = key[len(prefix) + 1 :].partition("/")
                found[first] = Entry(first, bool(sep), 0 if sep else len(data))
        return list(found.values())

    def stat(self, key: str) -> Entry | None:
        name = key.rsplit("/", 1)[-1]
        if key in self.objects:
            return Entry(name, False, len(self.objects[key]))
        return Entry(name, True) if any(k.startswith(key + "/") for k in self.objects) else None

    def delete(self, key: str) -> None:
        for doomed in [k for k in self.objects if k == key or k.startswith(key + "/")]:
            del self.objects[doomed]

    def stage(self, key: str) -> Path:
        staged = self.root / "staging" / key
        staged.mkdir(parents=True)
        return staged

    def commit(self, staged: str, final: str, name: str, data: bytes) -> Path:
        folder = self.root / "staging" / staged
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.put(f"{final}/{path.relative_to(folder)}", path.read_bytes())
        self.put(f"{final}/{name}", data)  # last: its presence is the commit
        shutil.rmtree(folder)
        return self.folder(final)

    def discard(self, staged: str) -> None:
        shutil.rmtree(self.root / "staging" / staged, ignore_errors=True)

    def folder(self, key: str) -> Path:
        local = self.root / "cache" / key
        for object_key, data in self.objects.items():
            if object_key.startswith(key + "/"):
                (local / object_key[len(key) + 1 :]).parent.mkdir(parents=True, exist_ok=True)
                (local / object_key[len(key) + 1 :]).write_bytes(data)
        return local

    def locked(self, run_id: str, command: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def free_bytes(self) -> int:
        return 1 << 40


def test_another_backend_is_one_class_and_the_repository_writes_nothing_itself(tmp_path: Path) -> None:
    backend = MemoryBackend(tmp_path / "cache")
    repo = Repository(backend, validate=section_problem)
    with repo.locked("run-1", "backup"):
        _seal(repo, SNAPSHOT, b"first")
        _seal(repo, "20250102-000000-000", b"second")
        repo.begin("20250103-000000-000")  # never committed: not a snapshot
    assert repo.ids() == [SNAPSHOT, "20250102-000000-000"]
    assert backend.order[-1] == "snapshots/20250102-000000-000/manifest.json"  # the manifest goes last
    assert "format.json" in backend.objects and "snapshots/20250101-000000-000.sha256" in backend.objects
    snapshot = repo.get("latest")
    assert (snapshot.component_dir("site") / "data.bin").read_bytes() == b"second"

    backend.objects[f"snapshots/{SNAPSHOT}/manifest.json"] += b" "
    assert "changed since it was sealed" in str(repo.load(SNAPSHOT).damaged)
    repo.delete(SNAPSHOT)
    assert repo.ids() == ["20250102-000000-000"]
    assert not any(key.startswith(f"snapshots/{SNAPSHOT}") for key in backend.objects)
    assert not (tmp_path / "cache" / "snapshots").exists()  # every byte went through the backend


def test_the_writable_check_goes_through_the_backend_and_leaves_nothing(tmp_path: Path) -> None:
    backend = MemoryBackend(tmp_path / "cache")
    Repository(backend).check_writable()
    assert [key.startswith(".doctor-") for key in backend.order] == [True]  # written once ...
    assert backend.objects == {}  # ... and deleted
    local = Repository(tmp_path / "repo")
    local.check_writable()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["snapshots"]


def test_the_writable_check_fails_on_a_folder_it_cannot_write(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.ensure()
    if os.geteuid() == 0:  # root writes anywhere: a backend that refuses stands in
        backend = MemoryBackend(tmp_path / "cache")

        def refused(key: str, data: bytes | IO[bytes]) -> None:
            raise PermissionError(13, "Permission denied", key)

        backend.put = refused  # type: ignore[method-assign]
        repo = Repository(backend)
    else:
        (tmp_path / "repo").chmod(0o500)
    with pytest.raises(PermissionError):
        repo.check_writable()
