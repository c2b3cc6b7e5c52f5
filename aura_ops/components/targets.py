"""Where a files restore may write: the one list of folders that are never a restore's target.

A target is resolved first on the host it is on (``Host.realpath``: symlinks anywhere in it
followed), then refused (UsageError, exit 2) when it is

- ``/`` or one of the operating system's trees below (``SYSTEM_TREES``, e.g. ``/etc``,
  ``/usr/lib``, ``/proc/self``), or one of the ``SYSTEM_FOLDERS`` themselves (``/var``,
  ``/home``, ``/srv``, ...; a folder below those, such as ``/srv/site`` or ``/var/www/app``, is
  fine), or the invoking user's home folder itself; these apply to ``--to-path``;
- the repository, the state folder or the log folder, or a folder inside one of them, or a
  folder that holds one of them (in place too: a restore would otherwise delete them). These are
  on the control machine and resolved there (``local``: the inventory's local host, given by the
  caller).

An in-place restore goes only to the folder the backup read: the snapshot's source resolved now
must be the folder recorded at backup time (``source_resolved``; the recorded ``source`` itself
for snapshots made before it was recorded). A source that has since become a symlink (or has a
symlink on its way) to anywhere else is refused; ``--to-path`` names a target explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aura_ops.errors import UsageError
from aura_ops.hosts.base import Host

# Refused together with everything below them.
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
# Refused themselves (what is below them is where restores usually go).
SYSTEM_FOLDERS = (
    "/",
    "/home",
    "/lost+found",
    "/media",
    "/mnt",
    "/opt",
    "/root",
    "/snap",
    "/srv",
    "/tmp",
    "/var",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/spool",
    "/var/tmp",
)


def resolve(host: Host, path: str | os.PathLike[str]) -> Path:
    """``path`` on ``host`` with every symlink in it followed."""
    return Path(host.realpath(os.path.expanduser(os.fspath(path))))


def protected(config: Any) -> dict[str, Path]:
    """aura-ops' own folders: no restore may write in, over or around them."""
    return {
        "the repository": config.repository.path,
        "the state folder": config.state.path,
        "the log folder": config.logging.dir,
    }


def refusal(host: Host, target: Path, own: dict[str, Path], system: bool, *, local: Host) -> str | None:
    """Why ``target`` (resolved on ``host``) may not be restored into, or None; ``own`` are
    folders of the control machine (``local``)."""
    if system:
        for tree in SYSTEM_TREES:
            real = resolve(host, tree)
            if target == real or real in target.parents:
                return f"{target} is {'the system folder' if target == real else 'inside the system folder'} {tree}"
        for folder in (*SYSTEM_FOLDERS, str(Path.home())):
            if target == resolve(host, folder):
                return f"{target} is the system folder {folder}"
    for what, path in own.items():
        real = resolve(local, path)
        if target == real:
            return f"{target} is {what}"
        if real in target.parents:
            return f"{target} is inside {what} ({real})"
        if target in real.parents:
            return f"{target} holds {what} ({real})"
    return None


def check(host: Host, path: str | os.PathLike[str], config: Any, to_path: bool, *, local: Host) -> Path:
    """The resolved target on ``host`` of a files restore; UsageError (exit 2) when it is refused.
    ``local``: the control machine, where aura-ops' own folders are."""
    target = resolve(host, path)
    reason = refusal(host, target, protected(config), system=to_path, local=local)
    if reason:
        option = "--to-path" if to_path else "an in-place restore"
        raise UsageError(f"refused: {option} {path}: {reason}; nothing was changed")
    if host.exists(str(target)) and not host.is_dir(str(target)):
        raise UsageError(f"refused: {path} is not a folder; nothing was changed")
    return target


def check_in_place(host: Host, component: dict[str, Any], config: Any, *, local: Host) -> Path:
    """The resolved target of an in-place files restore of a manifest's ``component`` entry;
    UsageError (exit 2) when the source now leads elsewhere than the folder the backup read,
    or the target is refused (see ``check``)."""
    source = component["source"]
    recorded = Path(os.path.normpath(component.get("source_resolved") or source))
    target = resolve(host, source)
    if target != recorded:
        raise UsageError(
            f"refused: an in-place restore of {source}: it now leads to {target}, not to {recorded} where the "
            "snapshot was read from; name the folder with --to-path if that is really meant; nothing was changed"
        )
    return check(host, target, config, to_path=False, local=local)
