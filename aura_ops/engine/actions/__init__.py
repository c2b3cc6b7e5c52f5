"""Playbook actions: a tiny protocol and an explicit registry.

Each action has a pydantic ``Params`` model for its ``with`` block and four operations:
``check`` (already applied? used on resume and by ``plan``), ``apply`` (returns outputs later
steps can reference), ``verify``, and ``compensate`` (undo; must be safe to call when the step
may or may not have been applied). ``describe`` says what apply and compensate would do,
masked, for ``plan``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from aura_ops import logs
from aura_ops.components.release import ReleaseComponent
from aura_ops.config import Config, PostgresConfig, ReleaseConfig
from aura_ops.errors import AuraError, ConfigError, VerificationError
from aura_ops.hosts import Command, FileStat, Host
from aura_ops.hosts.inventory import Inventory
from aura_ops.secrets import mask, mask_values
from aura_ops.state.journal import Journal

_BUILT_FROM_CONFIG: Any = None


@dataclass(frozen=True)
class Context:
    """What a step's action works with: the configuration, the hosts (from the inventory, shared
    by the whole command), and the run's journal, through which state passes from a step's apply
    to its undo (``remember``/``remembered``) and from its undo to the report (``record_undo``).

    ``hosts`` not given: an inventory of the configuration's own. ``journal`` None (``plan``):
    nothing is remembered, and an action that must remember refuses."""

    config: Config
    run_id: str
    step: str
    work_dir: Path  # per-run folder in the state folder, on the control machine (large saved bytes)
    timeout: float | None = None
    hosts: Inventory = _BUILT_FROM_CONFIG
    journal: Journal | None = None

    def __post_init__(self) -> None:
        if self.hosts is None:
            object.__setattr__(self, "hosts", Inventory(self.config))

    def remember(self, state: dict[str, Any]) -> None:
        """Journal what this step's undo will need, committed before the side effect it protects
        (kept as it is: the undo acts on it). Kept across a resume; ``remembered`` gives it back."""
        if self.journal is None:
            raise AuraError(f"step {self.step}: nothing can be remembered outside a run")
        self.journal.save_step_state(self.run_id, self.step, state)

    def remembered(self) -> dict[str, Any] | None:
        """What this step remembered in this run, or None."""
        return None if self.journal is None else self.journal.step_state(self.run_id, self.step)

    def record_undo(self, result: dict[str, Any]) -> None:
        """Journal (masked) what this step's compensation did, for the run's report."""
        if self.journal is not None:
            self.journal.step_undone(self.run_id, self.step, mask_values(result))


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Action:
    Params: ClassVar[type[_Params]] = _Params
    # A failed apply may have changed things half-way, and compensating is always safe: undo it too.
    undo_after_failure: ClassVar[bool] = False
    # Outputs that name things later steps and the undo act on (a snapshot id, a release, a
    # container): journaled as they are. Every other output is masked first (free text such as a
    # command's stdout may hold a secret); masking an identifier that happens to contain a weak
    # password's word would make the run act on the wrong thing.
    identifiers: ClassVar[frozenset[str]] = frozenset()

    def describe(self, p: Any, ctx: Context) -> tuple[str, str]:
        raise NotImplementedError

    def check(self, p: Any, ctx: Context) -> bool:
        return False

    def can_check(self, p: Any) -> bool:
        """Whether ``check`` tells applied from not applied (so a maybe-applied step can be judged)."""
        return bool(getattr(p, "check", None))

    def apply(self, p: Any, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def verify(self, p: Any, ctx: Context, outputs: dict[str, Any]) -> None:
        return None

    def compensate(self, p: Any, ctx: Context, outputs: dict[str, Any]) -> None:
        return None


# ---------------------------------------------------------------- command


class CommandParams(_Params):
    argv: list[str] = Field(min_length=1)
    undo: list[str] | None = None
    check: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class CommandAction(Action):
    """Run argv on the local host; ``undo`` argv compensates; ``check`` argv exit 0 = applied."""

    Params = CommandParams

    def describe(self, p: CommandParams, ctx: Context) -> tuple[str, str]:
        undo = mask(shlex.join(p.undo)) if p.undo else "nothing (no undo given)"
        return mask(shlex.join(p.argv)), undo

    def _run(self, argv: list[str], p: CommandParams, ctx: Context, check: bool = True) -> Any:
        return ctx.hosts.local().run(Command(tuple(argv), p.env, p.cwd), timeout=ctx.timeout, check=check)

    def check(self, p: CommandParams, ctx: Context) -> bool:
        return bool(p.check) and self._run(p.check or [], p, ctx, check=False).returncode == 0

    def apply(self, p: CommandParams, ctx: Context) -> dict[str, Any]:
        result = self._run(p.argv, p, ctx)
        return {"stdout": mask(result.text)[-4000:].strip(), "returncode": result.returncode}

    def compensate(self, p: CommandParams, ctx: Context, outputs: dict[str, Any]) -> None:
        if p.undo:
            self._run(p.undo, p, ctx)


# ---------------------------------------------------------------- sql


class SqlParams(_Params):
    component: str
    sql: str
    undo: str | None = None
    check: str | None = None


class SqlAction(Action):
    """Run SQL in one transaction on a configured postgres component; ``undo`` SQL compensates;
    ``check`` is a query whose first value is true when the change is already there."""

    Params = SqlParams

    def describe(self, p: SqlParams, ctx: Context) -> tuple[str, str]:
        return f"[{p.component}] {mask(p.sql)}", f"[{p.component}] {mask(p.undo)}" if p.undo else (
            "nothing (no undo given)"
        )

    def _connect(self, p: SqlParams, ctx: Context) -> Any:
        from aura_ops.components import postgres

        cfg = ctx.config.component(p.component)
        if not isinstance(cfg, PostgresConfig):
            raise ConfigError(f"step {ctx.step}: component {p.component} is not postgres")
        return postgres.connect(postgres.connection(p.component, cfg))

    def _execute(self, p: SqlParams, ctx: Context, statement: str) -> list[Any]:
        with contextlib.closing(self._connect(p, ctx)) as db:
            cursor = db.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
            db.commit()
        return [list(r) for r in rows]

    def check(self, p: SqlParams, ctx: Context) -> bool:
        if not p.check:
            return False
        rows = self._execute(p, ctx, p.check)
        return bool(rows and rows[0] and rows[0][0])

    def apply(self, p: SqlParams, ctx: Context) -> dict[str, Any]:
        return {"rows": self._execute(p, ctx, p.sql)[:100]}

    def compensate(self, p: SqlParams, ctx: Context, outputs: dict[str, Any]) -> None:
        if p.undo:
            self._execute(p, ctx, p.undo)


# ---------------------------------------------------------------- file


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
        recorded = ctx.remembered() or self._older_record(ctx)
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
            followed = host.stat(p.path)
            mode = followed.mode & 0o7777 if followed is not None else mode
        _write(host, p.path, p.content.encode(), p.mode if p.mode is not None else mode, owner)
        return {"path": str(Path(p.path)), "bytes": len(p.content.encode())}

    def verify(self, p: FileParams, ctx: Context, outputs: dict[str, Any]) -> None:
        if not self.check(p, ctx):
            raise VerificationError(f"{p.path} does not hold the content just written")

    def compensate(self, p: FileParams, ctx: Context, outputs: dict[str, Any]) -> None:
        host, control = self._host(ctx), ctx.hosts.local()
        original = ctx.remembered() or self._older_record(ctx)
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


# ---------------------------------------------------------------- wait


class WaitParams(_Params):
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(30, gt=0)
    interval: float = Field(1, gt=0)


class WaitAction(Action):
    """Poll a command until it exits 0, within ``timeout`` seconds."""

    Params = WaitParams

    def describe(self, p: WaitParams, ctx: Context) -> tuple[str, str]:
        return f"wait up to {p.timeout:g}s for `{mask(shlex.join(p.argv))}`", "nothing"

    def apply(self, p: WaitParams, ctx: Context) -> dict[str, Any]:
        deadline = time.monotonic() + p.timeout
        attempts = 0
        while True:
            attempts += 1
            result = ctx.hosts.local().run(Command(tuple(p.argv)), check=False, timeout=p.timeout)
            if result.returncode == 0:
                return {"attempts": attempts}
            if time.monotonic() + p.interval > deadline:
                raise AuraError(
                    f"`{mask(shlex.join(p.argv))}` did not succeed within {p.timeout:g}s ({attempts} attempts)"
                )
            time.sleep(p.interval)


# ---------------------------------------------------------------- snapshot / restore


class SnapshotParams(_Params):
    components: list[str] | None = None
    tags: list[str] = Field(default_factory=list)


class SnapshotAction(Action):
    """Take a snapshot (the snapshot engine); it is kept on compensation: a durable record."""

    identifiers = frozenset({"snapshot_id"})

    Params = SnapshotParams

    def describe(self, p: SnapshotParams, ctx: Context) -> tuple[str, str]:
        what = ", ".join(p.components or list(ctx.config.components))
        return f"snapshot {what}", "nothing (the snapshot is kept)"

    def apply(self, p: SnapshotParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.workflows import snapshots

        snapshot = snapshots.backup(ctx.config, p.components, p.tags, run_id=ctx.run_id)
        return {"snapshot_id": snapshot.id, "size": snapshot.manifest.get("size", 0)}


class RestoreParams(_Params):
    snapshot: str
    components: list[str] | None = None
    to_database: str | None = None
    to_path: str | None = None


class RestoreAction(Action):
    """Restore a snapshot. It cannot be undone by itself: take a snapshot step before it."""

    Params = RestoreParams

    def describe(self, p: RestoreParams, ctx: Context) -> tuple[str, str]:
        return f"restore snapshot {p.snapshot}", "nothing (take a snapshot step before it)"

    def apply(self, p: RestoreParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.workflows import snapshots

        return snapshots.restore(
            ctx.config,
            p.snapshot,
            p.components,
            p.to_database,
            Path(p.to_path) if p.to_path else None,
            run_id=ctx.run_id,
        )


REGISTRY: dict[str, Action] = {
    "command": CommandAction(),
    "sql": SqlAction(),
    "file": FileAction(),
    "wait": WaitAction(),
    "snapshot": SnapshotAction(),
    "restore": RestoreAction(),
}


# ---------------------------------------------------------------- deploy building blocks


def _release(ctx: Context) -> ReleaseComponent:
    """The deploy's release component, on its host."""
    name = ctx.config.only("release", ctx.config.deploy.release, "release")
    if name is None:
        raise ConfigError("a deploy needs a component of type release")
    cfg = ctx.config.component(name)
    assert isinstance(cfg, ReleaseConfig)
    return ReleaseComponent(name, cfg, ctx.hosts.for_component(name))


