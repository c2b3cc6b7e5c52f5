"""Doctor's checks: everything a backup needs, checked before anything is changed (each
configured component's ``Component.doctor``, the repository, the temporaries left behind).

Read-only and below the workflows: the ``doctor`` command and the engine's ``preflight`` action
both run ``run``.
"""

from __future__ import annotations

from typing import Any

from aura_ops import components
from aura_ops.components import snapshotting
from aura_ops.config import Config
from aura_ops.errors import AuraError
from aura_ops.hosts import Command, Host
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import Repository


def _tool(host: Host, program: str) -> dict[str, Any]:
    try:
        first = host.run(Command((program, "--version"))).text.strip().splitlines()[0]
        return {"check": f"tool {program}", "ok": True, "detail": first}
    except AuraError as exc:
        return {"check": f"tool {program}", "ok": False, "detail": str(exc), "exit_code": 2}


def _repository(repo: Repository) -> list[dict[str, Any]]:
    checks = []
    try:
        repo.check_writable()
        checks.append({"check": f"repository {repo.path}", "ok": True, "detail": "writable"})
    except OSError as exc:
        checks.append(
            {"check": f"repository {repo.path}", "ok": False, "detail": f"not writable: {exc.strerror}", "exit_code": 1}
        )
        return checks
    ids = repo.ids()
    free = repo.free_bytes()
    last = repo.load(ids[-1]).manifest.get("size", 0) if ids else 0
    for snapshot in repo.all_snapshots():
        if snapshot.damaged:
            checks.append({"check": f"snapshot {snapshot.id}", "ok": False, "detail": snapshot.damaged, "exit_code": 3})
    for name in repo.stray():
        checks.append({"check": f"stray {repo.snapshots_dir / name}", "ok": True, "detail": "not a snapshot: ignored"})
    checks.append(
        {
            "check": "free disk for the next snapshot",
            "ok": free > last,
            "detail": f"{free / 1e9:.2f} GB free, last snapshot {last / 1e6:.1f} MB",
            "exit_code": 1,
        }
    )
    return checks


def _temporaries(config: Config) -> list[dict[str, Any]]:
    """Every temporary object recorded in the journal: in use, or left by a killed process."""
    from aura_ops.state import temporaries

    checks = []
    for record in temporaries.listing(config):
        state = (
            f"in use by pid {record['pid']} on {record['host']}"
            if record["owner_alive"]
            else f"left by killed pid {record['pid']}: the next command that takes the lock removes it"
        )
        conflict = record["details"].get("conflict")  # a state only the user can settle (pgdatabase)
        checks.append(
            {
                "check": f"temporary {record['kind']} {record['name']}",
                "ok": not conflict,
                "detail": f"since {record['created']}, {conflict or state}",
                "exit_code": 1,
            }
        )
    return checks


def run(config: Config, hosts: Inventory | None = None) -> tuple[list[dict[str, Any]], int]:
    """All checks (each: check, ok, detail) and the exit code they call for (0 when all ok);
    components on their hosts from ``hosts`` (by default the configuration's inventory)."""
    hosts = hosts or Inventory(config)
    checks: list[dict[str, Any]] = []
    # the tools components run on this machine (``Component.local_tools``), each checked once
    needed = dict.fromkeys(
        t for c in config.components.values() for t in components.component_class(c.type).local_tools
    )
    checks.extend(_tool(hosts.local(), tool) for tool in needed)
    for name in config.components:
        checks.extend(components.build(config, name, hosts).doctor())
    checks.extend(_repository(snapshotting.repository(config)))
    checks.extend(_temporaries(config))
    if not hosts.local().is_root():
        checks.append(
            {"check": "running as root", "ok": True, "detail": "no: file ownership is kept only for your own files"}
        )
    failed = [c.get("exit_code", 1) for c in checks if not c["ok"]]
    return checks, max(failed) if failed else 0
