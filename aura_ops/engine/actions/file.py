"""The ``file`` action: write a file atomically, and put back exactly what was there on undo."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from aura_ops.engine.actions.base import Action, Context, _Params
from aura_ops.errors import AuraError, VerificationError
from aura_ops.hosts import FileStat, Host


class FileParams(_Params):
    path: str
    content: str
    mode: int | None = None


class FileAction(Action):
    """Write a file atomically on the local host; compensation puts back exactly what was at the
    path: the file (content, mode, owner, times), the symlink (its own link text and owner), or
    nothing.

    What was there is recorded before the first write and never replaced afterwards, so a crash
    between recording and writing, or a re-apply on resume, is safe: a file's content is copied
    into the run's folder in the state folder first, then the record (kind, mode, owner, times,
    link text, and the copy's size and SHA-256) is journaled as the step's saved state, which
    commits it. A run an older aura-ops began kept its record in the run's folder
    (``<step>.saved.json``; before that ``<step>.orig`` or ``<step>.absent``): still honoured. A
    symlink at the path is replaced by the file (the target it points at is not written); a
    directory or any other kind of file is refused before anything changes. Replacing a file
    keeps its owner (when aura-ops may set it) and, without ``mode``, its mode.
    """

    Params = FileParams

    def describe(self, p: FileParams, ctx: Context) -> tuple[str, str]:
        return (
            f"write {p.path} ({len(p.content.encode())} bytes)",
            f"put back what was at {p.path} (the file, symlink or nothing)",
        )

    @staticmethod
    def _host(ctx: Context) -> Host:
        return ctx.hosts.local()

    @staticmethod
    def _run_file(ctx: Context, suffix: str) -> str:
        """A file of this step in the run's folder (on the control machine)."""
        return str(ctx.work_dir / f"{ctx.step}{suffix}")

    def can_check(self, p: FileParams) -> bool:
        return True

    def check(self, p: FileParams, ctx: Context) -> bool:
        host = self._host(ctx)
        try:
            st = host.stat(p.path, follow_symlinks=False)
            if st is None or not st.is_file or (p.mode is not None and st.mode & 0o7777 != p.mode):
                return False
            return host.read_bytes(p.path) == p.content.encode()
        except OSError:
            return False

    def _older_record(self, ctx: Context) -> dict[str, Any] | None:
        """What an older aura-ops saved in the run's folder: its record, or a marker that the
        content with its mode (``.orig``) or the absence (``.absent``) was saved."""
        control = ctx.hosts.local()
        saved = self._run_file(ctx, ".saved.json")
        if control.exists(saved):
            loaded: dict[str, Any] = json.loads(control.read_text(saved))
            return loaded
        if any(control.exists(self._run_file(ctx, suffix)) for suffix in (".orig", ".absent")):
            return {"kind": "legacy"}
        return None

    def _record(self, p: FileParams, ctx: Context) -> dict[str, Any]:
        """What was at the path before this step first wrote it: recalled, or recorded now."""
        recorded = _own(ctx.remembered()) or self._older_record(ctx)
        if recorded is not None:
            return recorded
        host, control = self._host(ctx), ctx.hosts.local()
        original = _original(host, p.path)
        if original["kind"] == "file":
            data = host.read_bytes(p.path)
            control.mkdir(str(ctx.work_dir), mode=0o700, parents=True, exist_ok=True)
            control.write_atomic(self._run_file(ctx, ".content"), data, mode=0o600)
            original.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        ctx.remember(original)
        return original

    def apply(self, p: FileParams, ctx: Context) -> dict[str, Any]:
        host = self._host(ctx)
        _original(host, p.path)  # refuses a directory or a special file before anything is saved
        original = self._record(p, ctx)
        mode, owner = 0o644, None
        if original["kind"] == "file":
            mode, owner = original["mode"], (original["uid"], original["gid"])
        elif original["kind"] in ("symlink", "legacy"):
            try:
                followed = host.stat(p.path)
            except OSError:  # a symlink loop (ELOOP) or a link through a file: nothing to take a mode from
                followed = None
            mode = followed.mode & 0o7777 if followed is not None else mode
        _write(host, p.path, p.content.encode(), p.mode if p.mode is not None else mode, owner)
        return {"path": str(Path(p.path)), "bytes": len(p.content.encode())}

    def verify(self, p: FileParams, ctx: Context, outputs: dict[str, Any]) -> None:
        if not self.check(p, ctx):
            raise VerificationError(f"{p.path} does not hold the content just written")

    def compensate(self, p: FileParams, ctx: Context, outputs: dict[str, Any]) -> None:
        host, control = self._host(ctx), ctx.hosts.local()
        original = _own(ctx.remembered()) or self._older_record(ctx)
        if original is None:
            return  # nothing recorded: this step never wrote the path
        owner = (original["uid"], original["gid"]) if "uid" in original else None
        if original["kind"] == "legacy":  # saved by an older aura-ops: content and mode only
            legacy = self._run_file(ctx, ".orig")
            saved = control.stat(legacy)
            if saved is not None:
                _write(host, p.path, control.read_bytes(legacy), saved.mode & 0o7777)
            elif control.exists(self._run_file(ctx, ".absent")):
                host.remove(p.path, missing_ok=True)
        elif original["kind"] == "absent":
            st = host.stat(p.path, follow_symlinks=False)
            if st is not None and (st.is_symlink or st.is_file):
                host.remove(p.path)
        elif original["kind"] == "symlink":
            _symlink(host, p.path, original["link"], owner)
        else:
            copy = self._run_file(ctx, ".content")
            data = control.read_bytes(copy)
            if "sha256" in original and hashlib.sha256(data).hexdigest() != original["sha256"]:
                raise AuraError(f"the saved copy of {p.path} ({copy}) is damaged; nothing was put back")
            _write(host, p.path, data, original["mode"], owner, (original["atime_ns"], original["mtime_ns"]))


