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
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from aura_ops import logs
from aura_ops.checksum import fsync_dir
from aura_ops.config import ReleaseConfig
from aura_ops.errors import AuraError, UsageError
from aura_ops.hosts import Command, Host, make_user_dirs, user_umask
from aura_ops.repository import Snapshot, write_json

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
STATES = ("deployed", "verified", "failed", "rolled_back")
POINTER = "release.json"
WORK_SUFFIXES = (".partial", ".unpack")  # folders an upload works in; never a release
TARBALL = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_version(version: str) -> str:
    if not VERSION.match(version) or version.endswith(WORK_SUFFIXES):
        raise UsageError(f"invalid release version {version!r} (letters, digits, . _ + -)")
    return version


def releases_dir(cfg: ReleaseConfig) -> Path:
    return cfg.path / "releases"


def _state_file(cfg: ReleaseConfig) -> Path:
    return cfg.path / ".aura" / "releases.json"


def states(cfg: ReleaseConfig) -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(_state_file(cfg).read_text())
        return data
    except (OSError, ValueError):
        return {}


def mark(cfg: ReleaseConfig, version: str, state: str) -> None:
    """Record a release's state (with the time it entered it)."""
    if state not in STATES:
        raise UsageError(f"unknown release state {state!r}")
    data = states(cfg)
    entry = data.setdefault(version, {})
    entry["state"] = state
    entry[state] = _now()
    _state_file(cfg).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(_state_file(cfg), data)
    logs.get().info("release.marked", version=version, state=state)


def current(cfg: ReleaseConfig) -> str | None:
    link = cfg.path / "current"
    try:
        return Path(os.readlink(link)).name
    except (FileNotFoundError, OSError):
        return None


def installed(cfg: ReleaseConfig) -> list[str]:
    """Complete releases, oldest first (by the time they were deployed, then by name)."""
    folder = releases_dir(cfg)
    if not folder.is_dir():
        return []
    data = states(cfg)
    names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.endswith(WORK_SUFFIXES)]
    return sorted(names, key=lambda v: (data.get(v, {}).get("deployed", ""), v))


def make_rsync_upload(source: Path, target: Path, link_dest: Path | None) -> Command:
    """Hard-link a file from the current release exactly when its content (``--checksum``) and
    mode are the same. rsync's default quick check (size, mtime to the second) would link an edited
    file; and with ``-a`` (``--times``) rsync links only files whose mtime also matches, which a
    release built from a fresh checkout never has, so times are not copied (``--no-times``): a file
    in a release carries the time it was first uploaded with that content."""
    argv = ["rsync", "-a", "--no-times", "--delete", "--checksum"]
    if link_dest is not None:
        argv.append(f"--link-dest={link_dest}")
    return Command((*argv, "--", f"{source}/", f"{target}/"))


def upload(host: Host, cfg: ReleaseConfig, version: str, source: Path) -> dict[str, Any]:
    """Put ``source`` (a folder or a tarball) into ``releases/<version>``; unchanged files are
    hard links to the current release. Refuses to replace the current release."""
    check_version(version)
    if version == current(cfg):
        raise UsageError(f"release {version} is the current release; it cannot be uploaded again")
    if not source.exists():
        raise UsageError(f"release source {source} does not exist")
    folder = releases_dir(cfg)
    make_user_dirs(folder)  # readable by the web server as the user's own folders are
    partial, final = folder / f"{version}.partial", folder / version
    unpacked = folder / f"{version}.unpack"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(unpacked, ignore_errors=True)
    if not source.is_dir() and not source.name.endswith(TARBALL):
        raise UsageError(f"release source {source} is neither a folder nor a tarball ({', '.join(TARBALL)})")
    live = current(cfg)
    link_dest = folder / live if live else None
    try:
        if not source.is_dir():
            # Unpacked next to the releases, then copied like a folder so that a tarball's
            # unchanged files are hard links to the current release too.
            unpacked.mkdir()
            os.chmod(unpacked, 0o777 & ~user_umask())  # rsync gives the release this folder's mode
            host.run(Command(("tar", "-x", "-f", str(source), "-C", str(unpacked))))
        host.run(make_rsync_upload(source if source.is_dir() else unpacked, partial, link_dest))
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    os.rename(partial, final)
    fsync_dir(folder)
    mark(cfg, version, "deployed")
    return {"version": version, "path": str(final)}


