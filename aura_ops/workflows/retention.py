"""Prune: the retention policy applied to the repository, never deleting what is still needed.

:func:`plan` (read-only) turns the repository's snapshots into the inputs of
:func:`aura_ops.retention.decide` and adds what the caller must protect, each with its reason:

- pinned snapshots (``pins/<id>`` in the repository);
- what a rollback can still need: the snapshot ``aura-ops rollback`` would restore now (the
  newest intact snapshot holding the database from when the rollback's release was live, as
  ``deploy.rollback_plan`` finds it), the one a second rollback would restore (to the release
  before that), and the snapshots the deploys of the live release and of the previous good
  release took (the journal's succeeded ``deploy:<version>`` runs); for a release component this
  configuration does not deploy (another configuration on the repository does), what the
  snapshots themselves record (``recorded_rollback_needs``);
- every snapshot a run that is not finished references (running, interrupted, compensating) in
  any parameter, its playbook or its steps (a full id, or a unique prefix),
  or that a failed run whose undo ``runs abort`` may still run references; and, while such a
  run has a step in flight, every snapshot sealed since that step began (it may be the step's
  own, not journaled yet). The runs are those of this configuration's journal and of every
  other state folder whose runs use the repository (``other_run_needs``, from
  ``repository.journals``: another configuration sharing it).

Before a prune (or its dry run) relies on a snapshot to replace what it deletes (the newest
copy of a component it keeps, until one is sound; what a rollback restores), its checksums are
checked: one that fails is taken as damaged and the plan made again (``plan(check=True)``).

A fast rollback's database clone lives on the database server, not in the repository, and is
dropped when its deploy ends; while the deploy is unfinished, the snapshots its undo falls
back on are protected by the rule above.

A damaged snapshot (manifest or files index that cannot be trusted) takes no part in the policy
(it is not counted in a bucket) and is never deleted by a prune: it is listed with its damage.

:func:`prune` takes the repository lock (as a backup does: SIGTERM turned into an exception,
what killed processes left swept, leftover ``*.partial`` folders removed), plans again under the
lock, and deletes the doomed snapshots one at a time with ``Repository.delete`` (renamed aside,
then removed: a kill leaves each snapshot fully there or fully gone; the next locked command
removes the ``.deleting.partial`` left over).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aura_ops import checksum, components, faults, logs
from aura_ops.components import snapshotting
from aura_ops.components.base import Component
from aura_ops.components.release import ReleaseComponent
from aura_ops.config import Config
from aura_ops.errors import ConfigError, Interrupted, StateError, UsageError, first_line
from aura_ops.hosts import local_hostname
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import Repository, Snapshot, is_snapshot_id, journals, new_snapshot_id, space
from aura_ops.retention import Decision, Plan, Reason, Rule, SnapshotInfo, decide
from aura_ops.state import temporaries
from aura_ops.state.journal import RUN_FINAL, Journal, RunRecord, same_target
from aura_ops.state.lock import pid_alive
from aura_ops.workflows.snapshots import interruptible, listing

Protections = dict[str, list[str]]
ABORTABLE = ("failed", "rollback_failed")  # ended, but `runs abort` may still undo them
# how a unique prefix of a snapshot id (``YYYYMMDD-HHMMSS-mmm``, at least MIN_PREFIX characters) can start
PREFIX = re.compile(r"\d{4,8}(-\d{0,6}(-\d{0,2})?)?")


def snapshot_time(snapshot_id: str) -> dt.datetime:
    """The UTC time an id records (``YYYYMMDD-HHMMSS-mmm``)."""
    moment = dt.datetime.strptime(snapshot_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC)
    return moment.replace(microsecond=int(snapshot_id[16:19]) * 1000)


def snapshot_info(snapshot: Snapshot, pinned: bool) -> SnapshotInfo:
    """What the policy needs of an intact snapshot: its components, tags, creation time (the
    manifest's ``created``; a time without an offset is UTC; one that cannot be read, the id's)
    and whether it is pinned. A sealed, intact snapshot is verified: every artifact was checked
    against its recorded size and checksum before the rename that sealed it."""
    manifest = snapshot.manifest
    try:
        created = dt.datetime.fromisoformat(str(manifest.get("created")))
        if created.utcoffset() is None:
            created = created.replace(tzinfo=dt.UTC)
    except ValueError:
        created = snapshot_time(snapshot.id)
    tags = [t for t in manifest.get("tags") or [] if isinstance(t, str)]
    return SnapshotInfo(
        snapshot.id, created, frozenset(manifest.get("components", {})), frozenset(tags), pinned, verified=True
    )


def damaged_decision(snapshot: Snapshot, pinned: bool) -> Decision:
    """A damaged snapshot, kept: prune never deletes one (``snapshots delete`` does, by hand)."""
    info = SnapshotInfo(snapshot.id, snapshot_time(snapshot.id), frozenset(), frozenset(), pinned)
    reason = f"damaged ({snapshot.damaged}): never deleted by prune; look at it, then `snapshots delete` it"
    reasons = ((Reason(Rule.PINNED, "pinned"),) if pinned else ()) + (Reason(Rule.PROTECTED, reason),)
    return Decision(info, reasons)


def plan(
    config: Config,
    repository: Repository,
    journal: Journal | None,
    now: dt.datetime | None = None,
    hosts: Inventory | None = None,
    loaded: list[Snapshot] | None = None,
    check: bool = False,
) -> Plan:
    """Every sealed snapshot's decision under ``config.retention``, with every protection above
    (read-only; ``journal`` None: no runs recorded yet; ``loaded``: ``repository.all_snapshots()``
    when the caller has just read it). Raises what reading the live release raises (its host
    unreachable): a prune that cannot tell what a rollback needs deletes nothing. The repository
    is listed once and each manifest read once, whatever the number of snapshots.

    With ``check`` (a prune, and its dry run): the newest copy the plan keeps of a component it
    deletes a copy of (until one is found sound), and a snapshot a rollback restores while the plan
    deletes one sharing a component with it, have their artifacts' checksums checked first
    (``checksum_problem``); one that fails is damaged (kept, not counted) and the plan is made
    again, so that the older copy it would have replaced is judged (and a rollback's fallback
    kept) instead."""
    hosts = hosts or Inventory(config)
    loaded = repository.all_snapshots() if loaded is None else loaded
    snapshots = listing(config, hosts, repository, loaded)  # damaged: as `snapshots list` marks them
    pinned = repository.pinned(s.id for s in loaded)
    failed: dict[str, str] = {}
    checked: set[str] = set()
    while True:
        marked = [dataclasses.replace(s, damaged=failed[s.id]) if s.id in failed else s for s in snapshots]
        decided, rollback = _plan_once(config, repository, marked, loaded, failed, pinned, journal, now, hosts)
        sound = checked - set(failed)
        suspects = [i for i in _suspects(decided, rollback, sound) if i not in checked] if check else []
        if not suspects:
            return decided
        by_id = {s.id: s for s in snapshots}
        for snapshot_id in suspects:
            checked.add(snapshot_id)
            problem = checksum_problem(by_id[snapshot_id])
            if problem is not None:
                logs.get().warning("prune.snapshot_fails_checksums", snapshot=snapshot_id, problem=problem)
                failed[snapshot_id] = f"fails its checksums: {problem}"


def _plan_once(
    config: Config,
    repository: Repository,
    snapshots: list[Snapshot],
    loaded: list[Snapshot],
    failed: dict[str, str],
    pinned: set[str],
    journal: Journal | None,
    now: dt.datetime | None,
    hosts: Inventory,
) -> tuple[Plan, set[str]]:
    """One plan (``failed``: snapshots found rotten, taken as damaged); and the ids kept for
    what a rollback restores."""
    intact = [s for s in snapshots if s.damaged is None]
    protected: Protections = {}
    sealed = [s for s in loaded if s.damaged is None]  # manifest intact: what `rollback` chooses from
    for_rollback = rollback_needs(config, sealed, hosts, failed)
    recorded = recorded_rollback_needs([s for s in sealed if s.id not in failed], judged=judged_release(config, hosts))
    _merge(protected, for_rollback)
    _merge(protected, recorded)
    if journal is not None:
        _merge(protected, deploy_needs(config, journal, hosts))
        _merge(protected, run_needs(config, journal, [s.id for s in snapshots]))
    _merge(protected, other_run_needs(config, repository, [s.id for s in snapshots]))
    decided = decide((snapshot_info(s, s.id in pinned) for s in intact), config.retention.retention(), protected, now)
    damaged = [damaged_decision(s, s.id in pinned) for s in snapshots if s.damaged is not None]
    decisions = sorted((*decided.decisions, *damaged), key=lambda d: (d.snapshot.time, d.snapshot.id))
    known = {s.id for s in snapshots}
    missing = tuple(sorted(i for i in decided.missing_protected if i not in known))
    return Plan(tuple(decisions), decided.policy, missing), set(for_rollback) | set(recorded)


def _suspects(decided: Plan, rollback: set[str], sound: set[str]) -> list[str]:
    """The kept snapshots a prune must find sound before it deletes what they replace: for each
    component it deletes a copy of, the newest copy it keeps until one is found sound (the only
    copy, or the newest of several: two kept copies that had both rotted were never hashed, and
    the only sound one was deleted), and what a rollback restores (while it deletes a snapshot
    sharing a component with it). ``sound``: those already checked and found sound."""
    doomed = [d.snapshot for d in decided.decisions if not d.keep]
    kept = [d.snapshot for d in decided.decisions if d.keep and d.snapshot.verified]  # (damaged: not verified)
    losing = {c for s in doomed for c in s.components}
    found = []
    for component in sorted(losing):
        holders = [s for s in kept if component in s.components]
        if holders and not any(s.id in sound for s in holders):
            newest = max(holders, key=lambda s: (s.time, s.id))
            if newest.id not in found:
                found.append(newest.id)
    for snapshot in kept:
        if snapshot.id in rollback and losing & snapshot.components and snapshot.id not in found:
            found.append(snapshot.id)
    return found


def checksum_problem(snapshot: Snapshot) -> str | None:
    """The first artifact of ``snapshot`` that is missing or whose checksum differs from its
    manifest's (each hashed; read-only), or None. (What ``snapshots verify`` checks first;
    each component's ``damage``, the rest of a cheap check, already ran in the listing.)"""
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    for name, entry in snapshot.manifest["components"].items():
        for artifact, info in (entry.get("artifacts") or {}).items():
            try:
                digest = checksum.file_digest(snapshot.component_dir(name) / artifact, algorithm)[0]
            except OSError as exc:
                return f"{name}: {artifact}: cannot be read ({first_line(exc)})"
            if digest != info.get("hash"):
                return f"{name}: {artifact}: checksum mismatch"
    return None


