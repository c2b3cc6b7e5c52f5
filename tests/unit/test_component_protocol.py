"""What workflows, doctor, announce and the CLI ask of every component type through the Component
protocol (never by its type name): summaries for ``snapshots show``, restore descriptions for the
first line, the tools doctor checks, the stored entries verify expects, the damage check with the
repository's verified cache, and components built only on the command's inventory."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aura_ops.cli import announce, cli
from aura_ops.components import REGISTRY, build, build_as, component_class, doctor, targets
from aura_ops.components.base import Component
from aura_ops.components.containers import DockerComponent
from aura_ops.components.files import INDEX, TREE, FilesComponent, stored
from aura_ops.components.manifests import section_problem
from aura_ops.components.postgres import PostgresComponent
from aura_ops.components.release import ReleaseComponent
from aura_ops.config import Config, parse
from aura_ops.errors import ConfigError, UsageError
from aura_ops.hosts import Result
from aura_ops.hosts.fake import FakeHost
from aura_ops.hosts.inventory import Inventory
from aura_ops.hosts.local import LocalHost
from aura_ops.repository import Repository, Snapshot
from aura_ops.repository.verified import VerifiedCache
from aura_ops.state.lock import pid_alive

SNAPSHOT = "20250101-000000-000"
IMAGE = "sha256:" + "c" * 64

FILES = {
    "type": "files",
    "source": "/srv/uploads",
    "file_count": 120,
    "bytes": 3_200_000,
    "copied_bytes": 10,
    "copied_files": 4,
    "linked_files": 116,
}
POSTGRES = {
    "type": "postgres",
    "database": "shop",
    "where": "127.0.0.1:5432",
    "server_version": "15.4",
    "row_counts": {"public.a": 3000, "public.b": 400},
    "database_size": 8_100_000,
}
RELEASE = {"type": "release", "path": "/srv/app", "current": "v1.2"}
DOCKER = {
    "type": "docker",
    "containers": [
        {"name": "app-web", "status": "running", "image": IMAGE},
        {"name": "app-worker", "status": "exited", "image": "sha256:" + "d" * 64},
    ],
}


def size(n: float) -> str:
    return f"<{n:g} bytes>"


def _config(tmp_path: Path, components: dict[str, Any], **sections: Any) -> Config:
    data = {"repository": {"path": str(tmp_path / "repo")}, "components": components, **sections}
    return parse(data, tmp_path / "aura.yaml")


# ---------------------------------------------------------------- summaries for `snapshots show`


def test_each_type_summarizes_what_its_section_recorded_without_a_host() -> None:
    assert FilesComponent.summary(FILES, size) == (
        "/srv/uploads: 120 files, <3.2e+06 bytes>; copied 4, hard-linked 116 unchanged"
    )
    assert PostgresComponent.summary(POSTGRES, size) == (
        "shop at 127.0.0.1:5432, PostgreSQL 15.4, 2 tables, 3400 rows, <8.1e+06 bytes> on the server"
    )
    assert ReleaseComponent.summary(RELEASE, size) == "/srv/app: current v1.2"
    assert DockerComponent.summary(DOCKER, size) == (
        "2 containers: app-web running (image cccccccccccc), app-worker exited (image dddddddddddd)"
    )


def test_a_summary_of_an_old_or_empty_section_says_what_is_unknown_instead_of_failing() -> None:
    old = {"type": "postgres", "database": "shop"}  # written before the facts were recorded
    assert PostgresComponent.summary(old, size) == "shop at ?, PostgreSQL ?, ? tables, ? rows, ? on the server"
    assert DockerComponent.summary({"type": "docker", "containers": []}, size) == "no containers recorded"
    one = {"type": "docker", "containers": [{"name": "web", "status": "running", "image": IMAGE}]}
    assert DockerComponent.summary(one, size) == "1 container: web running (image cccccccccccc)"


def _seal(repo: Repository, components: dict[str, dict[str, Any]]) -> None:
    folder = repo.begin(SNAPSHOT)
    sections = {}
    for name, section in components.items():
        (folder / name).mkdir()
        content = json.dumps(section).encode()
        (folder / name / "state.json").write_bytes(content)
        sections[name] = {**section, "artifacts": {"state.json": {"size": len(content), "hash": _sha(content)}}}
    manifest = {"format": 2, "id": SNAPSHOT, "created": "2025-01-01T00:00:00+00:00", "host": "h1", "tags": []}
    repo.commit(SNAPSHOT, {**manifest, "size": 0, "components": sections})


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_snapshots_show_prints_a_docker_entry_as_its_containers_not_as_files(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo", validate=section_problem)
    repo.ensure()
    _seal(repo, {"web": DOCKER, "app": RELEASE})
    config = tmp_path / "aura.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repository": {"path": str(tmp_path / "repo")},
                "state": {"path": str(tmp_path / "state")},
                "logging": {"dir": str(tmp_path / "logs")},
                "components": {"app": {"type": "release", "path": "/srv/app"}},
            }
        )
    )
    result = CliRunner().invoke(cli, ["-c", str(config), "snapshots", "show", SNAPSHOT])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  web (docker) 2 containers: app-web running (image cccccccccccc), app-worker exited" in result.output
    assert "  app (release) /srv/app: current v1.2" in lines
    assert not any("(files)" in line or "KeyError" in line for line in lines)


# ---------------------------------------------------------------- the announcement of a restore


def test_each_type_describes_what_its_restore_would_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOP_DSN", "postgresql://app@127.0.0.1:6543/shop")
    config = _config(
        tmp_path,
        {
            "db": {"type": "postgres", "dsn_env": "SHOP_DSN"},
            "site": {"type": "files", "path": "/srv/uploads"},
            "app": {"type": "release", "path": "/srv/app"},
            "web": {"type": "docker", "containers": ["app-web"]},
        },
    )
    hosts = Inventory(config, hosts={"local": FakeHost("local")})
    assert build(config, "db", hosts).describe_restore(POSTGRES, None) == "into database shop on 127.0.0.1:6543"
    assert build(config, "db", hosts).describe_restore(POSTGRES, "copy") == "into database copy on 127.0.0.1:6543"
    assert build(config, "site", hosts).describe_restore(FILES, None) == "into /srv/uploads"
    assert build(config, "site", hosts).describe_restore(FILES, "/tmp/x") == "into /tmp/x"
    assert build(config, "app", hosts).describe_restore(RELEASE, None) == "into /srv/app (current -> v1.2)"
    assert build(config, "web", hosts).describe_restore(DOCKER, None) == "(recorded only, not restored)"
    entries = {"db": POSTGRES, "site": FILES, "web": DOCKER}
    text = announce.restore(config, SNAPSHOT, entries, "copy", None, hosts)
    assert text == (
        f"restoring snapshot {SNAPSHOT} from repository {tmp_path / 'repo'}: db into database copy on "
        "127.0.0.1:6543, site into /srv/uploads, web (recorded only, not restored)"
    )


def test_the_announcement_describes_components_on_the_commands_hosts(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"site": {"type": "files", "path": "/srv/uploads", "host": "app1"}, "app": {"type": "release", "path": "/a"}},
        hosts={"app1": {"local": True}},
    )
    hosts = Inventory(config, hosts={"local": FakeHost("local"), "app1": FakeHost("app1")})
    text = announce.backup(config, ["site", "app", "gone"], hosts)
    assert text == (
        f"backing up site (/srv/uploads on app1), app (releases in /a on local), gone (not in this configuration) "
        f"into repository {tmp_path / 'repo'}"
    )
    assert announce.deploy(config, "v2", None, hosts) == "deploying release v2 from <source> into /a/releases"


# ---------------------------------------------------------------- doctor, verify: protocol facts


def test_every_registered_type_declares_the_protocol_facts() -> None:
    for type_name in REGISTRY:
        cls: Any = component_class(type_name)
        assert isinstance(cls.local_tools, tuple) and isinstance(cls.stored_entries, frozenset)
        assert isinstance(cls.verify_when_artifacts_fail, bool) and callable(cls.summary)
    assert (FilesComponent.local_tools, FilesComponent.stored_entries) == (("rsync",), frozenset({TREE}))
    assert FilesComponent.verify_when_artifacts_fail and not PostgresComponent.verify_when_artifacts_fail


def _doctor_host() -> FakeHost:
    host = FakeHost("local")
    host.on("rsync", Result(0, b"rsync  version 3.2.7  protocol version 31\n", "", 0.0))
    host.add_file("/srv/a/x", "x")
    host.add_file("/srv/b/y", "y")
    return host


def test_doctor_checks_a_local_tool_once_for_every_component_that_needs_it(tmp_path: Path) -> None:
    files = {"a": {"type": "files", "path": "/srv/a"}, "b": {"type": "files", "path": "/srv/b"}}
    config = _config(tmp_path, files, state={"path": str(tmp_path / "state")})
    host = _doctor_host()
    checks, _ = doctor.run(config, Inventory(config, hosts={"local": host}))
    assert [c["check"] for c in checks if c["check"].startswith("tool ")] == ["tool rsync"]
    assert [argv[0] for argv in host.argvs].count("rsync") == 1


def test_doctor_checks_no_local_tool_when_no_component_needs_one(tmp_path: Path) -> None:
    config = _config(tmp_path, {"app": {"type": "release", "path": "/srv/a"}}, state={"path": str(tmp_path / "st")})
    host = _doctor_host()
    checks, _ = doctor.run(config, Inventory(config, hosts={"local": host}))
    assert not [c for c in checks if c["check"].startswith("tool ")]
    assert "rsync" not in [argv[0] for argv in host.argvs]


# ---------------------------------------------------------------- damage and the verified cache


def _files_snapshot(tmp_path: Path, index: bytes) -> Snapshot:
    folder = tmp_path / "snap"
    (folder / "site" / TREE).mkdir(parents=True)
    (folder / "site" / INDEX).write_bytes(index)
    section = {**FILES, "artifacts": {INDEX: {"size": len(index), "hash": _sha(index)}}}
    return Snapshot(SNAPSHOT, folder, {"checksum_algorithm": "sha256", "components": {"site": section}})


def test_a_files_damage_check_records_a_sealed_index_and_then_trusts_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _files_snapshot(tmp_path, b'{"p": "a", "t": "f"}\n')
    component = FilesComponent.unconfigured("site", snapshot.manifest["components"]["site"], FakeHost("local"))
    component.store = LocalHost()  # the snapshot folder is on this machine
    cache = VerifiedCache(tmp_path / "cache" / "verified-files.json")
    assert component.damage(snapshot, cache) is None
    assert list(cache.entries.values()) == [_sha(b'{"p": "a", "t": "f"}\n')]
    cache.save()

    def no_hashing(*_: Any, **__: Any) -> Any:
        raise AssertionError("hashed again")

    monkeypatch.setattr(stored, "stream_digest", no_hashing)
    assert component.damage(snapshot, VerifiedCache(cache.path)) is None  # the saved cache, read back


def test_a_changed_or_missing_index_is_damage_whatever_the_cache_says(tmp_path: Path) -> None:
    snapshot = _files_snapshot(tmp_path, b'{"p": "a", "t": "f"}\n')
    component = FilesComponent.unconfigured("site", snapshot.manifest["components"]["site"], FakeHost("local"))
    component.store = LocalHost()  # the snapshot folder is on this machine
    cache = VerifiedCache(tmp_path / "verified.json")
    assert component.damage(snapshot, cache) is None
    (snapshot.component_dir("site") / INDEX).write_bytes(b'{"p": "b", "t": "f"}\n')  # same size, new inode data
    assert "changed since the snapshot was sealed" in str(component.damage(snapshot, cache))
    os.unlink(snapshot.component_dir("site") / INDEX)
    assert component.damage(snapshot, cache) == f"site: {INDEX} is missing"


def test_the_other_types_see_no_damage_beyond_the_manifests_checks(tmp_path: Path) -> None:
    snapshot = Snapshot(SNAPSHOT, tmp_path, {"components": {"x": RELEASE}})
    cache = VerifiedCache(tmp_path / "verified.json")
    for cls, section in ((PostgresComponent, POSTGRES), (ReleaseComponent, RELEASE), (DockerComponent, DOCKER)):
        component: Component = cls.unconfigured("x", section, FakeHost())
        assert component.damage(snapshot, cache) is None
    assert cache.entries == {}


# ---------------------------------------------------------------- built on the command's hosts


def test_build_as_gives_the_class_asked_for_on_the_inventorys_host_or_refuses(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"app": {"type": "release", "path": "/srv/app", "host": "app1"}, "site": {"type": "files", "path": "/x"}},
        hosts={"app1": {"local": True}},
    )
    app1, local = FakeHost("app1"), FakeHost("local")
    hosts = Inventory(config, hosts={"app1": app1, "local": local})
    release = build_as(config, "app", hosts, ReleaseComponent)
    assert isinstance(release, ReleaseComponent) and release.host is app1 and release.store is local
    with pytest.raises(ConfigError, match="component site has type files; a release component is needed"):
        build_as(config, "site", hosts, ReleaseComponent)


def test_aura_ops_own_folders_are_resolved_on_the_control_machines_host(tmp_path: Path) -> None:
    local = FakeHost("local")
    local.add_file("/data/repo/format.json", "{}")
    local.add_symlink("/data/repo", "/backups")  # the configured repository path leads there
    own = SimpleNamespace(
        repository=SimpleNamespace(path=Path("/backups")),
        state=SimpleNamespace(path=Path("/st")),
        logging=SimpleNamespace(dir=Path("/logs")),
    )
    with pytest.raises(UsageError, match=r"/data/repo/site is inside the repository \(/data/repo\)"):
        targets.check(local, "/data/repo/site", own, to_path=True, local=local)
    assert targets.check(local, "/data/other", own, to_path=True, local=local) == Path("/data/other")


def test_whether_a_process_lives_is_public() -> None:
    assert pid_alive(os.getpid())
