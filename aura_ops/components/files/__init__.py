"""Files component: a file tree on a host, snapshotted as a plain, browsable folder tree.

``FilesComponent`` is the component (``components.base.Component``); the work is done in
``snapshot`` (a source tree on the host into the repository: unchanged files hard-linked against
the previous snapshot, the rest copied and hashed), ``restorer`` (a verified staging tree on the
host exchanged with the target in one rename) and ``stored`` (the stored tree, its index and
the manifest section, read and checked on the control machine). The host's files are reached
only through its ``Host``, the snapshot's folder only through ``store`` (the control machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

from aura_ops.components.base import ComponentManifest, RestoreRequest, RestoreTarget, SnapshotTarget
from aura_ops.components.files import restorer
from aura_ops.components.files.snapshot import take
from aura_ops.components.files.stored import (
    INDEX,
    INDEX_VERSION,
    TREE,
    FilesManifest,
    Index,
    checked_index,
    decode_entry,
    encode_line,
    index_damage,
    read_index,
    rsync_excludes,
    section,
    verify_tree,
)
from aura_ops.config import FilesConfig
from aura_ops.errors import VerificationError
from aura_ops.hosts.base import Host, compile_excludes, is_excluded, shown
from aura_ops.repository import Snapshot
from aura_ops.repository.verified import VerifiedCache

__all__ = [
    "INDEX",
    "INDEX_VERSION",
    "TREE",
    "FilesComponent",
    "FilesManifest",
    "Index",
    "VerifiedCache",
    "checked_index",
    "compile_excludes",
    "decode_entry",
    "encode_line",
    "index_damage",
    "is_excluded",
    "read_index",
    "rsync_excludes",
    "shown",
]


class FilesComponent:
    """The folder ``config.path`` on ``host`` (with the config's excludes)."""

    manifest_model: ClassVar[type[ComponentManifest]] = FilesManifest
    type: ClassVar[str] = "files"
    restore_to: ClassVar[str | None] = "path"

    def __init__(self, name: str, config: FilesConfig, host: Host, store: Host | None = None) -> None:
        self.name = name
        self.config = config
        self.host = host
        self.store = store if store is not None else host

    @classmethod
    def unconfigured(cls, name: str, section: dict[str, Any], host: Host) -> FilesComponent:
        """The folder as the snapshot's section recorded it (its source and excludes)."""
        return cls(name, FilesConfig(type="files", path=section["source"], exclude=section.get("exclude", [])), host)

    def describe(self) -> str:
        return f"{self.config.path} on {self.host.name}"

    def snapshot(self, target: SnapshotTarget) -> FilesManifest:
        """Snapshot the folder into ``target.folder`` (``tree/`` and ``index.jsonl``), hard-linking
        what is unchanged since ``target.previous``; UsageError when the folder is not one."""
        return take(self.host, self.store, self.name, self.config, target.folder, target.previous)

    def verify(self, snapshot: Snapshot, deep: bool = False) -> dict[str, Any]:
        """Every stored file hashed and every entry compared with the index (``deep`` adds
        nothing: the tree is always checked whole); every problem is listed in ``problems``."""
        try:
            manifest = section(snapshot, self.name)
        except VerificationError as exc:
            return {"problems": [str(exc)]}
        return verify_tree(self.store, snapshot, self.name, manifest)

    def damage(self, snapshot: Snapshot, verified: VerifiedCache | None = None) -> str | None:
        """Its index is missing or changed since the snapshot was sealed (hashed unless
        ``verified`` found it sealed as it is), or None."""
        return index_damage(self.store, snapshot, self.name, verified)

    def restore_target(self, snapshot: Snapshot, request: RestoreRequest) -> RestoreTarget:
        """The folder a restore would replace (``request.to``, else the snapshot's source
        resolved on the host) and how many entries it holds now (excludes left out), read-only.
        Whether the folder may be written at all is the caller's policy (``components.targets``)."""
        manifest = section(snapshot, self.name)
        destination = request.to if request.to is not None else self.host.realpath(manifest.source)
        entries = restorer.count(self.host, destination, manifest.exclude)
        return RestoreTarget(
            component=self.name,
            description=destination,
            replaces=entries > 0,
            in_place=request.to is None,
            details={"target": destination, "entries": entries},
        )

    def restore(self, snapshot: Snapshot, request: RestoreRequest) -> dict[str, Any]:
        """Make the target (``request.to``, else the source resolved) exactly the snapshot's tree;
        see ``restorer.restore`` (``request.replace`` False: only a target that is still empty
        just before the swap is replaced)."""
        manifest = section(snapshot, self.name)
        return restorer.restore(
            self.host,
            self.store,
            self.name,
            snapshot,
            manifest,
            request.to,
            request.dry_run,
            request.run_id,
            request.replace,
        )

    def doctor(self) -> list[dict[str, Any]]:
        path = str(self.config.path)
        ok = self.host.is_dir(path) and self.host.access(path, os.R_OK | os.X_OK)
        return [
            {
                "check": f"{self.name}: source {path}",
                "ok": ok,
                "detail": "readable" if ok else "missing or not readable",
                "exit_code": 2,
            }
        ]

    # -- what workflows and the CLI ask of its type (Component protocol) --------------------------

    local_tools: ClassVar[tuple[str, ...]] = ("rsync",)
    stored_entries: ClassVar[frozenset[str]] = frozenset({TREE})  # compared with the index by verify
    temporary_name_folders: ClassVar[tuple[str, ...]] = ()
    verify_when_artifacts_fail: ClassVar[bool] = True  # the tree's own problems are listed too

    @classmethod
    def summary(cls, section: dict[str, Any], size: Callable[[float], str]) -> str:
        """``/srv/uploads: 120 files, 3.2 MB; copied 4, hard-linked 116 unchanged``."""
        recorded = FilesManifest.model_validate(section)
        return (
            f"{recorded.source}: {recorded.file_count} files, {size(recorded.bytes)}; "
            f"copied {recorded.copied_files}, hard-linked {recorded.linked_files} unchanged"
        )

    def describe_restore(self, section: dict[str, Any], to: str | None) -> str:
        """``into /srv/uploads``: ``to`` (``--to-path``), else the folder the snapshot read."""
        return f"into {to or section.get('source')}"