def _services(ctx: Context) -> Any:
    from aura_ops.components.containers import DockerComponent
    from aura_ops.config import DockerConfig
    from aura_ops.hosts.inventory import Inventory

    name = ctx.config.only("docker", ctx.config.deploy.services, "services")
    if name is None:
        return None
    cfg = ctx.config.component(name)
    assert isinstance(cfg, DockerConfig)
    return DockerComponent(name, cfg, Inventory(ctx.config).for_component(name))


def _postgres(ctx: Context, name: str) -> Any:
    """The configured postgres component ``name`` on its host."""
    from aura_ops.components.postgres import PostgresComponent
    from aura_ops.hosts.inventory import Inventory

    cfg = ctx.config.component(name)
    assert isinstance(cfg, PostgresConfig)
    return PostgresComponent(name, cfg, Inventory(ctx.config).for_component(name))


class ReleaseUploadParams(_Params):
    version: str
    source: str


class ReleaseUploadAction(Action):
    """Upload a release (it does not switch); compensation removes it unless it is current."""

    identifiers = frozenset({"version", "path"})

    Params = ReleaseUploadParams

    def describe(self, p: ReleaseUploadParams, ctx: Context) -> tuple[str, str]:
        return f"upload {p.source} as release {p.version}", f"remove release {p.version} (unless current)"

    def apply(self, p: ReleaseUploadParams, ctx: Context) -> dict[str, Any]:
        return _release(ctx).upload(p.version, str(Path(p.source)))

    def compensate(self, p: ReleaseUploadParams, ctx: Context, outputs: dict[str, Any]) -> None:
        _release(ctx).remove(p.version)


