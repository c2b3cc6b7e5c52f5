"""``aura-ops plan``: resolve parameters, probe read-only which steps are already applied, and
describe each step's command and its compensation. Nothing is changed."""

from __future__ import annotations

from typing import Any

from aura_ops.config import Config
from aura_ops.engine.actions import REGISTRY, Context
from aura_ops.engine.playbook import Playbook, render
from aura_ops.hosts.inventory import Inventory


class _Later:
    """Stands for an output an earlier step will produce when the playbook runs."""

    def __init__(self, step: str) -> None:
        self.step = step

    def __getattr__(self, name: str) -> str:
        return f"<{self.step}.{name}>"

    def __getitem__(self, name: str) -> str:
        return f"<{self.step}.{name}>"


def plan(
    config: Config, playbook: Playbook, given: dict[str, str], hosts: Inventory | None = None
) -> list[dict[str, Any]]:
    params = playbook.resolve_params(given)
    context = {"params": params, "steps": {s.name: _Later(s.name) for s in playbook.steps}, "run_id": "<run>"}
    work_dir = config.state.path / "runs" / "plan"
    hosts = hosts or Inventory(config)  # one for every step (the command's, when it passes one)
    result = []
    for step in playbook.steps:
        action = REGISTRY[step.action]
        p = action.Params.model_validate(render(step.with_, context))
        ctx = Context(config, "<run>", step.name, work_dir, step.timeout, hosts)
        apply, undo = action.describe(p, ctx)
        if step.undo:
            undo_action = REGISTRY[step.undo.action]
            undo = undo_action.describe(undo_action.Params.model_validate(render(step.undo.with_, context)), ctx)[0]
        references_later = any("<" in str(v) for v in p.model_dump().values())
        state = "would run" if references_later else ("already applied" if action.check(p, ctx) else "would apply")
        if step.when is not None:
            state += f" (when: {step.when})"
        result.append({"name": step.name, "action": step.action, "state": state, "apply": apply, "undo": undo})
    return result
