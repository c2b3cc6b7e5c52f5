"""The actions that work on components, run against a FakeHost: ``snapshot``, ``restore``,
``services_stop``/``services_start`` and ``preflight`` (the host-only ones are in
test_actions_fakehost.py). The components live on host ``app1``, a FakeHost handed to the
run's inventory; the control machine (the repository, the journal) is this machine, under
tmp_path. So every byte a snapshot stores was read through the fake, and a restore is seen
only in the fake's files.

Not here: ``sql`` (tests/unit/test_postgres_sql.py), and ``database_clone*``: they drive
PostgreSQL itself through its driver (no host operation to fake), covered by the integration
tests against a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from aura_ops.config import Config, parse
from aura_ops.engine.actions import REGISTRY, Context
from aura_ops.errors import AuraError
from aura_ops.hosts.fake import FakeHost
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import Repository
from aura_ops.state import temporaries
from aura_ops.state.journal import Journal

SOURCE = "/srv/uploads"
STEPS = [("snap", "snapshot"), ("restore", "restore"), ("stop", "services_stop"), ("start", "services_start")]


def _config(tmp_path: Path, **components: Any) -> Config:
    return parse(
        {
            "repository": {"path": str(tmp_path / "repo")},
            "state": {"path": str(tmp_path / "state")},
            "hosts": {"app1": {"local": True}},
            "components": components,
            "deploy": {"services": "web"} if "web" in components else {},
        }
    )


def _ctx(config: Config, app: FakeHost, step: str, journal: Journal | None = None) -> Context:
    hosts = Inventory(config, hosts={"app1": app})  # local: this machine (the repository's)
    return Context(config, "r1", step, config.state.path / "runs" / "r1", None, hosts, journal)


def _params(action: str, values: dict[str, Any]) -> Any:
    return REGISTRY[action].Params.model_validate(values)


def _uploads() -> FakeHost:
    app = FakeHost("app1")
    app.add_file(f"{SOURCE}/a.txt", "alpha")
    app.add_file(f"{SOURCE}/sub/b.txt", "beta", mode=0o600)
    app.add_symlink("sub/b.txt", f"{SOURCE}/link")
    return app


@pytest.fixture
def files_config(tmp_path: Path) -> Iterator[Config]:
    config = _config(tmp_path, uploads={"type": "files", "host": "app1", "path": SOURCE})
    with temporaries.bound(config):
        yield config


def test_the_snapshot_action_stores_what_the_fake_host_holds_and_runs_no_program(files_config: Config) -> None:
    app = _uploads()
    outputs = REGISTRY["snapshot"].apply(_params("snapshot", {"tags": ["t1"]}), _ctx(files_config, app, "snap"))
    snapshot = Repository(files_config.repository.path).get(outputs["snapshot_id"])
    assert snapshot.manifest["tags"] == ["t1"] and outputs["size"] == snapshot.manifest["size"] > 0
    tree = snapshot.component_dir("uploads") / "tree"
    assert (tree / "a.txt").read_bytes() == b"alpha" and (tree / "sub" / "b.txt").read_bytes() == b"beta"
    assert (tree / "link").readlink() == Path("sub/b.txt")
    assert app.commands == []  # read through the host's file operations alone
    assert list((files_config.repository.path / "snapshots").glob("*.partial")) == []  # committed


def test_the_restore_action_puts_the_fake_tree_back_as_it_was_snapshotted(files_config: Config) -> None:
    app = _uploads()
    taken = REGISTRY["snapshot"].apply(_params("snapshot", {}), _ctx(files_config, app, "snap"))
    app.write_atomic(f"{SOURCE}/a.txt", b"changed", mode=0o644)
    app.remove(f"{SOURCE}/sub/b.txt")
    app.add_file(f"{SOURCE}/new.txt", "made after the snapshot")
    params = _params("restore", {"snapshot": taken["snapshot_id"]})
    report = REGISTRY["restore"].apply(params, _ctx(files_config, app, "restore"))
    assert report["snapshot"] == taken["snapshot_id"] and list(report["components"]) == ["uploads"]
    assert app.read_bytes(f"{SOURCE}/a.txt") == b"alpha"
    assert app.read_bytes(f"{SOURCE}/sub/b.txt") == b"beta"
    assert app.stat(f"{SOURCE}/sub/b.txt").mode & 0o7777 == 0o600
    assert app.readlink(f"{SOURCE}/link") == "sub/b.txt"
    assert not app.exists(f"{SOURCE}/new.txt")


def test_the_restore_action_to_another_path_leaves_the_source_alone(files_config: Config) -> None:
    app = _uploads()
    taken = REGISTRY["snapshot"].apply(_params("snapshot", {}), _ctx(files_config, app, "snap"))
    app.write_atomic(f"{SOURCE}/a.txt", b"changed", mode=0o644)
    params = _params("restore", {"snapshot": taken["snapshot_id"], "to_path": "/srv/copy"})
    REGISTRY["restore"].apply(params, _ctx(files_config, app, "restore"))
    assert app.read_bytes("/srv/copy/a.txt") == b"alpha" and app.read_bytes("/srv/copy/sub/b.txt") == b"beta"
    assert app.read_bytes(f"{SOURCE}/a.txt") == b"changed"


class _Container:
    def __init__(self, engine: _Engine, name: str) -> None:
        self.engine, self.name, self.labels = engine, name, {}
        self.attrs: dict[str, Any] = {"State": {"Status": "running"}, "Image": f"sha256:{name}", "RestartCount": 0}

    def reload(self) -> None:
        pass

    def start(self) -> None:
        self.engine.calls.append(("start", self.name))
        self.attrs["State"] = {"Status": "running"}

    def stop(self, timeout: int) -> None:
        self.engine.calls.append(("stop", self.name))
        self.attrs["State"] = {"Status": "exited"}


class _Engine:
    """What ``docker.DockerClient(base_url=...)`` gives in these tests: containers web, worker."""

    calls: list[tuple[str, str]] = []
    urls: list[str] = []
    all: dict[str, _Container] = {}

    def __init__(self, base_url: str, timeout: int) -> None:
        _Engine.urls.append(base_url)
        self.containers = self

    def get(self, name: str) -> _Container:
        found = _Engine.all.get(name)
        if found is None:
            raise docker.errors.NotFound(f"No such container: {name}")
        found.engine = self  # type: ignore[assignment]
        return found

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> type[_Engine]:
    _Engine.calls, _Engine.urls = [], []
    _Engine.all = {name: _Container(_Engine, name) for name in ("web-1", "worker-1")}  # type: ignore[arg-type]
    monkeypatch.setattr(docker, "DockerClient", _Engine)
    return _Engine


def test_services_stop_and_start_reach_the_engine_through_the_fake_hosts_tunnel(
    tmp_path: Path, engine: type[_Engine]
) -> None:
    web = {"type": "docker", "host": "app1", "url": "tcp://127.0.0.1:2375", "containers": ["web-1", "worker-1"]}
    config = _config(tmp_path, web=web)
    app = FakeHost("app1")
    stopped = REGISTRY["services_stop"].apply(_params("services_stop", {}), _ctx(config, app, "stop"))
    assert stopped == {"stopped": ["worker-1", "web-1"]}  # the reverse of the configured order
    assert app.tunnels and app.tunnels[0] == ("127.0.0.1", 2375)  # reached from the container host
    REGISTRY["services_stop"].compensate(_params("services_stop", {}), _ctx(config, app, "stop"), stopped)
    assert engine.calls == [("stop", "worker-1"), ("stop", "web-1"), ("start", "web-1"), ("start", "worker-1")]
    engine.calls.clear()
    started = REGISTRY["services_start"].apply(_params("services_start", {}), _ctx(config, app, "start"))
    REGISTRY["services_start"].compensate(_params("services_start", {}), _ctx(config, app, "start"), started)
    assert started == {"started": ["web-1", "worker-1"]}
    assert engine.calls[:2] == [("start", "web-1"), ("start", "worker-1")]
    assert engine.calls[2:] == [("stop", "worker-1"), ("stop", "web-1")]  # the undo stops them again


def test_services_actions_without_services_do_nothing(files_config: Config, engine: type[_Engine]) -> None:
    app = _uploads()
    assert REGISTRY["services_stop"].apply(_params("services_stop", {}), _ctx(files_config, app, "stop")) == {
        "stopped": []
    }
    assert engine.urls == [] and app.tunnels == []


def test_preflight_checks_the_component_on_its_fake_host(files_config: Config) -> None:
    app = _uploads()
    outputs = REGISTRY["preflight"].apply(_params("preflight", {}), _ctx(files_config, app, "pre"))
    assert outputs["checks"] >= 3  # rsync on this machine, the source on app1, the repository


def test_preflight_fails_naming_a_source_the_fake_host_lacks(files_config: Config) -> None:
    with pytest.raises(AuraError, match=f"preflight failed: uploads: source {SOURCE}: missing or not readable"):
        REGISTRY["preflight"].apply(_params("preflight", {}), _ctx(files_config, FakeHost("app1"), "pre"))