class ReleaseSwitchParams(_Params):
    version: str


class ReleaseSwitchAction(Action):
    """Point ``current`` at the version; compensation points it back and marks it rolled_back."""

    identifiers = frozenset({"previous"})

    Params = ReleaseSwitchParams

    def describe(self, p: ReleaseSwitchParams, ctx: Context) -> tuple[str, str]:
        return f"switch current to {p.version}", f"switch current back to {_release(ctx).current()}"

    def can_check(self, p: ReleaseSwitchParams) -> bool:
        return True

    def check(self, p: ReleaseSwitchParams, ctx: Context) -> bool:
        return _release(ctx).current() == p.version

    def apply(self, p: ReleaseSwitchParams, ctx: Context) -> dict[str, Any]:
        component = _release(ctx)
        if ctx.remembered() is None:  # journaled before the switch: a crash right after it loses no state
            ctx.remember({"previous": component.current()})
        return {"previous": component.switch(p.version)}

    def _previous(self, ctx: Context, outputs: dict[str, Any]) -> str | None:
        """The release that was current before this step: journaled, or in the run's folder
        (a run an older aura-ops began), or (last resort) the step's outputs."""
        recorded = ctx.remembered()
        if recorded is not None:
            return recorded.get("previous")
        control, older = ctx.hosts.local(), str(ctx.work_dir / f"{ctx.step}.previous")
        return control.read_text(older) if control.exists(older) else outputs.get("previous")

    def compensate(self, p: ReleaseSwitchParams, ctx: Context, outputs: dict[str, Any]) -> None:
        component = _release(ctx)
        previous = self._previous(ctx, outputs)
        if component.current() == p.version:
            if previous:
                component.switch(previous)
            else:
                component.unlink_current()
        if component.is_installed(p.version):
            component.mark(p.version, "rolled_back")


