"""Health and smoke checks: http, tcp, command, sql, container. Each is retried (tenacity) until its
deadline, every attempt logged; a check that never passes raises CheckFailed naming it and the
last reason. A command check runs on this machine, taken from the command's inventory (``hosts``;
when none is given, one made from the configuration)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Any

from aura_ops import components, logs
from aura_ops.components.containers import DockerComponent
from aura_ops.config import (
    CheckConfig,
    CommandCheck,
    Config,
    ContainerCheck,
    HttpCheck,
    SqlCheck,
    TcpCheck,
)
from aura_ops.errors import AuraError
from aura_ops.hosts import Command, Host
from aura_ops.hosts.inventory import Inventory
from aura_ops.secrets import mask


class CheckFailed(AuraError):
    """A health or smoke check did not pass before its deadline."""


def label(check: CheckConfig) -> str:
    if check.name:
        return check.name
    if isinstance(check, HttpCheck):
        return f"http {mask(check.url)}"
    if isinstance(check, TcpCheck):
        return f"tcp {check.address}:{check.port}"
    if isinstance(check, CommandCheck):
        return "command " + mask(" ".join(check.argv))
    if isinstance(check, ContainerCheck):
        return f"container {check.component}" + (f" ({', '.join(check.containers)})" if check.containers else "")
    return f"sql on {check.component}"


def _http(check: HttpCheck) -> str:
    request = urllib.request.Request(check.url, headers={"User-Agent": "aura-ops"})  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=check.timeout) as response:  # noqa: S310
            status, body = response.status, response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise CheckFailed(f"no answer: {getattr(exc, 'reason', exc)}") from None
    if status != check.expect_status:
        raise CheckFailed(f"status {status}, expected {check.expect_status}")
    if check.body_contains is not None and check.body_contains.encode() not in body:
        raise CheckFailed(f"body does not contain {check.body_contains!r}")
    return f"status {status}"


def _tcp(check: TcpCheck) -> str:
    try:
        with socket.create_connection((check.address, check.port), timeout=check.timeout):
            return "connected"
    except OSError as exc:
        raise CheckFailed(f"cannot connect: {exc.strerror or exc}") from None


def _command(check: CommandCheck, host: Host) -> str:
    result = host.run(Command(tuple(check.argv)), check=False, timeout=check.timeout)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no stderr"
        raise CheckFailed(f"exited {result.returncode}: {last}")
    return "exit 0"


def _sql(check: SqlCheck, config: Config, hosts: Inventory) -> str:
    # the class through the registry: psycopg is imported only when a check needs it
    database: Any = components.build_as(config, check.component, hosts, components.component_class("postgres"))
    try:
        row = database.query(check.query, attempts=1, timeout=max(1, int(check.timeout)))
    except AuraError as exc:
        raise CheckFailed(str(exc)) from None
    value = None if row is None else str(row[0])
    if check.expect is not None and value != check.expect:
        raise CheckFailed(f"returned {value!r}, expected {check.expect!r}")
    return f"returned {value!r}"


def _container(check: ContainerCheck, config: Config, hosts: Inventory) -> str:
    """Every chosen container is running and, if it has a Docker healthcheck, healthy."""
    containers = components.build_as(config, check.component, hosts, DockerComponent)
    try:
        found = containers.status()
    except AuraError as exc:
        raise CheckFailed(str(exc)) from None
    if check.containers:
        missing = set(check.containers) - {c["name"] for c in found}
        if missing:
            raise CheckFailed(f"no container {', '.join(sorted(missing))} in {check.component}")
        found = [c for c in found if c["name"] in check.containers]
    if not found:
        raise CheckFailed(f"no container in {check.component}")
    for c in found:
        if c["status"] != "running":
            raise CheckFailed(f"container {c['name']} is {c['status']}")
        if c["health"] not in (None, "healthy"):
            raise CheckFailed(f"container {c['name']} is {c['health']}")
    return ", ".join(f"{c['name']} {c['health'] or c['status']}" for c in found)


def probe(check: CheckConfig, config: Config, hosts: Inventory | None = None) -> str:
    """One attempt; returns a short description or raises CheckFailed."""
    if isinstance(check, HttpCheck):
        return _http(check)
    if isinstance(check, TcpCheck):
        return _tcp(check)
    if isinstance(check, CommandCheck):
        try:
            return _command(check, (hosts or Inventory(config)).local())
        except AuraError as exc:
            raise CheckFailed(str(exc)) from None
    if isinstance(check, ContainerCheck):
        return _container(check, config, hosts or Inventory(config))
    return _sql(check, config, hosts or Inventory(config))


def wait_for(check: CheckConfig, config: Config, hosts: Inventory | None = None) -> dict[str, Any]:
    """Retry one check until it passes or its deadline passes (CheckFailed)."""
    import tenacity

    name = label(check)
    log = logs.get()
    hosts = hosts or Inventory(config)
    started = time.monotonic()
    if check.delay:
        time.sleep(check.delay)
    attempts = 0

    def before_sleep(state: tenacity.RetryCallState) -> None:
        reason = state.outcome.exception() if state.outcome else None
        log.info("check.retry", check=name, attempt=state.attempt_number, reason=str(reason))

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(check.deadline),
            wait=tenacity.wait_fixed(check.interval),
            retry=tenacity.retry_if_exception_type(CheckFailed),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                attempts += 1
                detail = probe(check, config, hosts)
    except CheckFailed as exc:
        log.error("check.failed", check=name, attempts=attempts, reason=str(exc))
        raise CheckFailed(f"check {name} failed after {attempts} attempts ({check.deadline:g}s): {exc}") from None
    seconds = round(time.monotonic() - started, 3)
    log.info("check.passed", check=name, attempts=attempts, seconds=seconds, detail=detail)
    return {"check": name, "ok": True, "attempts": attempts, "seconds": seconds, "detail": detail}


def run_all(checks: list[CheckConfig], config: Config, hosts: Inventory | None = None) -> list[dict[str, Any]]:
    """Every check in order; the first that fails raises CheckFailed."""
    hosts = hosts or Inventory(config)
    return [wait_for(check, config, hosts) for check in checks]
