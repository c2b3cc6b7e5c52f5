"""Docker component (config ``type: docker``): containers chosen by name, by label, or as
Compose services (the ``com.docker.compose.project`` / ``.service`` labels Compose sets, so an
existing compose stack works unchanged), driven with the Docker SDK.

Containers start in the configured order and stop in reverse; each start waits for ``running``
and, when the container has a Docker healthcheck, ``healthy``, within ``timeout``; a container
that does not come up raises an error carrying its last log lines. ``stopped()`` is a context
manager that starts again whatever it stopped, whatever happens inside it.

``DockerComponent`` is the component and the service (``base.Service``); its manifest section
(``DockerManifest``) records each container's image id and state, which a restore reports and
does not change. The SDK (imported lazily) talks to the engine's API; its errors become
``AuraError`` subclasses here (an engine that does not answer is ``UnreachableError``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict

from aura_ops import checksum, logs
from aura_ops.components.base import ComponentManifest, RestoreRequest, RestoreTarget, SnapshotTarget
from aura_ops.config import DockerConfig
from aura_ops.errors import AuraError, ConfigError, UnreachableError, UsageError, first_line
from aura_ops.hosts import Host
from aura_ops.repository import Snapshot, json_bytes

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
STATE = "containers.json"
P = ParamSpec("P")
R = TypeVar("R")


def engine_url(cfg: DockerConfig) -> str:
    """Where the engine's API is, as seen from the component's host."""
    return cfg.url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@contextlib.contextmanager
def client(cfg: DockerConfig, host: Host) -> Iterator[Any]:
    """A Docker SDK client (imported lazily) of the engine on ``host``, for the block; a TCP
    endpoint is reached through ``host.tunnel`` (the same address on a local host). A socket
    path is the control machine's own. UnreachableError when the engine does not answer."""
    import docker

    url = engine_url(cfg)
    endpoint = urllib.parse.urlsplit(url)
    with contextlib.ExitStack() as stack:
        if endpoint.scheme in ("tcp", "http", "https") and endpoint.hostname:
            default = 2376 if endpoint.scheme == "https" else 2375
            address, port = stack.enter_context(host.tunnel(endpoint.hostname, endpoint.port or default))
            netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            url = urllib.parse.urlunsplit(endpoint._replace(netloc=netloc))
        try:
            engine = docker.DockerClient(base_url=url, timeout=int(cfg.timeout) + 10)
            engine.ping()
        except docker.errors.DockerException as exc:
            raise UnreachableError(f"Docker engine at {engine_url(cfg)} unreachable: {exc}") from None
        stack.callback(engine.close)
        yield engine


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


def _translated(name: str, exc: BaseException) -> AuraError | None:
    """An SDK or transport error as the AuraError a user reads (None: not one of theirs). The
    SDK raises ``requests`` errors when the engine goes away mid-request."""
    try:
        import docker
        import requests
    except ImportError:
        return None
    if isinstance(exc, requests.exceptions.RequestException):
        return UnreachableError(f"{name}: the Docker engine stopped answering: {first_line(exc)}")
    if isinstance(exc, docker.errors.NotFound):
        return AuraError(f"{name}: {first_line(exc)} (removed while aura-ops was using it?)")
    if isinstance(exc, docker.errors.DockerException):
        return AuraError(f"{name}: Docker: {first_line(exc)}")
    return None


