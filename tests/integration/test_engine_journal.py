"""The journal is a run's only state, and a failure reaches the user one way: the real CLI on
command and file steps (no database needed), crashed with AURA_FAULT where a test says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Aura


@pytest.fixture
def site(aura: Aura) -> Path:
    data = aura.root / "data"
    data.mkdir()
    (data / "page.txt").write_text("page\n")
    aura.write_config({"repository": {"path": "repo"}, "components": {"site": {"type": "files", "path": str(data)}}})
    return aura.root


def write_book(root: Path, steps: list[dict[str, Any]], params: dict[str, Any] | None = None) -> Path:
    path = root / "book.yaml"
    path.write_text(yaml.safe_dump({"name": "book", "params": params or {}, "steps": steps}, sort_keys=False))
    return path


def touch_step(name: str, target: Path) -> dict[str, Any]:
    return {
        "name": name,
        "action": "command",
        "with": {
            "argv": ["touch", str(target)],
            "check": ["test", "-e", str(target)],
            "undo": ["rm", "-f", str(target)],
        },
    }


def test_a_run_without_rollback_resumed_after_a_crash_stops_at_its_failure_again(aura: Aura, site: Path) -> None:
    first, allow = site / "first", site / "allow"
    book = write_book(
        site,
        [
            touch_step("first", first),
            {"name": "second", "action": "command", "with": {"argv": ["test", "-e", str(allow)]}},
        ],
    )
    # started as `deploy` without --rollback-on-fail starts it, killed before its second step
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from aura_ops import config, engine; from aura_ops.engine import playbook; "
            "engine.Engine(config.load(sys.argv[1])).run(playbook.load(sys.argv[2]), {}, rollback=False)",
            str(aura.config_path),
            str(book),
        ],
        env={**aura.env, "AURA_FAULT": "second:before"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 137, started.stderr[-2000:]
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    assert aura.json("runs", "show", run_id)["run"]["rollback"] is False
    resumed = aura("runs", "resume", run_id, "--json", check=1)
    outcome = json.loads(resumed.stdout)
    assert outcome["run"]["status"] == "failed"
    assert "nothing was rolled back" in outcome["message"]
    assert first.exists()  # its step was not undone: the run asked for no rollback
    aura("runs", "abort", run_id, check=0)
    assert not first.exists()


def test_an_undo_sees_a_step_that_failed_and_continued_as_the_apply_saw_it(aura: Aura, site: Path) -> None:
    seen = site / "seen"
    book = write_book(
        site,
        [
            {"name": "optional", "action": "command", "on_failure": "continue", "with": {"argv": ["false"]}},
            {
                "name": "record",
                "action": "command",
                "with": {
                    "argv": ["sh", "-c", f"echo {{{{ steps.optional | length }}}} > {seen}"],
                    "undo": ["sh", "-c", f"test {{{{ steps.optional | length }}}} = 0 && rm -f {seen}"],
                },
            },
            {"name": "gate", "action": "command", "with": {"argv": ["false"]}},
        ],
    )
    outcome = aura.json("run", str(book), check=1)
    steps = {s["name"]: s["status"] for s in outcome["steps"]}
    assert steps == {"optional": "failed", "record": "compensated", "gate": "failed"}
    assert outcome["run"]["status"] == "rolled_back"
    assert not seen.exists()


def test_a_failed_run_prints_one_json_document_and_one_error_line(aura: Aura, site: Path) -> None:
    made = site / "made"
    book = write_book(
        site, [touch_step("made", made), {"name": "gate", "action": "command", "with": {"argv": ["false"]}}]
    )
    result = aura("run", str(book), "--json", check=1)
    outcome = json.loads(result.stdout)  # one document: the run's report, not an error document after it
    assert outcome["exit_code"] == 1 and outcome["run"]["status"] == "rolled_back"
    errors = [line for line in result.stderr.splitlines() if line.startswith("aura-ops: error:")]
    assert errors == [f"aura-ops: error: {outcome['message']}"]
    assert not made.exists()


def test_an_unusable_state_folder_is_an_error_line_with_exit_2_not_a_crash(aura: Aura, site: Path) -> None:
    (site / "not-a-folder").write_text("")
    config = yaml.safe_load(aura.config_path.read_text())
    aura.write_config({**config, "state": {"path": str(site / "not-a-folder")}})
    result = aura("runs", "list", check=2)
    assert "unexpected" not in result.stderr
    assert "not-a-folder" in result.stderr
