"""Hostile or odd input at the command line: the config the user names, ids that are not ids,
components that do not exist, and YAML built to exhaust memory or the stack. Real CLI, real files,
real rsync."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Aura, require_tool

MEMORY_LIMIT = 1 << 30  # address space of a CLI run fed hostile YAML: the old code must not take the machine down
HOSTILE_TIMEOUT = 30.0


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real CLI with no --config added and no AURA_* variable but those given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AURA_")}
    return subprocess.run(
        [sys.executable, "-m", "aura_ops", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def files_site(root: Path, name: str) -> Path:
    """A config named ``name`` with one files component and its own repository; returns the config path."""
    folder = root / name
    data = folder / "data"
    data.mkdir(parents=True)
    (data / "page.txt").write_text(f"{name} original\n")
    config = {"repository": {"path": "repo"}, "components": {"site": {"type": "files", "path": str(data)}}}
    path = folder / "aura.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snapshot_ids(config: Path) -> list[str]:
    result = cli("--config", str(config), "snapshots", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [s["id"] for s in json.loads(result.stdout)["snapshots"]]


# ---------------------------------------------------------------- which config


@pytest.mark.parametrize(
    "placement",
    [("-c", "{staging}", "backup"), ("--config", "{staging}", "backup"), ("backup", "-c", "{staging}")],
    ids=["short-before", "long-before", "after"],
)
def test_the_config_named_on_the_command_line_wins_over_AURA_CONFIG(tmp_path: Path, placement: tuple[str]) -> None:
    staging, prod = files_site(tmp_path, "staging"), files_site(tmp_path, "prod")
    args = [a.format(staging=staging) for a in placement]
    result = cli(*args, "--json", env={"AURA_CONFIG": str(prod)})
    assert result.returncode == 0, result.stderr
    assert len(snapshot_ids(staging)) == 1
    assert snapshot_ids(prod) == []
    # without any -c, the environment names it; without either, aura.yaml in the working directory
    assert cli("backup", env={"AURA_CONFIG": str(prod)}).returncode == 0
    assert len(snapshot_ids(prod)) == 1 and len(snapshot_ids(staging)) == 1
    assert cli("backup", cwd=staging.parent).returncode == 0
    assert len(snapshot_ids(staging)) == 2


def test_a_restore_meant_for_staging_never_touches_production(tmp_path: Path) -> None:
    require_tool("rsync")
    staging, prod = files_site(tmp_path, "staging"), files_site(tmp_path, "prod")
    for config in (staging, prod):
        assert cli("--config", str(config), "backup").returncode == 0
        (config.parent / "data" / "page.txt").write_text("changed since\n")
    result = cli("-c", str(staging), "restore", "latest", "--yes", env={"AURA_CONFIG": str(prod)})
    assert result.returncode == 0, result.stderr
    assert (staging.parent / "data" / "page.txt").read_text() == "staging original\n"
    assert (prod.parent / "data" / "page.txt").read_text() == "changed since\n"
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"aura-ops: config {staging},") and str(staging.parent / "data") in first


# ---------------------------------------------------------------- the first line names config and target


def first_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    return lines[0] if lines else ""


def test_every_command_that_changes_something_names_config_and_target_first(tmp_path: Path) -> None:
    require_tool("rsync")
    config = files_site(tmp_path, "site")
    data = config.parent / "data"
    where = f"aura-ops: config {config},"

    backup = cli("-c", str(config), "backup", "--json")
    assert backup.returncode == 0, backup.stderr
    snapshot = json.loads(backup.stdout)["id"]  # stdout stays one JSON document
    assert first_line(backup).startswith(where)
    assert str(data) in first_line(backup) and str(config.parent / "repo") in first_line(backup)

    restore = cli("-c", str(config), "restore", snapshot, "--to-path", str(tmp_path / "copy"), "--json")
    assert restore.returncode == 0, restore.stderr
    json.loads(restore.stdout)
    assert first_line(restore).startswith(where) and str(tmp_path / "copy") in first_line(restore)
    assert snapshot in first_line(restore)

    book = tmp_path / "touch.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "name": "touch",
                "steps": [{"name": "touch", "action": "command", "with": {"argv": ["touch", str(tmp_path / "t")]}}],
            }
        )
    )
    run = cli("-c", str(config), "run", str(book))
    assert run.returncode == 0, run.stderr
    assert first_line(run).startswith(where) and str(book) in first_line(run)

    crashed = cli("-c", str(config), "run", str(book), env={"AURA_FAULT": "touch:before"})
    assert crashed.returncode == 137
    run_id = json.loads(cli("-c", str(config), "runs", "list", "--json").stdout)["runs"][0]["id"]
    abort = cli("-c", str(config), "runs", "abort", run_id)
    assert first_line(abort).startswith(where) and run_id in first_line(abort)

    delete = cli("-c", str(config), "snapshots", "delete", snapshot, "--yes")
    assert delete.returncode == 0, delete.stderr
    assert first_line(delete).startswith(where) and snapshot in first_line(delete)


def test_pinning_and_unpinning_name_config_and_snapshot_first(tmp_path: Path) -> None:
    config = files_site(tmp_path, "site")
    assert cli("-c", str(config), "backup").returncode == 0
    (snapshot,) = snapshot_ids(config)
    for command in ("pin", "unpin"):
        done = cli("-c", str(config), "snapshots", command, snapshot[:8], "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["id"] == snapshot
        assert first_line(done).startswith(f"aura-ops: config {config},"), done.stderr
        assert snapshot[:8] in first_line(done) and str(config.parent / "repo") in first_line(done)


def test_a_to_path_whose_name_is_not_utf8_is_restored_into_byte_exact(tmp_path: Path) -> None:
    """The restore records its staging folder (named after the target) in the state journal
    before making it: a Latin-1 name crashed that record (unexpected UnicodeEncodeError)."""
    require_tool("rsync")
    config = files_site(tmp_path, "site")
    assert cli("-c", str(config), "backup").returncode == 0
    target = os.fsencode(tmp_path) + b"/caf\xe9"
    for where in (target, target + b"/d\xe9eper"):  # a new folder, then one below it
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "aura_ops",
                "-c",
                os.fsencode(config),
                "restore",
                "latest",
                "--to-path",
                where,
                "--yes",
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("AURA_")},
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
        assert (Path(os.fsdecode(where)) / "page.txt").read_text() == "site original\n"
    assert sorted(os.listdir(os.fsencode(tmp_path))) == sorted([b"caf\xe9", b"site"])
    assert sorted(os.listdir(target)) == [b"d\xe9eper", b"page.txt"]


# ---------------------------------------------------------------- ids


@pytest.fixture
def one_snapshot(tmp_path: Path) -> tuple[Path, str]:
    config = files_site(tmp_path, "site")
    assert cli("-c", str(config), "backup").returncode == 0
    (snapshot,) = snapshot_ids(config)
    return config, snapshot


@pytest.mark.parametrize("reference", ["", "%", "_", "*", "2", "20"])
def test_an_empty_wildcard_or_too_short_snapshot_id_selects_nothing(
    one_snapshot: tuple[Path, str], reference: str
) -> None:
    config, snapshot = one_snapshot
    result = cli("-c", str(config), "snapshots", "delete", reference, "--yes")
    assert result.returncode == 2, result.stderr
    assert "at least 4 characters" in result.stderr
    assert snapshot_ids(config) == [snapshot]
    restore = cli("-c", str(config), "restore", reference, "--to-path", str(config.parent / "out"), "--yes")
    assert restore.returncode == 2 and not (config.parent / "out").exists()


def test_a_snapshot_is_named_by_its_id_a_unique_prefix_of_4_or_latest(one_snapshot: tuple[Path, str]) -> None:
    config, snapshot = one_snapshot
    for reference in (snapshot, snapshot[:4], "latest"):
        shown = cli("-c", str(config), "snapshots", "show", reference, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["id"] == snapshot
    assert cli("-c", str(config), "snapshots", "show", snapshot[:3]).returncode == 2


def crash_a_run(config: Path, tmp_path: Path) -> str:
    book = tmp_path / "mark.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "name": "mark",
                "steps": [
                    {
                        "name": "mark",
                        "action": "command",
                        "with": {"argv": ["touch", str(tmp_path / "mark")], "undo": ["rm", str(tmp_path / "mark")]},
                    },
                    {"name": "last", "action": "command", "with": {"argv": ["true"]}},
                ],
            }
        )
    )
    assert cli("-c", str(config), "run", str(book), env={"AURA_FAULT": "last:before"}).returncode == 137
    (run,) = json.loads(cli("-c", str(config), "runs", "list", "--json").stdout)["runs"]
    assert run["status"] == "running"
    return str(run["id"])


@pytest.mark.parametrize("reference", ["", "%", "_", "*", "2", "202"])
def test_an_empty_wildcard_or_too_short_run_id_selects_nothing(tmp_path: Path, reference: str) -> None:
    config = files_site(tmp_path, "site")
    run_id = crash_a_run(config, tmp_path)
    for command in ("show", "abort", "resume"):
        result = cli("-c", str(config), "runs", command, reference)
        assert result.returncode == 2, (command, result.stderr)
        assert "at least 4 characters" in result.stderr
    (run,) = json.loads(cli("-c", str(config), "runs", "list", "--json").stdout)["runs"]
    assert run["status"] == "running" and (tmp_path / "mark").exists()  # nothing aborted or resumed
    shown = cli("-c", str(config), "runs", "show", run_id[:4], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["run"]["id"] == run_id


def test_an_unknown_component_is_a_usage_error_for_verify_backup_and_restore(one_snapshot: tuple[Path, str]) -> None:
    config, snapshot = one_snapshot
    verify = cli("-c", str(config), "snapshots", "verify", "latest", "--component", "nosuch")
    assert verify.returncode == 2 and "nosuch" in verify.stderr
    assert cli("-c", str(config), "snapshots", "verify", "latest", "--component", "site").returncode == 0
    backup = cli("-c", str(config), "backup", "--component", "nosuch")
    assert backup.returncode == 2 and "nosuch" in backup.stderr
    restore = cli("-c", str(config), "restore", "latest", "--component", "nosuch", "--yes")
    assert restore.returncode == 2 and "nosuch" in restore.stderr
    assert snapshot_ids(config) == [snapshot]


# ---------------------------------------------------------------- hostile YAML


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def hostile(*args: str, cwd: Path) -> tuple[int | None, str, float]:
    """Run the CLI with bounded memory and time; (exit code or None when it was killed at the timeout, stderr, s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURA_")}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "aura_ops", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limited,
    )
    try:
        _, stderr = process.communicate(timeout=HOSTILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None, "", time.monotonic() - started
    return process.returncode, stderr, time.monotonic() - started


def billion_laughs(levels: int = 9, indent: str = "") -> str:
    """Anchors a0..a8 as mapping entries; a8 expands to 10**9 strings."""
    lines = [f'{indent}a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        previous = f"*a{level - 1}"
        lines.append(f"{indent}a{level}: &a{level} [{', '.join([previous] * 10)}]")
    return "\n".join(lines) + "\n"


HOSTILE_CONFIGS: dict[str, tuple[str, str]] = {
    # 10**9 strings once expanded (pydantic happened to reject it at the first level; nothing else bounded it)
    "alias bomb": (
        billion_laughs() + "repository: {path: repo}\ncomponents:\n  site: {type: files, path: data, exclude: *a8}\n",
        "aliases",
    ),
    "deep nesting": ("repository: {path: repo}\nhosts: " + "[" * 200_000 + "]" * 200_000 + "\n", "nested"),
    "huge file": (
        "repository: {path: repo}\ncomponents:\n  site: {type: files, path: data, exclude: [\n"
        + '"x",\n' * 6_000_000
        + "]}\n",
        "larger than",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE_CONFIGS))
def test_a_hostile_config_file_is_refused_fast_with_bounded_memory(tmp_path: Path, kind: str) -> None:
    text, reason = HOSTILE_CONFIGS[kind]
    (tmp_path / "data").mkdir()
    (tmp_path / "aura.yaml").write_text(text)
    code, stderr, seconds = hostile("--config", "aura.yaml", "backup", cwd=tmp_path)
    assert code == 2, f"exit {code} after {seconds:.1f}s (None: still running at the timeout): {stderr[-2000:]}"
    assert reason in stderr and "Traceback" not in stderr
    assert not (tmp_path / "repo").exists()


HOSTILE_PLAYBOOKS: dict[str, tuple[str, str]] = {
    # a template context of 10**9 strings: the old code walked it looking for templates
    "alias bomb": (
        "name: bomb\nparams:\n"
        + billion_laughs(indent="  ")
        + "steps:\n  - {name: s, action: command, with: {argv: *a8}}\n",
        "aliases",
    ),
    "deep nesting": (
        "name: deep\nsteps:\n  - {name: s, action: command, with: {argv: " + "[" * 200_000 + "]" * 200_000 + "}}\n",
        "nested",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE_PLAYBOOKS))
@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_hostile_playbook_is_refused_fast_with_bounded_memory(tmp_path: Path, kind: str, command: str) -> None:
    text, reason = HOSTILE_PLAYBOOKS[kind]
    (tmp_path / "data").mkdir()
    (tmp_path / "aura.yaml").write_text(
        yaml.safe_dump({"repository": {"path": "repo"}, "components": {"site": {"type": "files", "path": "data"}}})
    )
    (tmp_path / "book.yaml").write_text(text)
    code, stderr, seconds = hostile("--config", "aura.yaml", command, "book.yaml", cwd=tmp_path)
    assert code == 2, f"exit {code} after {seconds:.1f}s (None: still running at the timeout): {stderr[-2000:]}"
    assert reason in stderr and "Traceback" not in stderr


def test_a_config_that_is_not_utf8_or_holds_an_absurd_number_is_a_config_error(aura: Aura) -> None:
    aura.config_path.write_bytes(b"repository: {path: repo}\ncomponents: {}\n# caf\xe9\n")
    result = aura("snapshots", "list", check=2)
    assert "UTF-8" in result.stderr and "Traceback" not in result.stderr
    aura.config_path.write_text("repository: {path: repo}\nstate: {path: " + "9" * 5000 + "}\n")
    result = aura("snapshots", "list", check=2)
    assert "unexpected" not in result.stderr
    aura.config_path.write_text("repository: {path: repo}\nwhen: 2024-13-45\n")
    result = aura("snapshots", "list", check=2)
    assert "unexpected" not in result.stderr
