"""How a run ended, as the journal records it, and the one line a failure is reported as."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from aura_ops.errors import EXIT_OK, AuraError, Interrupted, first_line
from aura_ops.secrets import mask
from aura_ops.state.journal import Journal, RunRecord, StepRecord


@dataclass(frozen=True)
class Outcome:
    """A run's record and steps as journaled when it ended, a message, and the error that made
    it fail (``RunFailed``, exit 1, or ``RollbackError``, exit 4); None when it succeeded, did
    nothing, or an abort undid everything. The CLI prints the report, then raises the error."""

    run: RunRecord
    steps: list[StepRecord]
    message: str
    error: AuraError | None = None

    @classmethod
    def read(cls, journal: Journal, run_id: str, result: str | AuraError) -> Outcome:
        """The outcome of ``run_id`` from the journal: ``result`` is its message, or its error."""
        error = result if isinstance(result, AuraError) else None
        return cls(journal.run(run_id), journal.steps(run_id), str(result), error)

    def failed(self, error: AuraError) -> Outcome:
        """This outcome failed with ``error``, found after the run ended (e.g. the old version
        unhealthy after a deploy's rollback): its message replaces the run's."""
        return replace(self, message=str(error), error=error)

    @property
    def exit_code(self) -> int:
        return self.error.exit_code if self.error else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.as_dict(),
            "steps": [{**s.__dict__, "seconds": _seconds(s.started, s.ended)} for s in self.steps],
            "exit_code": self.exit_code,
            "message": self.message,
        }


def _seconds(started: str | None, ended: str | None) -> float | None:
    """How long a step's last phase took: its apply, or for an undone step its compensation."""
    if not started or not ended or ended < started:
        return None
    return round((dt.datetime.fromisoformat(ended) - dt.datetime.fromisoformat(started)).total_seconds(), 3)


def reason(exc: BaseException) -> str:
    """One masked line; an exception that is not aura-ops' own also names its type (a database
    or template error, a bug)."""
    if isinstance(exc, AuraError | ValidationError | OSError | Interrupted):
        return mask(first_line(exc))
    return mask(f"{type(exc).__name__}: {first_line(exc)}")
