"""What every action is built on: the ``Action`` protocol, the base of its ``Params`` models,
and the ``Context`` a step's action works with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from aura_ops.config import Config
from aura_ops.errors import AuraError
from aura_ops.hosts.inventory import Inventory
from aura_ops.secrets import mask_values
from aura_ops.state.journal import Journal

_BUILT_FROM_CONFIG: Any = None


@dataclass(frozen=True)
class Context:
    """What a step's action works with: the configuration, the hosts (from the inventory, shared
    by the whole command), and the run's journal, through which state passes from a step's apply
    to its undo (``remember``/``remembered``) and from its undo to the report (``record_undo``).

    ``hosts`` not given: an inventory of the configuration's own. ``journal`` None (``plan``):
    nothing is remembered, and an action that must remember refuses."""

    config: Config
    run_id: str
    step: str
    work_dir: Path  # per-run folder in the state folder, on the control machine (large saved bytes)
    timeout: float | None = None
    hosts: Inventory = _BUILT_FROM_CONFIG
    journal: Journal | None = None

    def __post_init__(self) -> None:
        if self.hosts is None:
            object.__setattr__(self, "hosts", Inventory(self.config))

    def remember(self, state: dict[str, Any]) -> None:
        """Journal what this step's undo will need, committed before the side effect it protects
        (kept as it is: the undo acts on it). Kept across a resume; ``remembered`` gives it back."""
        if self.journal is None:
            raise AuraError(f"step {self.step}: nothing can be remembered outside a run")
        self.journal.save_step_state(self.run_id, self.step, state)

    def remembered(self) -> dict[str, Any] | None:
        """What this step remembered in this run, or None."""
        return None if self.journal is None else self.journal.step_state(self.run_id, self.step)

    def record_undo(self, result: dict[str, Any]) -> None:
        """Journal (masked) what this step's compensation did, for the run's report."""
        if self.journal is not None:
            self.journal.step_undone(self.run_id, self.step, mask_values(result))


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Action:
    Params: ClassVar[type[_Params]] = _Params
    # A failed apply may have changed things half-way, and compensating is always safe: undo it too.
    undo_after_failure: ClassVar[bool] = False
    # Outputs that name things later steps and the undo act on (a snapshot id, a release, a
    # container): journaled as they are. Every other output is masked first (free text such as a
    # command's stdout may hold a secret); masking an identifier that happens to contain a weak
    # password's word would make the run act on the wrong thing.
    identifiers: ClassVar[frozenset[str]] = frozenset()
    # Whether a step's ``timeout`` stops it (a command's process group killed, a statement
    # cancelled by the server); a playbook giving one to any other action is refused.
    honours_timeout: ClassVar[bool] = False

    def describe(self, p: Any, ctx: Context) -> tuple[str, str]:
        raise NotImplementedError

    def check(self, p: Any, ctx: Context) -> bool:
        return False

    def can_check(self, p: Any) -> bool:
        """Whether ``check`` tells applied from not applied (so a maybe-applied step can be judged)."""
        return bool(getattr(p, "check", None))

    def apply(self, p: Any, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def verify(self, p: Any, ctx: Context, outputs: dict[str, Any]) -> None:
        return None

    def compensate(self, p: Any, ctx: Context, outputs: dict[str, Any]) -> None:
        return None


class NoParams(_Params):
    pass
