"""Release component: Capistrano-style code releases on a host.

Layout::

    <path>/releases/<version>/   one folder per release (uploaded with rsync --link-dest)
    <path>/current               symlink to releases/<version>, switched atomically
    <path>/.aura/releases.json   each release's state: deployed, verified, failed, rolled_back

A release is uploaded into ``releases/<version>.partial`` and renamed when complete. The switch
makes a new symlink and renames it over ``current``: readers see the old or the new release,
never neither. Pruning keeps ``keep`` releases and never deletes the current release or the one
a rollback would go to (the newest other ``verified`` release). As a snapshot component it
records which release is current; restoring it switches ``current`` back.

Every file operation on the release folder goes through the component's host.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from aura_ops import logs
from aura_ops.checksum import file_digest
from aura_ops.components.base import Artifact, ComponentManifest, RestoreRequest, RestoreTarget, SnapshotTarget
from aura_ops.config import ReleaseConfig
from aura_ops.errors import AuraError, UsageError
from aura_ops.hosts import Command, Host
from aura_ops.repository import Snapshot, json_bytes, write_json

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
STATES = ("deployed", "verified", "failed", "rolled_back")
POINTER = "release.json"
WORK_SUFFIXES = (".partial", ".unpack")  # folders an upload works in; never a release
TARBALL = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_version(version: str) -> str:
    """``version`` when it can name a release folder; UsageError otherwise."""
    if not VERSION.match(version) or version.endswith(WORK_SUFFIXES):
        raise UsageError(f"invalid release version {version!r} (letters, digits, . _ + -)")
    return version


def make_rsync_upload(source: str, target: str, link_dest: str | None) -> Command:
    """Hard-link a file from the current release exactly when its content (``--checksum``) and
    mode are the same. rsync's default quick check (size, mtime to the second) would link an edited
    file; and with ``-a`` (``--times``) rsync links only files whose mtime also matches, which a
    release built from a fresh checkout never has, so times are not copied (``--no-times``): a file
    in a release carries the time it was first uploaded with that content."""
    argv = ["rsync", "-a", "--no-times", "--delete", "--checksum"]
    if link_dest is not None:
        argv.append(f"--link-dest={link_dest}")
    return Command((*argv, "--", f"{source}/", f"{target}/"))


class ReleaseManifest(ComponentManifest):
    """The release section of a snapshot: the release folder and which release was current."""

    type: Literal["release"] = "release"
    path: str
    current: str | None = None


class ReleaseComponent:
    """The releases of one application in ``config.path`` on ``host``."""

    manifest_model: ClassVar[type[ComponentManifest]] = ReleaseManifest
    type: ClassVar[str] = "release"
    restore_to: ClassVar[str | None] = None

    def __init__(self, name: str, config: ReleaseConfig, host: Host, store: Host | None = None) -> None:
        self.name = name
        self.config = config
        self.host = host
        self.store = store if store is not None else host
        self.path = str(config.path)
        self.releases = f"{self.path}/releases"
        self.configured = True

    @classmethod
    def unconfigured(cls, name: str, section: dict[str, Any], host: Host) -> ReleaseComponent:
        """The releases at the path the snapshot recorded, read-only: verify reports the recorded
        release only, restore raises UsageError (no configuration to switch by)."""
        component = cls(name, ReleaseConfig.model_validate({"type": "release", "path": section["path"]}), host)
        component.configured = False
        return component

    def describe(self) -> str:
        return f"releases in {self.path} on {self.host.name}"

    def release_path(self, version: str) -> str:
        return f"{self.releases}/{version}"

    @property
    def _state_file(self) -> str:
        return f"{self.path}/.aura/releases.json"

    # ------------------------------------------------------------ state

    def states(self) -> dict[str, dict[str, Any]]:
        """Each release's state and the time it entered each one (empty when none is recorded)."""
        try:
            data: dict[str, dict[str, Any]] = json.loads(self.host.read_text(self._state_file))
            return data
        except (OSError, ValueError):
            return {}

    def mark(self, version: str, state: str) -> None:
        """Record a release's state (with the time it entered it)."""
        if state not in STATES:
            raise UsageError(f"unknown release state {state!r}")
        data = self.states()
        entry = data.setdefault(version, {})
        entry["state"] = state
        entry[state] = _now()
        self.host.mkdir(f"{self.path}/.aura", mode=0o700, parents=True, exist_ok=True)
        self.host.write_atomic(self._state_file, json_bytes(data), mode=0o600)
        logs.get().info("release.marked", version=version, state=state)

    def current(self) -> str | None:
        """The release ``current`` points at, or None."""
        try:
            return Path(self.host.readlink(f"{self.path}/current")).name
        except OSError:
            return None

    def is_installed(self, version: str) -> bool:
        return self.host.is_dir(self.release_path(version))

    def installed(self) -> list[str]:
        """Complete releases, oldest first (by the time they were deployed, then by name)."""
        if not self.host.is_dir(self.releases):
            return []
        data = self.states()
        names = [
            name
            for name in self.host.listdir(self.releases)
            if not name.endswith(WORK_SUFFIXES) and self.host.is_dir(self.release_path(name))
        ]
        return sorted(names, key=lambda v: (data.get(v, {}).get("deployed", ""), v))

    def rollback_target(self) -> str | None:
        """The newest verified release that is not current: where a rollback goes."""
        data, live = self.states(), self.current()
        verified = [v for v in self.installed() if v != live and data.get(v, {}).get("state") == "verified"]
        return verified[-1] if verified else None

    # ------------------------------------------------------------ changes

    def upload(self, version: str, source: str | Path) -> dict[str, Any]:
        """Put ``source`` (a folder or a tarball the host can read) into ``releases/<version>``;
        unchanged files are hard links to the current release. Refuses to replace the current
        release (UsageError)."""
        check_version(version)
        source = str(source)
        if version == self.current():
            raise UsageError(f"release {version} is the current release; it cannot be uploaded again")
        if not self.host.exists(source):
            raise UsageError(f"release source {source} does not exist")
        is_folder = self.host.is_dir(source)
        self.host.make_user_dirs(self.releases)  # readable by the web server as the user's own folders are
        partial, final = f"{self.releases}/{version}.partial", self.release_path(version)
        unpacked = f"{self.releases}/{version}.unpack"
        self._discard(partial)
        self._discard(unpacked)
        if not is_folder and not source.endswith(TARBALL):
            raise UsageError(f"release source {source} is neither a folder nor a tarball ({', '.join(TARBALL)})")
        live = self.current()
        link_dest = self.release_path(live) if live else None
        try:
            if not is_folder:
                # Unpacked next to the releases, then copied like a folder so that a tarball's
                # unchanged files are hard links to the current release too.
                self.host.mkdir(unpacked)
                self.host.chmod(unpacked, 0o777 & ~self.host.user_umask())  # rsync gives the release this mode
                self.host.run(Command(("tar", "-x", "-f", source, "-C", unpacked)))
            self.host.run(make_rsync_upload(source if is_folder else unpacked, partial, link_dest))
        except BaseException:
            self._discard(partial)  # never a release: what a failed or interrupted copy made goes
            raise
        finally:
            self._discard(unpacked)
        self.host.remove_tree(final)
        self.host.rename(partial, final)
        self.host.fsync_dir(self.releases)
        self.mark(version, "deployed")
        return {"version": version, "path": final}

    def remove(self, version: str) -> None:
        """Remove release ``version`` and the folders an upload of it works in, unless it is current."""
        if self.current() == version:
            return
        for name in (version, *(version + suffix for suffix in WORK_SUFFIXES)):
            self._discard(f"{self.releases}/{name}")

    def _discard(self, path: str) -> None:
        """Remove a folder an upload made, as far as it can be (what is left is never a release)."""
        with contextlib.suppress(OSError):
            self.host.remove_tree(path)

    def switch(self, version: str) -> str | None:
        """Point ``current`` at ``version`` atomically; return the version it pointed at before."""
        check_version(version)
        if not self.is_installed(version):
            raise UsageError(f"release {version} is not installed in {self.releases}")
        before = self.current()
        self.host.replace_symlink(f"releases/{version}", f"{self.path}/current")
        logs.get().info("release.switched", version=version, previous=before)
        return before

    def unlink_current(self) -> None:
        """Remove ``current`` (when no release was live before the one it points at)."""
        self.host.remove(f"{self.path}/current", missing_ok=True)

    def prune(self, protect: set[str] | None = None) -> list[str]:
        """Delete the oldest releases beyond ``keep``; never current, the rollback target, or ``protect``."""
        keep = set(protect or set()) | {v for v in (self.current(), self.rollback_target()) if v}
        releases = self.installed()
        removable = [v for v in releases if v not in keep]
        doomed = removable[: max(0, len(releases) - self.config.keep)]
        for version in doomed:
            self.host.remove_tree(self.release_path(version))
            logs.get().info("release.pruned", version=version)
        return doomed

    # ------------------------------------------------------------ as a snapshot component

    def snapshot(self, target: SnapshotTarget) -> ReleaseManifest:
        """Record which release is current (and the states), so a restore can switch back."""
        current = self.current()
        pointer = {"current": current, "installed": self.installed(), "states": self.states()}
        write_json(target.folder / POINTER, pointer)
        digest, size = file_digest(target.folder / POINTER)
        return ReleaseManifest(path=self.path, current=current, artifacts={POINTER: Artifact(size=size, hash=digest)})

    def verify(self, snapshot: Snapshot, deep: bool) -> dict[str, Any]:
        """Whether the release the snapshot recorded as current is still installed."""
        return _verify_entry(snapshot.manifest["components"][self.name], self if self.configured else None)

    def damage(self, snapshot: Snapshot, verified: object = None) -> str | None:
        """None: nothing beyond the manifest's checksums to distrust."""
        return None

    def restore_target(self, snapshot: Snapshot, request: RestoreRequest) -> RestoreTarget | None:
        version = self._recorded(snapshot)
        now = self.current()
        return RestoreTarget(
            component=self.name,
            description=f"{self.path}/current on {self.host.name}",
            replaces=now is not None and now != version,
            in_place=True,
            details={"current": now, "switch_to": version},
        )

    def restore(self, snapshot: Snapshot, request: RestoreRequest) -> dict[str, Any]:
        """Switch ``current`` back to the release the snapshot recorded."""
        if not self.configured:
            raise UsageError(f"component {self.name} is not in the configuration: no releases to switch")
        version = self._recorded(snapshot)
        if request.dry_run:
            return {"dry_run": True, "changes": [f"switch {self.path}/current to {version} (now {self.current()})"]}
        before = self.switch(version)
        return {"release": version, "previous": before}

    def _recorded(self, snapshot: Snapshot) -> str:
        version: str | None = snapshot.manifest["components"][self.name].get("current")
        if version is None:
            raise AuraError(f"{self.name}: the snapshot recorded no current release")
        return version

    def doctor(self) -> list[dict[str, Any]]:
        ok = self.host.is_dir(self.path) and self.host.access(self.path, os.W_OK)
        detail = "missing or not writable"
        if ok:
            detail = f"current {self.current() or 'none'}, {len(self.installed())} releases"
        return [{"check": f"{self.name}: release path {self.path}", "ok": ok, "detail": detail, "exit_code": 2}]

    # -- what workflows and the CLI ask of its type (Component protocol) --------------------------

    local_tools: ClassVar[tuple[str, ...]] = ()
    stored_entries: ClassVar[frozenset[str]] = frozenset()
    temporary_name_folders: ClassVar[tuple[str, ...]] = ("", ".aura")  # current, and the release states
    verify_when_artifacts_fail: ClassVar[bool] = False

    @classmethod
    def summary(cls, section: dict[str, Any], size: Callable[[float], str]) -> str:
        """``/srv/app: current v1.2``."""
        recorded = ReleaseManifest.model_validate(section)
        return f"{recorded.path}: current {recorded.current}"

    def describe_restore(self, section: dict[str, Any], to: str | None) -> str:
        """``into /srv/app (current -> v1.2)``: the release the snapshot recorded as current."""
        return f"into {section.get('path')} (current -> {section.get('current')})"


def _verify_entry(entry: dict[str, Any], component: ReleaseComponent | None) -> dict[str, Any]:
    report: dict[str, Any] = {"current": entry.get("current")}
    if component is not None and entry.get("current"):
        report["still_installed"] = component.is_installed(entry["current"])
    return report
