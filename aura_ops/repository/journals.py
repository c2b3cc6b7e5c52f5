"""The state folders whose runs use a repository: so that a prune by one configuration sees
what the unfinished runs of another configuration on the same repository still need (a
deploy configuration in /etc/aura, a backup-only one run by cron from another folder, each with
its own state folder and journal).

A run records its state folder and host when it starts (``remember``: one small
``journals/<hash>`` key per state folder, written once, only into a repository that exists);
a prune reads the journal of every state folder recorded (``remembered``) besides its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from aura_ops.repository.store import SNAPSHOTS, Repository

FOLDER = "journals"


@dataclass(frozen=True)
class Record:
    """A state folder (its real path) on a host whose runs use the repository."""

    host: str
    state: str


def _key(record: Record) -> str:
    digest = hashlib.sha256(f"{record.host}\0{record.state}".encode()).hexdigest()
    return f"{FOLDER}/{digest[:32]}.json"


def remember(repo: Repository, state: Path, host: str) -> bool:
    """Record that runs of the state folder ``state`` on ``host`` use ``repo``; whether a record
    was written (none when the repository does not exist yet or already has it). OSError when
    it cannot be written (a read-only repository)."""
    record = Record(host, os.path.realpath(state))
    if repo.backend.stat(SNAPSHOTS) is None or repo.backend.stat(_key(record)) is not None:
        return False
    repo.backend.ensure(FOLDER)
    repo.backend.put(_key(record), json.dumps({"host": record.host, "state": record.state}).encode())
    return True


def location(repo: Repository, record: Record) -> str:
    """Where ``record`` is kept (named by a prune that cannot read the journal it records: once
    that configuration is gone for good, removing the record is how the prune forgets it)."""
    return str(repo.path / _key(record))


MOST = 64 << 10  # a record is a host and a path: a bigger object there is not one (read no further)


def remembered(repo: Repository) -> list[Record]:
    """Every state folder recorded (a record that cannot be read, or is bigger than any record,
    is left out), by host and path."""
    found = []
    for entry in repo.backend.list(FOLDER):
        if entry.is_folder or not entry.name.endswith(".json"):
            continue
        try:
            with repo.backend.get(f"{FOLDER}/{entry.name}") as source:
                text = source.read(MOST + 1)
            if len(text) > MOST:
                continue
            data = json.loads(text)
            found.append(Record(str(data["host"]), str(data["state"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(set(found), key=lambda r: (r.host, r.state))
