"""Docker component (config ``type: docker``): containers chosen by name, by label, or as
Compose services (the ``com.docker.compose.project`` / ``.service`` labels Compose sets, so an
existing compose stack works unchanged), driven with the Docker SDK.

Containers start in the configured order and stop in reverse; each start waits for ``running``
and, when the container has a Docker healthcheck, ``healthy``, within ``timeout``; a container
that does not come up raises an error carrying its last log lines. ``stopped()`` is a context
manager that starts again whatever it stopped, whatever happens inside it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aura_ops import logs
from aura_ops.config import DockerConfig
from aura_ops.errors import AuraError, UnreachableError, UsageError
from aura_ops.hosts import Host
from aura_ops.repository import Snapshot, write_json

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
STATE = "containers.json"


def client(cfg: DockerConfig) -> Any:
    """A Docker SDK client (imported lazily); UnreachableError when the engine does not answer."""
    import docker

    url = cfg.url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        engine = docker.DockerClient(base_url=url, timeout=int(cfg.timeout) + 10)
        engine.ping()
    except docker.errors.DockerException as exc:
        raise UnreachableError(f"Docker engine at {url} unreachable: {exc}") from None
    return engine


def select(cfg: DockerConfig, engine: Any) -> list[Any]:
    """The configured containers, in start order."""
    import docker

    if cfg.containers:
        found = []
        for name in cfg.containers:
            try:
                found.append(engine.containers.get(name))
            except docker.errors.NotFound:
                raise UsageError(f"container {name!r} not found") from None
        return found
    if cfg.label:
        chosen = engine.containers.list(all=True, filters={"label": cfg.label})
        return sorted(chosen, key=lambda c: c.name)
    chosen = engine.containers.list(all=True, filters={"label": f"{COMPOSE_PROJECT}={cfg.compose_project}"})
    services = cfg.compose_services
    if services:
        missing = set(services) - {c.labels.get(COMPOSE_SERVICE) for c in chosen}
        if missing:
            raise UsageError(f"compose project {cfg.compose_project}: no container for service(s) {sorted(missing)}")
        chosen = [c for c in chosen if c.labels.get(COMPOSE_SERVICE) in services]
        return sorted(chosen, key=lambda c: (services.index(c.labels[COMPOSE_SERVICE]), c.name))
    return sorted(chosen, key=lambda c: (c.labels.get(COMPOSE_SERVICE, ""), c.name))


def _state(container: Any) -> tuple[str, str | None]:
    container.reload()
    state = container.attrs.get("State", {})
    health = state.get("Health", {}).get("Status") if state.get("Health") else None
    return state.get("Status", "unknown"), health


def _restarts(container: Any) -> int:
    return int(container.attrs.get("RestartCount", 0))


def _tail(container: Any, lines: int) -> str:
    try:
        text = container.logs(tail=lines).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - the logs are a courtesy in an error message
        return "(logs unavailable)"
    return text or "(no log output)"


def wait_up(container: Any, cfg: DockerConfig) -> str:
    """Wait for healthy (with a healthcheck) or for ``settle`` seconds of running without a
    restart (without one: a process that dies right after starting must not pass); AuraError
    with its last log lines otherwise."""
    deadline = time.monotonic() + cfg.timeout
    status, health = _state(container)
    restarts = _restarts(container)
    running_since = None
    while time.monotonic() < deadline:
        if status == "running" and health == "healthy":
            return health
        if status == "running" and health is None and _restarts(container) == restarts:
            running_since = running_since or time.monotonic()
            if time.monotonic() - running_since >= cfg.settle:
                return status
        else:
            running_since = None
            restarts = _restarts(container)
        if status in ("exited", "dead"):
            break
        time.sleep(0.1)
        status, health = _state(container)
    where = f"{status}" + (f", {health}" if health else "")
    raise AuraError(
        f"container {container.name} did not come up within {cfg.timeout:g}s ({where}); "
        f"last log lines:\n{_tail(container, cfg.log_lines)}"
    )


def start(cfg: DockerConfig, names: list[str] | None = None) -> list[str]:
    """Start the configured containers (or only ``names``) in order; return those started."""
    engine = client(cfg)
    started = []
    for container in select(cfg, engine):
        if names is not None and container.name not in names:
            continue
        container.start()
        state = wait_up(container, cfg)
        logs.get().info("container.started", container=container.name, state=state)
        started.append(container.name)
    return started


def stop(cfg: DockerConfig) -> list[str]:
    """Stop the running configured containers in reverse order; return the names stopped."""
    engine = client(cfg)
    stopped = []
    for container in reversed(select(cfg, engine)):
        status, _ = _state(container)
        if status != "running":
            continue
        container.stop(timeout=int(cfg.timeout))
        logs.get().info("container.stopped", container=container.name)
        stopped.append(container.name)
    return stopped


@contextlib.contextmanager
def stopped(cfg: DockerConfig) -> Iterator[list[str]]:
    """Stop the containers for the block; whatever happens, start again what was stopped."""
    names = stop(cfg)
    try:
        yield names
    finally:
        if names:
            start(cfg, names)


def status(cfg: DockerConfig) -> list[dict[str, Any]]:
    engine = client(cfg)
    result = []
    for container in select(cfg, engine):
        state, health = _state(container)
        result.append(
            {
                "name": container.name,
                "status": state,
                "health": health,
                "image": container.attrs.get("Image", ""),
                "labels": dict(container.labels),
            }
        )
    return result


# ---------------------------------------------------------------- as a snapshot component


def snapshot(host: Host, name: str, cfg: DockerConfig, dest: Path, previous: Snapshot | None) -> dict[str, Any]:
    """Record each container's image id and state (what a rollback needs to know)."""
    from aura_ops.checksum import file_digest

    recorded = status(cfg)
    write_json(dest / STATE, recorded)
    digest, size = file_digest(dest / STATE)
    return {
        "type": "docker",
        "containers": [{k: c[k] for k in ("name", "status", "image")} for c in recorded],
        "artifacts": {STATE: {"size": size, "hash": digest}},
    }


def verify(host: Host, name: str, cfg: DockerConfig | None, snapshot: Snapshot, deep: bool) -> dict[str, Any]:
    return {"containers": len(snapshot.manifest["components"][name].get("containers", []))}


def doctor(host: Host, name: str, cfg: DockerConfig) -> list[dict[str, Any]]:
    try:
        found = status(cfg)
    except AuraError as exc:
        return [{"check": f"{name}: containers", "ok": False, "detail": str(exc), "exit_code": exc.exit_code}]
    detail = ", ".join(f"{c['name']} {c['status']}" for c in found) or "none found"
    return [{"check": f"{name}: containers", "ok": bool(found), "detail": detail, "exit_code": 2}]
