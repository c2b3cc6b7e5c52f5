"""DockerComponent against a FakeHost and a scripted Docker SDK client: how it reaches the
engine (through the host's tunnel), the order it stops and starts containers in, what it records
in a snapshot (written through the store host), and that a restore changes nothing. The same
behaviour against a real Docker engine is in tests/integration/test_containers.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import docker
import pytest

from aura_ops.components.base import RestoreRequest, SnapshotTarget
from aura_ops.components.containers import DockerComponent, DockerManifest
from aura_ops.config import DockerConfig
from aura_ops.errors import UnreachableError, UsageError
from aura_ops.hosts.fake import FakeHost
from aura_ops.repository import Snapshot


class FakeContainer:
    def __init__(self, engine: FakeEngine, name: str, status: str, labels: dict[str, str] | None = None) -> None:
        self.engine, self.name, self.labels = engine, name, labels or {}
        self.attrs: dict[str, Any] = {"State": {"Status": status}, "Image": f"sha256:{name}", "RestartCount": 0}

    def reload(self) -> None:
        pass

    def start(self) -> None:
        self.engine.calls.append(("start", self.name))
        self.attrs["State"] = {"Status": "running", "Health": {"Status": "healthy"}}

    def stop(self, timeout: int) -> None:
        self.engine.calls.append(("stop", self.name))
        self.attrs["State"] = {"Status": "exited"}

    def logs(self, tail: int) -> bytes:
        return b""


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, name: str) -> FakeContainer:
        for container in self.engine.all:
            if container.name == name:
                return container
        raise docker.errors.NotFound(f"No such container: {name}")

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:  # noqa: A002 - the SDK's name
        key, _, value = filters["label"].partition("=")
        return [c for c in self.engine.all if key in c.labels and (not value or c.labels[key] == value)]


class FakeEngine:
    """What ``docker.DockerClient(base_url=...)`` returns in these tests."""

    made: list[FakeEngine] = []

    def __init__(self, base_url: str, timeout: int) -> None:
        self.base_url = base_url
        self.calls: list[tuple[str, str]] = []
        self.closed = False
        self.all = [FakeContainer(self, "web", "running"), FakeContainer(self, "worker", "running")]
        self.containers = FakeContainers(self)
        FakeEngine.made.append(self)

    def ping(self) -> bool:
        if "refused" in self.base_url:
            raise docker.errors.DockerException("Connection refused")
        return True

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def fake_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine.made = []
    monkeypatch.setattr(docker, "DockerClient", FakeEngine)


def component(host: FakeHost, **selector: Any) -> DockerComponent:
    config = DockerConfig.model_validate({"type": "docker", "url": "tcp://127.0.0.1:2375", "timeout": 5, **selector})
    return DockerComponent("app", config, host, store=FakeHost())


def test_the_engine_is_reached_through_the_host_tunnel_and_closed_after() -> None:
    host = FakeHost()
    found = component(host, containers=["web"]).status()
    assert host.tunnels == [("127.0.0.1", 2375)]
    assert [e.base_url for e in FakeEngine.made] == ["tcp://127.0.0.1:2375"]
    assert FakeEngine.made[0].closed
    assert found == [
        {"name": "web", "status": "running", "health": None, "image": "sha256:web", "labels": {}},
    ]


def test_a_socket_url_is_not_tunnelled() -> None:
    host = FakeHost()
    config = DockerConfig(type="docker", url="unix:///var/run/docker.sock", containers=["web"])
    DockerComponent("app", config, host).status()
    assert host.tunnels == []
    assert FakeEngine.made[0].base_url == "unix:///var/run/docker.sock"


def test_an_engine_that_does_not_answer_is_unreachable_exit_6() -> None:
    config = DockerConfig(type="docker", url="tcp://127.0.0.1:1", containers=["web"])
    host = FakeHost()
    original = host.tunnel

    def refusing(address: str, port: int) -> Any:
        return original("refused", port)

    host.tunnel = refusing  # type: ignore[method-assign]
    with pytest.raises(UnreachableError) as caught:
        DockerComponent("app", config, host).status()
    assert caught.value.exit_code == 6
    assert "tcp://127.0.0.1:1 unreachable" in str(caught.value)


def test_stop_goes_in_reverse_order_and_start_in_order_only_what_was_stopped() -> None:
    app = component(FakeHost(), containers=["web", "worker"])
    with app.stopped() as names:
        assert names == ["worker", "web"]
    calls = [call for engine in FakeEngine.made for call in engine.calls]
    assert calls == [("stop", "worker"), ("stop", "web"), ("start", "web"), ("start", "worker")]


def test_a_container_that_is_not_there_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="container 'db' not found"):
        component(FakeHost(), containers=["web", "db"]).stop()


def test_the_snapshot_is_written_through_the_store_and_its_checksum_recorded(tmp_path: Path) -> None:
    app = component(FakeHost(), containers=["web", "worker"])
    folder = tmp_path / "snap" / "app"
    app.store.mkdir(str(folder), parents=True)
    section = app.snapshot(SnapshotTarget("20261201-000000-001", folder))
    assert not folder.exists()  # nothing written to the local disk: the store is the fake
    stored = app.store.read_bytes(str(folder / "containers.json"))
    state = app.store.stat(str(folder / "containers.json"))
    assert state is not None and state.mode & 0o777 == 0o600
    assert [c["name"] for c in json.loads(stored)] == ["web", "worker"]
    artifact = section.artifacts["containers.json"]
    assert (artifact.size, artifact.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert DockerManifest.model_validate(section.section()) == section
    assert [(c.name, c.status, c.image) for c in section.containers] == [
        ("web", "running", "sha256:web"),
        ("worker", "running", "sha256:worker"),
    ]


def test_a_restore_reports_and_changes_nothing(tmp_path: Path) -> None:
    app = component(FakeHost(), label="role=app")
    recorded = {"type": "docker", "containers": [{"name": "web", "status": "running", "image": "sha256:old"}]}
    snapshot = Snapshot("20261201-000000-001", tmp_path, {"components": {"app": recorded}})
    assert app.restore_target(snapshot, RestoreRequest()) is None
    report = app.restore(snapshot, RestoreRequest(replace=True))
    assert report["containers"] == recorded["containers"]
    assert FakeEngine.made == []  # the engine was not even asked