def _merge(into: Protections, found: Protections) -> None:
    for snapshot_id, reasons in found.items():
        have = into.setdefault(snapshot_id, [])
        have.extend(r for r in reasons if r not in have)


# ---------------------------------------------------------------- what a rollback needs


def _release(config: Config, hosts: Inventory) -> ReleaseComponent | None:
    """The deploy's release component on its host, or None when none is configured."""
    try:
        name = config.only("release", config.deploy.release, "release")
    except ConfigError:  # several, none named in deploy.release: no deploy or rollback can run
        return None
    if name is None:
        return None
    return components.build_as(config, name, hosts, ReleaseComponent)


def _rollback_snapshots(snapshots: list[Snapshot], release_name: str, database: str, target: str) -> list[str]:
    """The snapshots a rollback to ``target`` chooses from (``deploy.rollback_plan``'s rule), oldest
    first: intact ones holding ``database`` and recording ``target`` as the current release;
    the newest is what it restores."""
    return [
        s.id
        for s in snapshots
        if s.manifest["components"].get(release_name, {}).get("current") == target
        and database in s.manifest["components"]
    ]


def rollback_needs(
    config: Config, snapshots: list[Snapshot], hosts: Inventory, failed: Iterable[str] = ()
) -> Protections:
    """The snapshot ``aura-ops rollback`` would restore now, and the one a second rollback (from
    the release that one puts back, to the verified release before it) would restore; nothing
    when there is no release or no database component (a rollback then restores no snapshot).
    ``failed``: snapshots found failing their checksums: a rollback restoring one is refused, so
    the newest candidate before it is kept instead, for ``rollback --to-snapshot``."""
    component = _release(config, hosts)
    try:
        database = config.only("postgres", config.deploy.database, "database")
    except ConfigError:  # several, none named in deploy.database: no rollback can run
        return {}
    if component is None or database is None:
        return {}
    states, live = component.states(), component.current()
    verified = [v for v in component.installed() if v != live and states.get(v, {}).get("state") == "verified"]
    rotten = set(failed)
    found: Protections = {}
    # `rollback` goes to the newest verified release that is not live; it then marks the live
    # one rolled_back, so the next rollback goes to the verified release before that one
    for depth, target in enumerate(reversed(verified[-2:])):
        candidates = _rollback_snapshots(snapshots, component.name, database, target)
        sound = [i for i in candidates if i not in rotten]
        if not sound:
            continue
        how = "`aura-ops rollback`" if depth == 0 else "a second `aura-ops rollback`"
        if sound[-1] == candidates[-1]:
            found.setdefault(sound[-1], []).append(f"{how} to release {target} restores it")
        else:
            newer = ", ".join(i for i in candidates if i > sound[-1])
            found.setdefault(sound[-1], []).append(
                f"{how[:-1]} --to-snapshot {sound[-1]}` to release {target} restores it "
                f"(the newer {newer}, which a plain rollback picks, fails its checksums)"
            )
    return found