class ReleaseMarkParams(_Params):
    version: str
    state: str


class ReleaseMarkAction(Action):
    Params = ReleaseMarkParams

    def describe(self, p: ReleaseMarkParams, ctx: Context) -> tuple[str, str]:
        return f"mark release {p.version} {p.state}", "nothing"

    def apply(self, p: ReleaseMarkParams, ctx: Context) -> dict[str, Any]:
        _release(ctx).mark(p.version, p.state)
        return {"state": p.state}


class NoParams(_Params):
    pass


class ReleasePruneAction(Action):
    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return f"prune releases beyond keep={_release(ctx).config.keep}", "nothing (pruned releases are gone)"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        return {"pruned": _release(ctx).prune()}


class ServicesStopAction(Action):
    """Stop the deploy's containers (reverse order); compensation starts what it stopped."""

    identifiers = frozenset({"stopped"})

    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return "stop services", "start the services it stopped"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        services = _services(ctx)
        return {"stopped": services.stop() if services else []}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        services = _services(ctx)
        if services:
            services.start(outputs.get("stopped"))


class ServicesStartAction(Action):
    """Start the deploy's containers in order; compensation stops them again."""

    identifiers = frozenset({"started"})

    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return "start services", "stop them again"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        services = _services(ctx)
        return {"started": services.start() if services else []}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        services = _services(ctx)
        if services:
            services.stop()


class MigrateParams(_Params):
    snapshot: str
    version: str