def switch(cfg: ReleaseConfig, version: str) -> str | None:
    """Point ``current`` at ``version`` atomically; return the version it pointed at before."""
    check_version(version)
    if not (releases_dir(cfg) / version).is_dir():
        raise UsageError(f"release {version} is not installed in {releases_dir(cfg)}")
    before = current(cfg)
    temporary = cfg.path / ".current.aura-tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(f"releases/{version}", temporary)
    os.rename(temporary, cfg.path / "current")
    fsync_dir(cfg.path)
    logs.get().info("release.switched", version=version, previous=before)
    return before


def rollback_target(cfg: ReleaseConfig) -> str | None:
    """The newest verified release that is not current: where a rollback goes."""
    data, live = states(cfg), current(cfg)
    verified = [v for v in installed(cfg) if v != live and data.get(v, {}).get("state") == "verified"]
    return verified[-1] if verified else None


def prune(cfg: ReleaseConfig, protect: set[str] | None = None) -> list[str]:
    """Delete the oldest releases beyond ``keep``; never current, the rollback target, or ``protect``."""
    keep = set(protect or set()) | {v for v in (current(cfg), rollback_target(cfg)) if v}
    releases = installed(cfg)
    removable = [v for v in releases if v not in keep]
    excess = len(releases) - cfg.keep
    doomed = removable[: max(0, excess)]
    for version in doomed:
        shutil.rmtree(releases_dir(cfg) / version)
        logs.get().info("release.pruned", version=version)
    return doomed


# ---------------------------------------------------------------- as a snapshot component


def snapshot(host: Host, name: str, cfg: ReleaseConfig, dest: Path, previous: Snapshot | None) -> dict[str, Any]:
    """Record which release is current (and the states), so a restore can switch back."""
    pointer = {"current": current(cfg), "installed": installed(cfg), "states": states(cfg)}
    write_json(dest / POINTER, pointer)
    from aura_ops.checksum import file_digest

    digest, size = file_digest(dest / POINTER)
    return {
        "type": "release",
        "path": str(cfg.path),
        "current": pointer["current"],
        "artifacts": {POINTER: {"size": size, "hash": digest}},
    }


def restore(host: Host, name: str, snapshot: Snapshot, cfg: ReleaseConfig, dry_run: bool = False) -> dict[str, Any]:
    entry = snapshot.manifest["components"][name]
    version = entry.get("current")
    if version is None:
        raise AuraError(f"{name}: the snapshot recorded no current release")
    if dry_run:
        return {"dry_run": True, "changes": [f"switch {cfg.path}/current to {version} (now {current(cfg)})"]}
    before = switch(cfg, version)
    return {"release": version, "previous": before}


def verify(host: Host, name: str, cfg: ReleaseConfig | None, snapshot: Snapshot, deep: bool) -> dict[str, Any]:
    entry = snapshot.manifest["components"][name]
    report: dict[str, Any] = {"current": entry.get("current")}
    if cfg is not None and entry.get("current"):
        report["still_installed"] = (releases_dir(cfg) / entry["current"]).is_dir()
    return report


def doctor(host: Host, name: str, cfg: ReleaseConfig) -> list[dict[str, Any]]:
    ok = cfg.path.is_dir() and os.access(cfg.path, os.W_OK)
    detail = f"current {current(cfg) or 'none'}, {len(installed(cfg))} releases" if ok else "missing or not writable"
    return [{"check": f"{name}: release path {cfg.path}", "ok": ok, "detail": detail, "exit_code": 2}]
