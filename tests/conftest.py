"""Shared fixtures. Real components only (see ../shared/TESTENV.md).

With CI=true a missing component fails the test; elsewhere it skips naming the missing tool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aura_ops.dev.sandbox import PostgresCluster, pg_bin_dir

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Fail under CI, skip elsewhere, when a real component is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing: CI requires every real component (make bootstrap)")
    pytest.skip(f"{what} is missing (make bootstrap installs it)")


def require_tool(program: str) -> None:
    require(shutil.which(program) is not None, program)


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    require(pg_bin_dir() is not None, "PostgreSQL server (initdb)")
    require_tool("pg_dump")
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.remove()


_counter = iter(range(1_000_000))


@pytest.fixture
def database(pg: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database name in the session cluster, dropped afterwards."""
    name = f"t{os.getpid()}_{next(_counter)}"
    pg.create_database(name)
    yield name
    for row in pg.sql("SELECT datname FROM pg_database WHERE datname LIKE %s" % ("'" + name + "%'")):
        pg.sql(f'DROP DATABASE IF EXISTS "{row[0]}" WITH (FORCE)')


class Aura:
    """Runs the real CLI as a subprocess against a config written in a temp folder."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.config_path = root / "aura.yaml"

    def write_config(self, config: dict[str, Any]) -> Path:
        self.config_path.write_text(yaml.safe_dump(config))
        return self.config_path

    def __call__(
        self, *args: str, check: int | None = 0, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "aura_ops", "--config", str(self.config_path), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check is not None and result.returncode != check:
            raise AssertionError(
                f"aura-ops {' '.join(args)} exited {result.returncode}, expected {check}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
            )
        return result

    def json(self, *args: str, check: int | None = 0) -> Any:
        return json.loads(self(*args, "--json", check=check).stdout)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "aura_ops", "--config", str(self.config_path), *args],
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    def log_text(self) -> str:
        return "".join(p.read_text() for p in sorted((self.root / "logs").glob("aura_*.log")))


@pytest.fixture
def aura(tmp_path: Path) -> Aura:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURA_")}
    return Aura(tmp_path, env)


def db_component(dsn_env: str = "AURA_DB_DSN", **extra: Any) -> dict[str, Any]:
    return {"type": "postgres", "dsn_env": dsn_env, "jobs": 2, **extra}


def base_config(components: dict[str, Any]) -> dict[str, Any]:
    return {"repository": {"path": "repo"}, "components": components}


DOCKER_LABEL = "aura-test=1"


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    require(shutil.which("dockerd") is not None, "dockerd (docker.io)")
    require(Path("/bin/busybox").exists(), "busybox-static")
    import docker

    from aura_ops.dev.sandbox import DockerDaemon, import_busybox_image

    daemon = DockerDaemon().start()
    client = docker.DockerClient(base_url=daemon.url)
    import_busybox_image(client)
    client.url = daemon.url  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        for leftover in client.containers.list(all=True, filters={"label": DOCKER_LABEL}):
            leftover.remove(force=True)
        client.close()
        daemon.stop()
