"""How a deploy's failures reach the user: one error line with the exit code that says what is
left to do, and the run's report on stdout. Real PostgreSQL, real release folders."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Aura
from tests.integration.test_deploy_semantics import deploy, live, release, site

__all__ = ["site"]  # the fixture, shared with the deploy semantics tests


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("aura-ops: error:")]


def test_a_rollback_that_leaves_an_unhealthy_old_version_exits_4_saying_so(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    (site["app"] / "releases" / "v1" / "health").unlink()  # the old version breaks meanwhile
    release(site, "v2", healthy=False)
    result = deploy(aura, site, "v2", "--rollback-on-fail", "--json", check=4)
    report = json.loads(result.stdout)
    assert report["run"]["status"] == "rolled_back" and live(site) == "v1"
    assert report["exit_code"] == 4
    assert report["message"].startswith("rolled back, but the old version is not healthy")
    assert error_lines(result.stderr) == [f"aura-ops: error: {report['message']}"]


def test_a_live_version_that_fails_its_checks_is_one_error_line_with_exit_1(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    (site["app"] / "releases" / "v1" / "health").unlink()
    result = deploy(aura, site, "v1", "--json", check=1)
    (line,) = error_lines(result.stderr)
    assert "release v1 is live, but its health checks fail" in line and "aura-ops rollback" in line
    assert json.loads(result.stdout) == {"ok": False, "error": line.removeprefix("aura-ops: error: "), "exit_code": 1}
