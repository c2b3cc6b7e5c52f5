"""The docker component against a real Docker engine (dockerd --bridge=none, host networking,
an image imported offline), per ../shared/TESTENV.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aura_ops.components.containers import DockerComponent
from aura_ops.config import DockerConfig
from aura_ops.dev.sandbox import free_port, wait_until
from aura_ops.errors import AuraError, UsageError
from aura_ops.hosts import LocalHost
from tests.conftest import Aura, base_config

LABEL = "aura-test=1"


@pytest.fixture
def make(engine: Any, tmp_path: Path) -> Iterator[Any]:
    created: list[Any] = []

    def create(name: str, command: list[str], labels: dict[str, str] | None = None, **extra: Any) -> Any:
        container = engine.containers.create(
            "aura-test/busybox",
            command,
            name=f"{name}-{tmp_path.name[-12:]}",
            network_mode="host",
            init=True,  # tini as PID 1: a stop is a SIGTERM that is honoured, not a timeout
            labels={"aura-test": "1", **(labels or {})},
            **extra,
        )
        created.append(container)
        return container

    yield create
    for container in created:
        container.remove(force=True)


def cfg(engine: Any, **selector: Any) -> DockerComponent:
    """A docker component choosing containers by ``selector`` on the test's engine."""
    return DockerComponent("web", DockerConfig(type="docker", url=engine.url, timeout=15, **selector), LocalHost())


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def test_start_in_order_stop_in_reverse_and_wait_for_healthy(engine: Any, make: Any, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "health").write_text("ok\n")
    port = free_port()
    web = make(
        "web",
        ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
        volumes={str(www): {"bind": "/www", "mode": "ro"}},
        healthcheck={
            "test": ["CMD", "test", "-f", "/www/health"],
            "interval": 500_000_000,
            "timeout": 1_000_000_000,
            "retries": 3,
        },
    )
    worker = make("worker", ["sleep", "300"])
    services = cfg(engine, containers=[worker.name, web.name])
    assert services.start() == [worker.name, web.name]
    assert started_at(worker) < started_at(web)
    assert services.status()[1]["health"] == "healthy"
    assert services.stop() == [web.name, worker.name]
    assert [c["status"] for c in services.status()] == ["exited", "exited"]


def test_stopped_context_starts_again_whatever_happens(engine: Any, make: Any) -> None:
    one = make("one", ["sleep", "300"])
    one.start()
    services = cfg(engine, label=LABEL)
    with pytest.raises(RuntimeError, match="deploy step failed"), services.stopped() as names:
        assert one.name in names
        assert services.status()[0]["status"] == "exited"
        raise RuntimeError("deploy step failed")
    assert wait_until(lambda: services.status()[0]["status"] == "running", 15)


def test_a_container_that_does_not_come_up_reports_its_last_log_lines(engine: Any, make: Any) -> None:
    broken = make("broken", ["sh", "-c", "echo cannot open config file; exit 3"])
    with pytest.raises(AuraError) as caught:
        cfg(engine, containers=[broken.name]).start()
    assert f"container {broken.name} did not come up" in str(caught.value)
    assert "cannot open config file" in str(caught.value)


def test_compose_services_are_found_by_the_labels_compose_sets(engine: Any, make: Any) -> None:
    project = {"com.docker.compose.project": "shop"}
    db = make("shop-db", ["sleep", "300"], labels={**project, "com.docker.compose.service": "db"})
    web = make("shop-web", ["sleep", "300"], labels={**project, "com.docker.compose.service": "web"})
    services = cfg(engine, compose_project="shop", compose_services=["db", "web"])
    assert services.start() == [db.name, web.name]
    assert services.stop() == [web.name, db.name]
    with pytest.raises(UsageError, match="no container for service"):
        cfg(engine, compose_project="shop", compose_services=["cache"]).start()


def test_unknown_container_and_unreachable_engine_are_clear_errors(engine: Any, aura: Aura, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="container 'nope' not found"):
        cfg(engine, containers=["nope"]).start()
    aura.write_config(
        base_config({"web": {"type": "docker", "url": f"unix://{tmp_path}/none.sock", "containers": ["x"]}})
    )
    result = aura("doctor", check=6)
    assert "unreachable" in result.stdout + result.stderr


def test_snapshot_records_image_ids(engine: Any, make: Any, aura: Aura) -> None:
    one = make("rec", ["sleep", "300"])
    one.start()
    aura.write_config(base_config({"web": {"type": "docker", "url": engine.url, "label": LABEL}}))
    manifest = aura.json("backup")
    recorded = manifest["components"]["web"]["containers"]
    assert recorded[0]["name"] == one.name
    assert recorded[0]["image"].startswith("sha256:")
    assert recorded[0]["status"] == "running"


def test_container_check_passes_running_and_healthy_and_names_what_is_not(engine: Any, make: Any) -> None:
    from aura_ops.config import Config, ContainerCheck
    from aura_ops.engine import checks

    healthy = make(
        "ok",
        ["sleep", "300"],
        healthcheck={"test": ["CMD", "true"], "interval": 200_000_000, "timeout": 1_000_000_000, "retries": 1},
    )
    sick = make(
        "sick",
        ["sleep", "300"],
        healthcheck={"test": ["CMD", "false"], "interval": 200_000_000, "timeout": 1_000_000_000, "retries": 1},
    )
    plain = make("plain", ["sleep", "300"])
    config = Config.model_validate(
        {
            "repository": {"path": "/nonexistent"},
            "components": {
                "web": {"type": "docker", "url": engine.url, "containers": [healthy.name, sick.name, plain.name]}
            },
        }
    )

    def check(*names: str, deadline: float = 5) -> ContainerCheck:
        return ContainerCheck(
            type="container", component="web", containers=list(names), deadline=deadline, interval=0.2
        )

    with pytest.raises(checks.CheckFailed, match=f"container {plain.name} is created"):
        checks.wait_for(check(plain.name, deadline=0.5), config)
    for container in (healthy, sick, plain):
        container.start()
    passed = checks.wait_for(check(healthy.name, plain.name), config)
    assert passed["detail"] == f"{healthy.name} healthy, {plain.name} running"
    assert passed["check"] == f"container web ({healthy.name}, {plain.name})"
    with pytest.raises(checks.CheckFailed, match=f"container {sick.name} is (starting|unhealthy)"):
        checks.wait_for(check(sick.name, deadline=1), config)
    with pytest.raises(checks.CheckFailed, match="no container gone"):
        checks.probe(check("gone"), config)


def test_a_dockerd_started_here_leaves_no_mount_or_folder(engine: Any) -> None:
    """dockerd leaves its default network namespace bind-mounted under its exec root when it
    exits; left there, every test run leaked a mount and ``make demo`` could not run twice."""
    import docker

    from aura_ops.dev.sandbox import DockerDaemon, import_busybox_image, mounts_under

    daemon = DockerDaemon().start()
    if daemon.process is None:
        pytest.skip("the system's Docker engine answers; no dockerd was started here to stop")
    root = daemon.root
    try:
        client = docker.DockerClient(base_url=daemon.url)
        import_busybox_image(client)
        # The first container, even with host networking, makes dockerd mount the namespace.
        client.containers.run("aura-test/busybox", ["true"], network_mode="host", remove=True)
        client.close()
    finally:
        daemon.stop()
    assert mounts_under(root) == []
    assert not root.exists()