RECORDED_RELEASES = 3  # the live release may be newer than the newest record: the previous two and it


def _recorded_class(section: dict[str, Any]) -> type[Component] | None:
    """The component class a manifest section records (None: a type this version does not know)."""
    try:
        return components.component_class(str(section.get("type")))
    except ConfigError:
        return None


def judged_release(config: Config, hosts: Inventory) -> str | None:
    """The release component whose rollbacks ``rollback_needs`` judges from the live release
    (this configuration deploys it, with a database), or None."""
    try:
        database = config.only("postgres", config.deploy.database, "database")
    except ConfigError:
        return None
    component = _release(config, hosts) if database is not None else None
    return component.name if component is not None else None


def recorded_rollback_needs(snapshots: list[Snapshot], judged: str | None = None) -> Protections:
    """What a rollback may need, read from the repository alone, for the release components
    this configuration does not deploy (``judged`` aside: ``rollback_needs`` knows its live
    release). Another configuration sharing the repository, say a backup-only one run by cron,
    knows no release. For each release component the snapshots record, and each of the last
    RECORDED_RELEASES releases they record as current, the newest snapshot from while it was
    current that holds a database (the one ``deploy.rollback_plan`` restores for a rollback to
    that release)."""
    newest: dict[tuple[str, str], str] = {}  # (release component, release) -> snapshot id
    for snapshot in sorted(snapshots, key=lambda s: s.id):
        classes = {name: _recorded_class(section) for name, section in snapshot.manifest["components"].items()}
        if not any(cls is not None and cls.restore_to == "database" for cls in classes.values()):
            continue
        for name, section in snapshot.manifest["components"].items():
            current, cls = section.get("current"), classes[name]
            if cls is None or not issubclass(cls, ReleaseComponent) or name == judged:
                continue
            if isinstance(current, str) and current:
                newest.pop((name, current), None)  # (re-inserted last: ordered by when it was last current)
                newest[(name, current)] = snapshot.id
    found: Protections = {}
    for name in sorted({component for component, _ in newest}):
        recorded = [(version, i) for (component, version), i in newest.items() if component == name]
        for version, snapshot_id in recorded[-RECORDED_RELEASES:]:
            found.setdefault(snapshot_id, []).append(
                f"newest snapshot with the database from while release {version} of {name} was current "
                "(a rollback to it restores it; recorded in the repository)"
            )
    return found