def _original(host: Host, path: str) -> dict[str, Any]:
    """What is at ``path`` (not following a symlink), as the record a file step keeps;
    AuraError for a directory or a special file, which a file step never replaces."""
    st: FileStat | None = host.stat(path, follow_symlinks=False)
    if st is None:
        return {"kind": "absent"}
    if st.is_symlink:
        return {"kind": "symlink", "link": host.readlink(path), "uid": st.uid, "gid": st.gid}
    if st.is_file:
        return {
            "kind": "file",
            "mode": st.mode & 0o7777,
            "uid": st.uid,
            "gid": st.gid,
            "atime_ns": st.atime_ns,
            "mtime_ns": st.mtime_ns,
        }
    what = "a directory" if st.is_dir else "not a regular file"
    raise AuraError(f"{Path(path)} is {what}: a file step writes regular files only; nothing was changed")


def _write(
    host: Host,
    path: str,
    data: bytes,
    mode: int,
    owner: tuple[int, int] | None = None,
    times: tuple[int, int] | None = None,
) -> None:
    """Replace ``path`` atomically; the owner is given back where we may (root, or the same
    user), elsewhere the file keeps ours."""
    try:
        host.write_atomic(path, data, mode=mode, owner=owner, times=times)
    except PermissionError:
        if owner is None:
            raise
        host.write_atomic(path, data, mode=mode, times=times)


def _symlink(host: Host, path: str, link: str, owner: tuple[int, int] | None) -> None:
    """Make ``path`` the symlink ``link`` atomically, owned by ``owner`` where we may."""
    target = Path(path)
    temporary = str(target.with_name(f".{target.name}.aura-tmp"))
    host.remove(temporary, missing_ok=True)
    host.symlink(link, temporary)
    if owner is not None:
        with contextlib.suppress(PermissionError):
            host.chown(temporary, *owner, follow_symlinks=False)
    host.rename(temporary, path)
    host.fsync_dir(str(target.parent))


def _own(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The step's journaled state if a file action recorded it (it has a ``kind``): a step whose
    custom undo is a ``file`` action shares its journal slot with the step's own action (e.g. a
    ``release_switch`` remembering ``previous``), whose record is not a file's."""
    return state if state is not None and "kind" in state else None
