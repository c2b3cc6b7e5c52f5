"""Snapshot ids: ``YYYYMMDD-HHMMSS-mmm`` (UTC), sorting by time; and references by unique prefix."""

from __future__ import annotations

import datetime as dt
import re

from aura_ops.errors import UsageError

MIN_PREFIX = 4
ID_SHAPE = re.compile(r"\d{8}-\d{6}-\d{3}")  # YYYYMMDD-HHMMSS-mmm: any other name is not a snapshot
WILDCARDS = frozenset("%_*?[]")


def is_snapshot_id(name: str) -> bool:
    return ID_SHAPE.fullmatch(name) is not None


def check_prefix(reference: str, what: str) -> None:
    """UsageError unless ``reference`` can name one id by prefix: at least MIN_PREFIX
    characters and no wildcard (an empty or ``%`` reference must never match every id)."""
    if len(reference) < MIN_PREFIX or WILDCARDS & set(reference) or reference != reference.strip():
        raise UsageError(
            f"{what} {reference!r}: give the full id or a unique prefix of at least {MIN_PREFIX} characters"
            " without wildcards" + (" (or latest)" if what.startswith("snapshot") else "")
        )


def new_snapshot_id(after: str | None = None) -> str:
    """A snapshot id that sorts by time (UTC, milliseconds) and comes after ``after``."""
    now = dt.datetime.now(dt.UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if after:
        try:
            last = dt.datetime.strptime(after[:15], "%Y%m%d-%H%M%S").replace(
                tzinfo=dt.UTC, microsecond=int(after[16:19]) * 1000
            )
        except ValueError:
            last = None
        if last is not None and now <= last:
            now = last + dt.timedelta(milliseconds=1)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"