def deploy_needs(config: Config, journal: Journal, hosts: Inventory) -> Protections:
    """The snapshots the last succeeded deploy of the live release, and of the previous good
    release (where a rollback goes), took: the data from before each went live."""
    component = _release(config, hosts)
    if component is None:
        return {}
    states, live = component.states(), component.current()
    verified = [v for v in component.installed() if v != live and states.get(v, {}).get("state") == "verified"]
    found: Protections = {}
    for label, version in (
        ("the live release", live),
        ("the previous good release", verified[-1] if verified else None),
    ):
        runs = [r for r in journal.by_key(f"deploy:{version}") if r.status == "succeeded"] if version else []
        if not runs:
            continue
        for snapshot_id in referenced(journal, runs[-1]):
            found.setdefault(snapshot_id, []).append(f"pre-deploy snapshot of {label} {version} (run {runs[-1].id})")
    return found


# ---------------------------------------------------------------- what runs need


def referenced(journal: Journal, run: RunRecord, known: Iterable[str] = ()) -> list[str]:
    """Every snapshot id a run's parameters (whatever their name), its playbook as it started
    (a user's playbook may name a snapshot in its file) and its journaled steps (outputs, saved
    state, undo) name; with ``known`` (the repository's ids), also the one a unique id prefix in
    its parameters or playbook names (the restore action resolves a prefix when it runs)."""
    found: list[str] = []
    ids = sorted(known)

    def collect(value: Any, prefixes: bool = False) -> None:
        if isinstance(value, dict):
            for item in value.values():
                collect(item, prefixes)
        elif isinstance(value, list):
            for item in value:
                collect(item, prefixes)
        elif isinstance(value, str):
            if is_snapshot_id(value):
                matches = [value]
            elif prefixes and ids and PREFIX.fullmatch(value):
                matches = [i for i in ids if i.startswith(value)]
            else:
                matches = []
            if len(matches) == 1 and matches[0] not in found:
                found.append(matches[0])

    collect(run.params, prefixes=True)
    with contextlib.suppress(ValueError):
        collect(json.loads(journal.definition(run.id)), prefixes=True)
    for step in journal.steps(run.id):
        collect([step.outputs, step.saved or {}, step.undo or {}])
    return found


