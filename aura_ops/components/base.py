"""The Component protocol: what every component type (postgres, files, release, docker) offers.

A component is one configured thing on one host: it is built from its config section and the
``Host`` it lives on, and it only touches that machine through the host. Its part of a snapshot
is a folder of artifacts on the control machine (``SnapshotTarget.folder``, inside the snapshot
being written) and a typed manifest section (a ``ComponentManifest`` subclass, stored in the
snapshot's manifest under the component's name). Workflows (backup, verify, restore, deploy)
call components only through this protocol; nothing outside a component's own package tells the
types apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from aura_ops.hosts.base import Host
from aura_ops.repository.verified import VerifiedCache


class Artifact(BaseModel):
    """One file of a component's part of a snapshot: its size and checksum. The manifest's key
    for the checksum is ``hash`` (its algorithm is the manifest's ``checksum_algorithm``: sha256,
    blake2b-256 in old snapshots); ``ComponentManifest.section`` writes it back under that key."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    size: int
    sha256: str = Field(alias="hash")


class ComponentManifest(BaseModel):
    """The manifest section every component type writes; each type adds its own typed fields.

    Unknown keys are kept (``extra="allow"``): a manifest written by a newer aura-ops still loads,
    and a section read back is written back unchanged."""

    model_config = ConfigDict(extra="allow")

    type: str
    artifacts: dict[str, Artifact] = {}

    def section(self) -> dict[str, Any]:
        """The section as the snapshot's manifest stores it: the keys it was made or read with
        (a field never set stays absent, as in a manifest that predates it), artifacts' checksums
        under ``hash``."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        data["type"] = self.type  # a model's default type is never "unset" away
        return data


@dataclass(frozen=True)
class SnapshotTarget:
    """Where a component writes its part of a snapshot being taken.

    ``folder`` is on the control machine, inside the snapshot's partial folder (the repository
    commits or discards it as a whole). ``previous`` is the newest sealed snapshot holding a usable
    part of this component (for incremental copies), or None."""

    snapshot_id: str
    folder: Path
    previous: Any = None  # repository.Snapshot | None (kept loose: the repository imports no component)


@dataclass(frozen=True)
class RestoreRequest:
    """What the user asked a restore to do.

    ``to`` is ``--to-database`` / ``--to-path`` (None: in place). ``replace`` is the user's consent
    (``--yes`` or a confirmed prompt) to replace existing data at the target."""

    to: str | None = None
    dry_run: bool = False
    replace: bool = False
    run_id: str = ""
    with_globals: bool = False
    globals_overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreTarget:
    """What a restore would write, found read-only before anything is touched (for consent)."""

    component: str
    description: str  # e.g. "database shop on local", "/srv/app/uploads"
    replaces: bool  # existing data would be replaced
    in_place: bool
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Component(Protocol):
    """One configured component on one host."""

    manifest_model: ClassVar[type[ComponentManifest]]
    type: ClassVar[str]
    # Which ``restore --to-...`` option names another target for it ("path": ``--to-path``,
    # "database": ``--to-database``), or None: it is restored in place only. A restore with that
    # option needs exactly one component taking it (``RestoreRequest.to`` is only ever its value).
    restore_to: ClassVar[str | None]
    name: str
    host: Host
    # The control machine, where the repository's snapshot folders are: a component reads and
    # writes its part of a snapshot (``SnapshotTarget.folder``, ``Snapshot.component_dir``) only
    # through it. ``build`` passes the inventory's local host; a component made without one uses
    # its own host, which is the control machine as long as every host is local.
    store: Host
    # Programs it runs on the control machine (``doctor`` checks each once), e.g. ``("rsync",)``.
    local_tools: ClassVar[tuple[str, ...]]
    # Names at the top of its folder in a snapshot besides its artifacts' (e.g. a stored tree
    # that its own ``verify`` compares with an index); anything else there is a verify problem.
    stored_entries: ClassVar[frozenset[str]]
    # Whether ``verify`` still runs when one of its artifacts failed its checksum: True when its
    # own checks find more than the artifact check (every file of a stored tree), so a verify
    # lists every problem; False when they would only fail again on the same artifact.
    verify_when_artifacts_fail: ClassVar[bool]
    # Folders, relative to its configured ``path``, where it writes files under per-process
    # temporary names (``.name.aura-<pid>.tmp``) that a kill can leave: the next locked command
    # removes those of dead processes there (``state.temporaries.remove_stale_names``).
    temporary_name_folders: ClassVar[tuple[str, ...]]

    @classmethod
    def unconfigured(cls, name: str, section: dict[str, Any], host: Host) -> Component:
        """The component ``name`` of a snapshot whose configuration no longer names it (or names
        another type), built from its manifest ``section`` so the snapshot can still be verified
        and restored; what it cannot do without its configuration raises UsageError/ConfigError."""
        ...

    def describe(self) -> str:
        """What it names on its host, for the first line of a command's output."""
        ...

    def snapshot(self, target: SnapshotTarget) -> ComponentManifest:
        """Write this component's part of a snapshot into ``target.folder``; return its section."""
        ...

    def verify(self, snapshot: Any, deep: bool) -> dict[str, Any]:
        """Check its stored part of ``snapshot`` (a ``repository.Snapshot``) against the manifest;
        the report's ``problems`` list is empty when all is well."""
        ...

    def damage(self, snapshot: Any, verified: VerifiedCache | None = None) -> str | None:
        """Why its stored part of ``snapshot`` cannot be trusted beyond the manifest's checks
        (cheap, read-only: e.g. an index changed since it was sealed), or None. A damaged part is
        never the base of an incremental snapshot, and ``snapshots list`` shows it. ``verified``:
        a stored file found there with its recorded hash is not hashed again; one hashed and found
        sealed is added."""
        ...

    def restore_target(self, snapshot: Any, request: RestoreRequest) -> RestoreTarget | None:
        """What ``restore`` would write (read-only), or None when it writes nothing."""
        ...

    def restore(self, snapshot: Any, request: RestoreRequest) -> dict[str, Any]:
        """Put its part of ``snapshot`` back (verified before the target is touched)."""
        ...

    def doctor(self) -> list[dict[str, Any]]:
        """Checks of what it needs on its host (tools, access), each ``{"check", "ok", "detail"}``."""
        ...

    @classmethod
    def summary(cls, section: dict[str, Any], size: Callable[[float], str]) -> str:
        """One line on what its manifest ``section`` recorded, for ``snapshots show`` (after the
        component's name and type); ``size`` writes a number of bytes. Needs no host, never fails
        on a section the repository accepted (a field an old snapshot lacks shows as ``?``)."""
        ...

    def describe_restore(self, section: dict[str, Any], to: str | None) -> str:
        """What a restore of its part of a snapshot (its manifest ``section``) would write, for the
        line a command prints first: e.g. ``into database shop on 127.0.0.1:5432``; ``to`` is the
        value of its ``restore_to`` option (None: in place). Never connects, never fails."""
        ...


@runtime_checkable
class Service(Component, Protocol):
    """A component that runs: it can be stopped, started and checked (containers)."""

    def stop(self) -> list[str]: ...
    def start(self, names: list[str] | None = None) -> list[str]: ...
    def check(self) -> list[dict[str, Any]]: ...
