"""The snapshot repository: sealed snapshots, stored through a backend (a local folder by default).

Layout (keys in the backend; files under the root of a local repository)::

    lock                      the repository lock (LocalBackend; state/lock.py)
    snapshots/<id>.partial/   a snapshot being written: never listed, restored or counted
    snapshots/<id>/           a sealed snapshot: manifest.json plus one folder a component
    snapshots/<id>.sha256     the manifest's SHA-256, kept outside the snapshot's folder
    format.json               the first snapshot sealed with a checksum file (see below)
    pins/<id>                 the snapshot is pinned: no prune deletes it (removed with it)

A snapshot is built in ``<id>.partial/``, checked, synced to disk, then renamed: the rename is
the commit (backend.py: how another backend commits). Folders are 0700 and files 0600. The
manifest's checksum is written (and synced) before the commit and checked whenever a manifest is
read: a snapshot whose manifest is missing, unreadable or changed is *damaged*; it is listed as
such and never verified as good or restored, and the other snapshots are not affected. So is a
manifest whose shape is wrong: its envelope (store.py), or a component section that the caller's
``validate`` hook refuses (an unknown type, a required key missing or of the wrong type).

A snapshot made before checksum files existed (manifest ``format`` 1) has none. So that deleting
a checksum file (and writing ``"format": 1`` into the manifest) cannot turn the check off, a
snapshot whose id is not older than the first snapshot sealed with a checksum file must have
one: that first id is recorded in ``format.json`` at the first commit that finds it missing, and
the oldest ``<id>.sha256`` present counts too (the earlier of the two), so removing either alone
changes nothing. Ids are sealed in order, so every snapshot from that one on was sealed with a
checksum file.

The repository knows no component: backup, verify and restore across components are workflows
(``aura_ops.workflows.snapshots``), which hand it the ``validate`` hook.
"""

from aura_ops.repository.backend import Backend, Entry, LocalBackend, json_bytes, syncfs, write_json
from aura_ops.repository.ids import check_prefix, is_snapshot_id, new_snapshot_id
from aura_ops.repository.store import FORMAT, MANIFEST, Repository, SectionCheck, Snapshot

__all__ = [
    "FORMAT",
    "MANIFEST",
    "Backend",
    "Entry",
    "LocalBackend",
    "Repository",
    "SectionCheck",
    "Snapshot",
    "check_prefix",
    "is_snapshot_id",
    "new_snapshot_id",
    "syncfs",
    "json_bytes",
    "write_json",
]