def _abortable(journal: Journal, run: RunRecord) -> bool:
    """A failed run that ``runs abort`` may still undo (no later run changed the system)."""
    from aura_ops.engine import resume

    try:
        resume.refuse_if_overtaken(journal, run)
    except UsageError:
        return False
    return True


def _may_be_running(run: RunRecord) -> bool:
    """Whether the process that drives ``run`` may still be at work (alive, or on another host);
    a dead one's step in flight sealed nothing it will use (a resume takes its snapshot again)."""
    if run.status in RUN_FINAL or not run.pid:
        return False
    if run.host and run.host != local_hostname():
        return True
    alive = pid_alive(run.pid)
    with contextlib.suppress(OSError):  # a pid the kernel has given to another program is not the run's
        alive = alive and b"aura" in Path(f"/proc/{run.pid}/cmdline").read_bytes()
    return alive


def run_needs(
    config: Config, journal: Journal, snapshot_ids: Iterable[str], target: str | None = None, where: str = ""
) -> Protections:
    """What runs that are not finished (or failed and still abortable) need: every snapshot they
    reference, and while one has a step in flight (its process alive), every snapshot sealed
    since that step began. ``target``: the state folder whose runs count (the configuration's,
    by default); ``where``: said after each run (another configuration's state folder)."""
    from aura_ops.engine.session import state_dir

    target = target or str(state_dir(config))
    runs = journal.unfinished(target)
    runs += [
        r
        for r in journal.runs(1000)
        if r.status in ABORTABLE and same_target(r.target, target) and _abortable(journal, r)
    ]
    found: Protections = {}
    ids = sorted(snapshot_ids)
    for run in sorted(runs, key=lambda r: r.id):
        state = "not finished" if run.status not in RUN_FINAL else f"{run.status}, `runs abort` may still undo it"
        what = f"run {run.id} ({Path(run.playbook).stem}, {state}){where}"
        for snapshot_id in referenced(journal, run, ids):
            found.setdefault(snapshot_id, []).append(f"needed by {what}")
        for step in journal.steps(run.id) if _may_be_running(run) else []:
            if step.status == "applying" and step.started:
                since = dt.datetime.fromisoformat(step.started)
                for snapshot_id in ids:
                    if snapshot_time(snapshot_id) >= since.replace(microsecond=since.microsecond // 1000 * 1000):
                        found.setdefault(snapshot_id, []).append(f"sealed while step {step.name} of {what} was running")
    return found


def other_run_needs(config: Config, repository: Repository, snapshot_ids: Iterable[str]) -> Protections:
    """``run_needs`` of every other state folder whose runs use the repository
    (``repository.journals``: another configuration, with its own journal). A folder whose
    journal is gone has no run left; one on another host cannot be read from here (a warning in
    the log). StateError when a journal that is there cannot be read: a prune that cannot tell
    what a run needs deletes nothing."""
    from aura_ops.engine.session import state_dir

    own, here, ids = os.path.realpath(state_dir(config)), local_hostname(), sorted(snapshot_ids)
    found: Protections = {}
    for record in journals.remembered(repository):
        path = Path(record.state) / "journal.db"
        # another host's journal cannot be read from here; but one found here at its path is read
        # (this host renamed since, a container's new name: taken for elsewhere, its runs' needs
        # were ignored and the prune deleted them). Reading a stranger's journal only keeps more.
        if record.host != here and not os.path.isfile(path):
            logs.get().warning("prune.journal_elsewhere", host=record.host, state=record.state)
            continue
        if record.state == own:
            continue
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):  # the folder or its journal is gone: no run left
            continue
        except OSError as exc:  # (there, perhaps, but not to be looked at: not "gone")
            raise _unreadable(repository, record, path, exc) from None
        try:
            other = Journal(path)
        except (OSError, sqlite3.Error) as exc:
            raise _unreadable(repository, record, path, exc) from None
        try:
            _merge(found, run_needs(config, other, ids, record.state, f" of the state folder {record.state}"))
        finally:
            other.close()
    return found