def engine_errors(
    function: Callable[Concatenate[DockerComponent, P], R],
) -> Callable[Concatenate[DockerComponent, P], R]:
    """Turn an SDK error escaping a component operation into an AuraError naming the component."""

    @functools.wraps(function)
    def wrapper(self: DockerComponent, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(self, *args, **kwargs)
        except AuraError:
            raise
        except Exception as exc:
            translated = _translated(self.name, exc)
            if translated is None:
                raise
            raise translated from None

    return wrapper


# ---------------------------------------------------------------- the manifest section


class ContainerRecord(BaseModel):
    """One container as a snapshot recorded it."""

    model_config = ConfigDict(extra="allow")

    name: str
    status: str
    image: str


class DockerManifest(ComponentManifest):
    """A docker component's part of a snapshot's manifest: each container's name, state and
    image id (artifact ``containers.json`` holds the full status, labels and health included)."""

    containers: list[ContainerRecord]
    seconds: float | None = None  # set by the backup workflow


# ---------------------------------------------------------------- the component


class DockerComponent:
    """The configured containers (config ``type: docker``) on the Docker engine of its host.

    ``config`` may be None for a snapshot's component that is no longer configured: its part
    of a snapshot can still be verified and "restored" (reported). The engine is reached at
    ``url`` (else ``$DOCKER_HOST``, else the default socket)."""

    manifest_model: ClassVar[type[ComponentManifest]] = DockerManifest
    type: ClassVar[str] = "docker"
    restore_to: ClassVar[str | None] = None

    def __init__(self, name: str, config: DockerConfig | None, host: Host, store: Host | None = None) -> None:
        if config is not None and not isinstance(config, DockerConfig):
            raise ConfigError(f"component {name} is not a docker component")
        self.name = name
        self.config = config
        self.host = host
        self.store = store if store is not None else host

    @classmethod
    def unconfigured(cls, name: str, section: dict[str, Any], host: Host) -> DockerComponent:
        """Without its configuration: what the snapshot recorded only (acting raises UsageError)."""
        return cls(name, None, host)

    def configured(self) -> DockerConfig:
        """Its configuration; UsageError when it is not in the configuration."""
        if self.config is None:
            raise UsageError(f"component {self.name} is not in the configuration: no containers to act on")
        return self.config

    def describe(self) -> str:
        """``containers app-web, app-worker`` (or the label, or the compose project)."""
        cfg = self.config
        if cfg is None:
            return "not in this configuration"
        chosen = ", ".join(cfg.containers) or cfg.label or f"compose project {cfg.compose_project}"
        return f"containers {chosen}"

    # -- the service ----------------------------------------------------------------------------

    @engine_errors
    def status(self) -> list[dict[str, Any]]:
        """Each chosen container: name, status, health (None without a healthcheck), image id, labels."""
        cfg = self.configured()
        with client(cfg, self.host) as engine:
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

    @engine_errors
    def start(self, names: list[str] | None = None) -> list[str]:
        """Start the configured containers (or only ``names``) in order, each waited for
        (``wait_up``); return those started."""
        cfg = self.configured()
        started = []
        with client(cfg, self.host) as engine:
            for container in select(cfg, engine):
                if names is not None and container.name not in names:
                    continue
                container.start()
                state = wait_up(container, cfg)
                logs.get().info("container.started", container=container.name, state=state)
                started.append(container.name)
        return started

    @engine_errors
    def stop(self) -> list[str]:
        """Stop the running configured containers in reverse order; return the names stopped."""
        cfg = self.configured()
        stopped = []
        with client(cfg, self.host) as engine:
            for container in reversed(select(cfg, engine)):
                status, _ = _state(container)
                if status != "running":
                    continue
                container.stop(timeout=int(cfg.timeout))
                logs.get().info("container.stopped", container=container.name)
                stopped.append(container.name)
        return stopped

    @contextlib.contextmanager
    def stopped(self) -> Iterator[list[str]]:
        """Stop the containers for the block; whatever happens, start again what was stopped."""
        names = self.stop()
        try:
            yield names
        finally:
            if names:
                self.start(names)

    def check(self) -> list[dict[str, Any]]:
        """Each chosen container as a check: ok when running and, with a healthcheck, healthy
        (``{"check", "ok", "detail"}``; an engine that cannot be asked is one failed check)."""
        try:
            found = self.status()
        except AuraError as exc:
            return [{"check": f"{self.name}: containers", "ok": False, "detail": str(exc), "exit_code": exc.exit_code}]
        return [
            {
                "check": f"{self.name}: container {c['name']}",
                "ok": c["status"] == "running" and c["health"] in (None, "healthy"),
                "detail": c["health"] or c["status"],
            }
            for c in found
        ]

    # -- as a snapshot component ----------------------------------------------------------------

    def snapshot(self, target: SnapshotTarget) -> DockerManifest:
        """Record each container's image id and state (what a rollback needs to know), written
        into ``target.folder`` through the store host."""
        recorded = self.status()
        data = json_bytes(recorded)
        self.store.write_atomic(str(target.folder / STATE), data, mode=0o600)
        digest = checksum.new()
        digest.update(data)
        return DockerManifest.model_validate(
            {
                "type": "docker",
                "containers": [{k: c[k] for k in ("name", "status", "image")} for c in recorded],
                "artifacts": {STATE: {"size": len(data), "hash": digest.hexdigest()}},
            }
        )

    def verify(self, snapshot: Snapshot, deep: bool) -> dict[str, Any]:
        """Nothing to check beyond the artifact's checksum (the workflow's): how many containers."""
        return {"containers": len(snapshot.manifest["components"][self.name].get("containers", []))}

    def damage(self, snapshot: Snapshot, verified: object = None) -> str | None:
        """None: nothing beyond the manifest's checksums to distrust."""
        return None

    def restore_target(self, snapshot: Snapshot, request: RestoreRequest) -> RestoreTarget | None:
        """None: a restore writes nothing (container images and states are recorded only)."""
        return None

    def restore(self, snapshot: Snapshot, request: RestoreRequest) -> dict[str, Any]:
        """Report what the snapshot recorded; nothing is changed."""
        return {
            "containers": snapshot.manifest["components"][self.name].get("containers", []),
            "note": "container image ids and states are recorded, not restored",
        }

    def doctor(self) -> list[dict[str, Any]]:
        """One check: the engine answers and the chosen containers exist (their states listed)."""
        try:
            found = self.status()
        except AuraError as exc:
            return [{"check": f"{self.name}: containers", "ok": False, "detail": str(exc), "exit_code": exc.exit_code}]
        detail = ", ".join(f"{c['name']} {c['status']}" for c in found) or "none found"
        return [{"check": f"{self.name}: containers", "ok": bool(found), "detail": detail, "exit_code": 2}]

    # -- what workflows and the CLI ask of its type (Component protocol) --------------------------

    local_tools: ClassVar[tuple[str, ...]] = ()
    stored_entries: ClassVar[frozenset[str]] = frozenset()
    temporary_name_folders: ClassVar[tuple[str, ...]] = ()
    verify_when_artifacts_fail: ClassVar[bool] = False

    @classmethod
    def summary(cls, section: dict[str, Any], size: Callable[[float], str]) -> str:
        """``2 containers: app-web running (image 0123456789ab), app-worker exited (image ...)``:
        the states recorded (a restore puts none of them back)."""
        recorded = DockerManifest.model_validate(section).containers
        if not recorded:
            return "no containers recorded"
        each = [f"{c.name} {c.status} (image {c.image.removeprefix('sha256:')[:12] or '?'})" for c in recorded]
        return f"{len(recorded)} container{'s' if len(recorded) > 1 else ''}: {', '.join(each)}"

    def describe_restore(self, section: dict[str, Any], to: str | None) -> str:
        """Nothing is written: container images and states are recorded only."""
        return "(recorded only, not restored)"