class MigrateAction(Action):
    """Run ``deploy.migrate`` (argv) in the new release with the database's credentials in its
    environment; compensation restores the database in place from the run's snapshot."""

    Params = MigrateParams
    undo_after_failure = True  # a migration can fail half-way; restoring the snapshot is safe

    def _database(self, ctx: Context) -> str | None:
        return ctx.config.only("postgres", ctx.config.deploy.database, "database")

    def describe(self, p: MigrateParams, ctx: Context) -> tuple[str, str]:
        argv = ctx.config.deploy.migrate
        return (
            mask(shlex.join(argv)) if argv else "nothing (no deploy.migrate)",
            f"swap back {self._database(ctx) or 'no database'}'s clone, or restore it from snapshot {p.snapshot}",
        )

    def apply(self, p: MigrateParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.components import postgres

        argv = ctx.config.deploy.migrate
        if not argv:
            return {"migrated": False}
        env: dict[str, str] = {}
        database = self._database(ctx)
        if database:
            cfg = ctx.config.component(database)
            assert isinstance(cfg, PostgresConfig)
            env = postgres.connection(database, cfg).env()
        component = _release(ctx)  # the migration runs in the new release, on its host
        result = component.host.run(Command(tuple(argv), env, component.release_path(p.version)), timeout=ctx.timeout)
        return {"migrated": True, "stdout": mask(result.text)[-2000:].strip()}

    def compensate(self, p: MigrateParams, ctx: Context, outputs: dict[str, Any]) -> None:
        from aura_ops.components.postgres import clone as pgclone
        from aura_ops.workflows import snapshots

        database = self._database(ctx)
        if not database:
            return
        started = time.monotonic()
        # fast path: the clone this run took after stopping the services, swapped back in
        fast = ctx.config.deploy.fast_rollback != "off"
        done = pgclone.swap_back(_postgres(ctx, database), ctx.run_id) if fast else None
        if done is None:
            # the deploy's playbook passes the snapshot its clone step took after the stop, when it
            # could make no clone; else (a clone that is gone) the snapshot taken before the stop
            snapshot = snapshots.repository(ctx.config).get(p.snapshot)
            taken = AFTER_STOP if AFTER_STOP_TAG in snapshot.manifest.get("tags", []) else BEFORE_STOP
            logs.get().info("deploy.database_from_snapshot", snapshot=snapshot.id, taken=taken)
            snapshots.restore(ctx.config, snapshot.id, [database], run_id=ctx.run_id)
            done = {"path": "snapshot", "snapshot": snapshot.id, "taken": taken, "database": database}
        done["seconds"] = round(time.monotonic() - started, 3)
        ctx.record_undo(done)  # the deploy's report reads it from the journal (``database_restore``)


AFTER_STOP_TAG = "after-stop"  # a database snapshot taken by the clone step, services stopped
AFTER_STOP = "after the services stopped"
BEFORE_STOP = "before the services stopped"


class DatabaseCloneAction(Action):
    """Runs once the services are stopped and makes the copy that undoing ``migrate`` puts
    back: a clone of the deploy's database on its server, swapped back in seconds
    (``deploy.fast_rollback`` auto / required / off); when no clone is made (``off``, or in
    ``auto`` a clone that cannot be made, a warning), a database snapshot taken now, so that
    it holds every write the services accepted before they stopped (outputs ``snapshot_id``)."""

    identifiers = frozenset({"clone", "snapshot_id"})

    Params = NoParams

    def _snapshot_now(self, ctx: Context, reason: str) -> dict[str, Any]:
        from aura_ops.workflows import snapshots

        name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
        if name is None:
            return {"clone": ""}
        logs.get().info("deploy.database_snapshot_after_stop", reason=reason)
        snapshot = snapshots.backup(ctx.config, [name], [AFTER_STOP_TAG, "pre-migrate"], run_id=ctx.run_id)
        return {"clone": "", "reason": reason, "snapshot_id": snapshot.id}

    def _database(self, ctx: Context) -> Any:
        name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
        if name is None or ctx.config.deploy.fast_rollback == "off":
            return None
        return _postgres(ctx, name)

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        found = self._database(ctx)
        if found is None:
            name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
            if name is None:
                return "nothing (no database)", "nothing"
            return f"snapshot {name} now that the services are stopped (deploy.fast_rollback: off)", "nothing"
        return (
            f"clone {found.name} on its server for a fast rollback (else snapshot it, services stopped)",
            "drop the clone",
        )

    def can_check(self, p: NoParams) -> bool:
        return True

    def check(self, p: NoParams, ctx: Context) -> bool:
        from aura_ops.components.postgres import clone as pgclone

        found = self._database(ctx)
        return found is not None and pgclone.exists(found, ctx.run_id)

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.components.postgres import clone as pgclone

        found = self._database(ctx)
        if found is None:
            return self._snapshot_now(ctx, "deploy.fast_rollback: off")
        name = found.name
        required = ctx.config.deploy.fast_rollback == "required"
        can = pgclone.feasibility(found)
        try:
            if not can["ok"]:
                raise pgclone.CloneError(f"cannot clone {name}: {can['reason']}")
            return pgclone.create(found, ctx.run_id, ctx.config.deploy.fast_rollback_wait)
        except pgclone.CloneError as exc:
            if required:
                raise
            logs.get().warning(
                "deploy.no_fast_rollback", reason=str(exc), fallback="restore a snapshot taken after the stop"
            )
            return self._snapshot_now(ctx, str(exc))

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        from aura_ops.components.postgres import clone as pgclone

        found = self._database(ctx)
        if found is not None:
            pgclone.drop(found, ctx.run_id)


class DatabaseClonesCleanupAction(Action):
    """Placed before the services stop. Apply: drop clones left by earlier runs (a run that
    failed without a rollback keeps its clone for ``runs abort`` until then). Compensate: drop
    the database a fast rollback replaced, which runs after the services are started again:
    dropping grows with the database's size, the rename that rolled it back does not."""

    Params = NoParams

    def _database(self, ctx: Context) -> Any:
        name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
        if name is None:
            return None
        return _postgres(ctx, name)

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        if self._database(ctx) is None:
            return "nothing (no database)", "nothing"
        return "drop fast-rollback clones left by earlier runs", "drop the database a fast rollback replaced"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.components.postgres import clone as pgclone

        found = self._database(ctx)
        return {"dropped": pgclone.drop_stale(found, keep={ctx.run_id}) if found else []}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        from aura_ops.components.postgres import clone as pgclone

        found = self._database(ctx)
        if found is not None:
            pgclone.drop_replaced(found, ctx.run_id)


class DatabaseCloneDropAction(DatabaseCloneAction):
    """Drop this run's clone once the deploy is verified; a later failure in the run restores
    from the snapshot instead."""

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        found = self._database(ctx)
        return ("drop the fast-rollback clone" if found else "nothing"), "nothing (a rollback uses the snapshot)"

    def can_check(self, p: NoParams) -> bool:
        return False

    def check(self, p: NoParams, ctx: Context) -> bool:
        return False  # dropping is idempotent: always "would apply"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.components.postgres import clone as pgclone

        found = self._database(ctx)
        return {"dropped": pgclone.drop(found, ctx.run_id) if found else False}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        return None


class ChecksParams(_Params):
    kind: str = "health"


class ChecksAction(Action):
    """Run the configured health (``checks``) or smoke (``smoke_checks``) checks."""

    Params = ChecksParams

    def describe(self, p: ChecksParams, ctx: Context) -> tuple[str, str]:
        found = ctx.config.checks if p.kind == "health" else ctx.config.smoke_checks
        return f"{len(found)} {p.kind} check(s)", "nothing"

    def apply(self, p: ChecksParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.deploy import checks

        found = ctx.config.checks if p.kind == "health" else ctx.config.smoke_checks
        return {"results": checks.run_all(found, ctx.config, ctx.hosts)}


REGISTRY.update(
    {
        "release_upload": ReleaseUploadAction(),
        "release_switch": ReleaseSwitchAction(),
        "release_mark": ReleaseMarkAction(),
        "release_prune": ReleasePruneAction(),
        "services_stop": ServicesStopAction(),
        "services_start": ServicesStartAction(),
        "migrate": MigrateAction(),
        "database_clones_cleanup": DatabaseClonesCleanupAction(),
        "database_clone": DatabaseCloneAction(),
        "database_clone_drop": DatabaseCloneDropAction(),
        "checks": ChecksAction(),
    }
)


class PreflightAction(Action):
    """Run ``doctor``'s checks (tools, versions, reachability, disk space) before anything changes."""

    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return "preflight: tools, reachability, disk space (aura-ops doctor)", "nothing"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        from aura_ops.workflows import doctor

        results, code = doctor.run(ctx.config)
        failed = [f"{c['check']}: {c['detail']}" for c in results if not c["ok"]]
        if code:
            raise AuraError("preflight failed: " + "; ".join(failed))
        return {"checks": len(results)}


REGISTRY["preflight"] = PreflightAction()