def _unreadable(repository: Repository, record: journals.Record, path: Path, exc: BaseException) -> Exception:
    """StateError for a recorded journal a prune cannot read, naming how to get past it."""
    return StateError(
        f"the journal {path} of another configuration using this repository cannot be read "
        f"({first_line(exc)}): what its runs still need is unknown; nothing was deleted (if that "
        f"configuration is no longer used, remove the record {journals.location(repository, record)}: "
        "a run of it records it again)"
    )


# ---------------------------------------------------------------- prune


def report(plan_: Plan, dry_run: bool, configured: bool) -> dict[str, Any]:
    """The prune's report (what ``--json`` prints): every snapshot's row, the policy applied."""
    return {
        "dry_run": dry_run,
        "configured": configured,
        "policy": list(plan_.policy),
        "snapshots": plan_.rows(),
        "keep": plan_.kept,
        "delete": plan_.deleted,
        "deleted": [],
        "freed": 0,
        "missing_protected": list(plan_.missing_protected),
    }


def open_journal_if_any(config: Config) -> Journal | None:
    """The configuration's journal, or None when no run was ever recorded (nothing is created)."""
    from aura_ops.engine.session import open_journal, state_dir  # (the engine: only when a journal is looked for)

    if not (state_dir(config) / "journal.db").exists():
        return None
    return open_journal(config)


