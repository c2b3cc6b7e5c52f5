"""What ships is what is tested: the wheel built from this checkout, installed into a fresh
virtualenv outside it, runs a backup, the shipped backup playbook, a deploy and a rollback against
the real PostgreSQL cluster, real rsync and real release folders, from a working directory that
has nothing to do with the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import db_component, require_tool

CHECKOUT = Path(__file__).resolve().parents[2]
SHIPPED_PLAYBOOKS = {"backup.yaml", "deploy.yaml", "rollback.yaml"}


def _pip(*args: str, timeout: float = 600) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _copy_sources(target: Path) -> Path:
    """What a build reads, copied away from the checkout (so the build leaves nothing in it)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, target / name)
    for name in ("aura_ops", "playbooks"):
        shutil.copytree(CHECKOUT / name, target / name, ignore=ignore)
    return target


def _venv(folder: Path) -> Path:
    """A fresh virtualenv whose dependencies (not aura_ops) come from the test's own environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # appended after the venv's own site-packages: a path line, so the .pth files there (an editable
    # aura_ops of the test environment) are not run
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "zz_test_dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    return folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    (work / "src").mkdir()
    source = _copy_sources(work / "src")
    _pip("wheel", "--no-deps", "--wheel-dir", str(work / "dist"), str(source))
    (built,) = (work / "dist").glob("aura_ops-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = _venv(tmp_path_factory.mktemp("venv") / "venv")
    _pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel))
    yield venv


def outside(venv: Path, cwd: Path, env: dict[str, str]) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AURA_") and k != "PYTHONPATH"}

    def run(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(venv / "bin" / "aura-ops"), *args],
            cwd=cwd,
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == check, f"aura-ops {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result

    return run


def test_the_wheel_ships_the_playbooks_as_package_data_and_an_editable_install_finds_them(
    wheel: Path, tmp_path: Path
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("aura_ops/playbooks/")} >= SHIPPED_PLAYBOOKS
    assert not [n for n in names if n.startswith(("tests/", "playbooks/"))]
    # an editable install of a checkout reads the checkout's playbooks/ folder itself
    (tmp_path / "src").mkdir()
    source = _copy_sources(tmp_path / "src")
    venv = _venv(tmp_path / "venv")
    _pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", "-e", str(source))
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from aura_ops.engine import playbook; print(playbook.find('deploy'))"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == source / "playbooks" / "deploy.yaml"


def test_the_installed_wheel_backs_up_deploys_and_rolls_back_outside_the_checkout(
    installed: Path, pg: PostgresCluster, database: str, tmp_path: Path
) -> None:
    require_tool("rsync")
    site = tmp_path / "site"
    (site / "uploads").mkdir(parents=True)
    (site / "uploads" / "a.txt").write_text("upload\n")
    app = site / "app"
    app.mkdir()
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 20)")
    (site / "aura.yaml").write_text(
        yaml.safe_dump(
            {
                "repository": {"path": "repo"},
                "components": {
                    "db": db_component(),
                    "uploads": {"type": "files", "path": "uploads"},
                    "app": {"type": "release", "path": "app"},
                },
                "deploy": {"migrate": ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "migrate.sql"]},
                "checks": [{"type": "command", "argv": ["test", "-f", str(app / "current" / "health")]}],
            }
        )
    )
    run = outside(installed, site, {"AURA_DB_DSN": dsn})
    assert "Exit codes" in run("--help").stdout  # the wheel's entry point
    probe = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import aura_ops; print(aura_ops.__file__)"],
        cwd=site,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()).is_relative_to(installed)

    run("backup")
    run("run", "backup", "-e", "tag=nightly")
    for version, migration in (("v1", "SELECT 1;"), ("v2", "ALTER TABLE items ADD COLUMN price int;")):
        source = site / "sources" / version
        source.mkdir(parents=True)
        (source / "health").write_text("ok\n")
        (source / "migrate.sql").write_text(migration + "\n")
        run("deploy", "--version", version, "--source", str(source), "--rollback-on-fail")
    assert (app / "current").resolve().name == "v2"
    run("rollback", "--yes")
    assert (app / "current").resolve().name == "v1"
    with psycopg.connect(dsn) as conn:
        query = "SELECT column_name FROM information_schema.columns WHERE table_name = 'items'"
        names = [r[0] for r in conn.execute(query)]
    assert names == ["id"]
    runs = json.loads(run("runs", "list", "--json").stdout)["runs"]
    playbooks = {Path(r["playbook"]).name: Path(r["playbook"]) for r in runs}
    assert set(playbooks) == SHIPPED_PLAYBOOKS
    for path in playbooks.values():  # read from the installed package, not from the checkout
        assert path.is_relative_to(installed) and not path.is_relative_to(CHECKOUT)
    assert [r["status"] for r in runs] == ["succeeded"] * 4


def test_the_ci_entry_point_sets_CI_itself_so_a_missing_component_fails(tmp_path: Path) -> None:
    """.ci/run on a machine where the caller forgot CI=true: make (here a stand-in that reports
    its environment) must still see CI=true, under which conftest.require fails instead of skipping."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(f'#!/bin/sh\necho "CI=$CI args=$*" > {tmp_path / "seen"}\n')
    make.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    subprocess.run([str(CHECKOUT / ".ci" / "run")], env=env, check=True, timeout=60, cwd=tmp_path)
    assert (tmp_path / "seen").read_text() == "CI=true args=test\n"