def prune(
    config: Config,
    repository: Repository,
    journal: Journal | None,
    dry_run: bool,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Apply the retention policy: with ``dry_run`` the plan only (nothing is locked or
    deleted); else, under the repository lock, plan again and delete each doomed snapshot (its
    checksum file and pin too). Returns :func:`report` with ``deleted`` and ``freed`` (bytes).
    LockedError (exit 5) when another command holds the repository; Interrupted (SIGTERM)
    between or during deletions, naming what was deleted so far."""
    configured = config.retention.retention().configured
    if dry_run:
        return report(plan(config, repository, journal, now, check=True), True, configured)
    run_id = run_id or new_snapshot_id()
    log = logs.get()
    with logs.bind(run_id=run_id), interruptible(), repository.locked(run_id, "prune"), temporaries.bound(config):
        temporaries.sweep(config, components.temporary_name_folders(config))
        repository.clean_partials()
        decided = plan(config, repository, journal, now, check=True)
        result = report(decided, False, configured)
        try:
            for decision in decided.decisions:
                if decision.keep:
                    continue
                snapshot_id = decision.snapshot.id
                freed = space.freed_by(repository.backend, [snapshot_id])  # (as stats counts it)
                faults.point("prune:before-delete")
                repository.delete(snapshot_id)
                result["deleted"].append(snapshot_id)
                result["freed"] += freed
                log.info("snapshot.pruned", snapshot=snapshot_id, freed=freed)
        except Interrupted as exc:
            done = ", ".join(result["deleted"]) or "none"
            raise Interrupted(f"{first_line(exc).split(';')[0]}; prune stopped, deleted so far: {done}") from None
    log.info("prune.done", deleted=len(result["deleted"]), freed=result["freed"])
    return result


def auto_prune(config: Config, after: str) -> dict[str, Any] | None:
    """The prune ``retention.auto`` asks for after a backup or a deploy: None when it is off;
    a failure is logged as a warning and returned as ``{"error": ...}``, never raised (the
    backup or deploy it follows has succeeded)."""
    if not config.retention.auto:
        return None
    journal = None
    try:
        journal = open_journal_if_any(config)
        done = prune(config, snapshotting.repository(config), journal, dry_run=False)
        logs.get().info("prune.auto", after=after, deleted=done["deleted"], freed=done["freed"])
        return {"deleted": done["deleted"], "freed": done["freed"]}
    except Exception as exc:  # noqa: BLE001 - whatever it is, the backup or deploy stands
        logs.get().warning("prune.auto_failed", after=after, reason=first_line(exc))
        return {"error": first_line(exc)}
    finally:
        if journal is not None:
            journal.close()


def pin(config: Config, reference: str, pinned: bool = True) -> tuple[str, bool]:
    """Pin (or unpin) the snapshot ``reference`` names (full id, unique prefix, ``latest``),
    under the repository lock; (its id, whether that changed anything). UsageError when unknown."""
    repository = snapshotting.repository(config)
    snapshot_id = repository.resolve(reference)
    run_id = new_snapshot_id()
    with logs.bind(run_id=run_id), repository.locked(run_id, "pin" if pinned else "unpin"):
        snapshot_id = repository.resolve(snapshot_id)  # still there now that no one else can delete it
        if pinned:
            changed = snapshot_id not in repository.pinned()
            repository.pin(snapshot_id)
        else:
            changed = repository.unpin(snapshot_id)
    logs.get().info("snapshot.pinned" if pinned else "snapshot.unpinned", snapshot=snapshot_id, changed=changed)
    return snapshot_id, changed


NEEDED_RULES = frozenset({Rule.PROTECTED, Rule.NEWEST_VERIFIED, Rule.LAST_OF_COMPONENT})


def needed_by(config: Config, repository: Repository, snapshot_id: str) -> list[str]:
    """Why ``snapshot_id`` is still needed (a rollback, an unfinished run, the newest verified
    snapshot of a component), as a prune would protect it: what ``snapshots delete`` warns
    about before it asks. Read-only; a reason that cannot be found out (the live release's host
    unreachable, an unreadable journal) is returned as such, never raised: the user decides."""
    journal = None
    try:
        journal = open_journal_if_any(config)
        decided = plan(config, repository, journal)
    except Exception as exc:  # noqa: BLE001 - a warning only; the delete still asks first
        return [f"cannot tell whether a rollback or a run still needs it: {first_line(exc)}"]
    finally:
        if journal is not None:
            journal.close()
    for decision in decided.decisions:
        if decision.snapshot.id == snapshot_id and decision.snapshot.verified:  # a damaged one is needed by none
            return [str(reason) for reason in decision.reasons if reason.rule in NEEDED_RULES]
    return []
