"""Which snapshots a prune deletes, and every reason each kept one is kept.

:func:`decide` is a pure function of plain values: the snapshots (id, time, components, tags,
pinned, verified), the :class:`~aura_ops.retention.policy.Retention` of the configuration, and
what the caller knows must stay (a rollback's snapshot, one an unfinished run references). It
reads nothing and deletes nothing; its :class:`Plan` is what ``snapshots prune --dry-run``
lists and what a prune then deletes.

The policy, as restic's ``forget`` applies it:

- Each component is its own timeline (like restic's grouping by paths): the snapshots that hold
  it, newest first, judged by the component's policy. A snapshot holding several components is
  kept when any of their timelines keeps it.
- ``last N``: the N newest snapshots.
- hourly, daily, weekly, monthly, yearly ``N``: walking from the newest, the newest snapshot of
  each hour, day, ISO week (Monday to Sunday), month or year that has a snapshot, until N
  such buckets are kept; buckets without snapshots do not count. When fewer than N buckets
  have snapshots, the oldest snapshot is kept as well (restic >= 0.16), so that history grows
  up to the limit. Buckets follow the calendar of the configured time zone: a day of 23 or 25
  hours is one day. An hour is an hour of elapsed time: the hour a clock repeats when summer
  time ends is two buckets (restic, reading the wall clock, makes it one).
- ``within D``: every snapshot after the newest one (not counting any in the future of ``now``)
  less D (years, months and days on the calendar, then hours).
- ``tags``: every snapshot carrying all tags of one alternative.
- Rules are alternatives: a snapshot is kept when any rule keeps it; a rule's count never
  depends on what another rule kept. A component whose policy has no rule keeps everything.

Never deleted, whatever the policy: pinned snapshots, the snapshots the caller protects, the
newest verified snapshot of each component, and a snapshot that records no component (it cannot
be judged). And no component is left without a snapshot: if nothing of it would be kept, its
newest snapshot is (restic refuses to run in that case).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aura_ops.retention.policy import UNLIMITED, Policy, Retention, tag_text, tags_match


@dataclass(frozen=True)
class SnapshotInfo:
    """What the policy needs of a snapshot. ``time`` must carry its UTC offset; it is kept in UTC
    (Python compares two times of one zone by their wall clocks, which the hour a clock repeats
    makes ambiguous)."""

    id: str
    time: dt.datetime
    components: frozenset[str]
    tags: frozenset[str] = frozenset()
    pinned: bool = False
    verified: bool = False

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"snapshot {self.id}: its time has no UTC offset")
        object.__setattr__(self, "time", self.time.astimezone(dt.UTC))
        object.__setattr__(self, "components", frozenset(self.components))
        object.__setattr__(self, "tags", frozenset(self.tags))


class Rule(Enum):
    """Why a snapshot is kept; the order is the order reasons are listed in."""

    PINNED = "pinned"
    PROTECTED = "protected"
    NEWEST_VERIFIED = "newest-verified"
    LAST_OF_COMPONENT = "last-of-component"
    UNJUDGED = "unjudged"
    NO_POLICY = "no-policy"
    LAST = "last"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    WITHIN = "within"
    TAGS = "tags"


NEVER_DELETE = frozenset({Rule.PINNED, Rule.PROTECTED, Rule.NEWEST_VERIFIED, Rule.LAST_OF_COMPONENT, Rule.UNJUDGED})
_RANK = {rule: index for index, rule in enumerate(Rule)}


@dataclass(frozen=True)
class Reason:
    """One rule that keeps a snapshot, in the timelines of ``components`` (empty for a rule about
    the snapshot itself: pinned, protected by the caller)."""

    rule: Rule
    text: str
    components: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.text} ({', '.join(self.components)})" if self.components else self.text


@dataclass(frozen=True)
class Decision:
    snapshot: SnapshotInfo
    reasons: tuple[Reason, ...]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    @property
    def protected(self) -> bool:
        """Kept by a rule no policy overrides (pinned, protected, newest verified, ...)."""
        return any(reason.rule in NEVER_DELETE for reason in self.reasons)

    def as_row(self) -> dict[str, Any]:
        """The decision as a dry-run listing's row (plain JSON values)."""
        snapshot = self.snapshot
        return {
            "id": snapshot.id,
            "time": snapshot.time.isoformat(),
            "components": sorted(snapshot.components),
            "tags": sorted(snapshot.tags),
            "pinned": snapshot.pinned,
            "verified": snapshot.verified,
            "decision": "keep" if self.keep else "delete",
            "protected": self.protected,
            "reasons": [str(reason) for reason in self.reasons],
        }


@dataclass(frozen=True)
class Plan:
    """Every snapshot's decision, oldest first; the policies applied (one line each); and the
    ids the caller protected that are not among the snapshots (what a rollback or a run needs
    and is already gone: worth a warning)."""

    decisions: tuple[Decision, ...]
    policy: tuple[str, ...]
    missing_protected: tuple[str, ...] = ()

    @property
    def kept(self) -> list[str]:
        return [d.snapshot.id for d in self.decisions if d.keep]

    @property
    def deleted(self) -> list[str]:
        return [d.snapshot.id for d in self.decisions if not d.keep]

    def rows(self) -> list[dict[str, Any]]:
        return [decision.as_row() for decision in self.decisions]


def _order(snapshot: SnapshotInfo) -> tuple[dt.datetime, str]:
    # Equal times are ordered by id (ids are sealed in time order), so the result is the same
    # whatever order the snapshots are given in.
    return snapshot.time, snapshot.id


@dataclass
class _Ledger:
    """Reasons gathered per snapshot, merged by (rule, text) across components."""

    found: dict[str, dict[tuple[Rule, str], list[str]]] = field(default_factory=dict)

    def add(self, snapshot_id: str, rule: Rule, text: str, component: str | None = None) -> None:
        components = self.found[snapshot_id].setdefault((rule, text), [])
        if component is not None and component not in components:
            components.append(component)

    def kept(self, snapshot_id: str) -> bool:
        return bool(self.found[snapshot_id])

    def reasons(self, snapshot_id: str) -> tuple[Reason, ...]:
        entries = sorted(self.found[snapshot_id].items(), key=lambda item: _RANK[item[0][0]])
        return tuple(Reason(rule, text, tuple(sorted(components))) for (rule, text), components in entries)


def decide(
    snapshots: Iterable[SnapshotInfo],
    retention: Retention,
    protected: Mapping[str, Sequence[str]] | None = None,
    now: dt.datetime | None = None,
) -> Plan:
    """Apply ``retention`` to ``snapshots``. ``protected`` maps a snapshot id to the caller's
    reasons to keep it (``needed by rollback of run ...``); ``now`` (aware) keeps a snapshot
    from the future from being the newest that keep_within counts from. ValueError when two
    snapshots share an id or ``now`` has no UTC offset."""
    if now is not None:
        if now.utcoffset() is None:
            raise ValueError("now has no UTC offset")
        now = now.astimezone(dt.UTC)
    ordered = sorted(snapshots, key=_order)
    ledger = _Ledger({s.id: {} for s in ordered})
    if len(ledger.found) != len(ordered):
        raise ValueError("two snapshots share an id")
    timelines: dict[str, list[SnapshotInfo]] = {}
    for snapshot in reversed(ordered):
        for component in snapshot.components:
            timelines.setdefault(component, []).append(snapshot)
    local = _LocalTimes(retention.zone)
    for component in sorted(timelines):
        _apply(retention.policy_for(component), component, timelines[component], local, now, ledger)
    missing = _never_delete(ordered, timelines, protected or {}, ledger)
    decisions = tuple(Decision(s, ledger.reasons(s.id)) for s in ordered)
    return Plan(decisions, tuple(retention.describe()), missing)


def _never_delete(
    ordered: list[SnapshotInfo],
    timelines: dict[str, list[SnapshotInfo]],
    protected: Mapping[str, Sequence[str]],
    ledger: _Ledger,
) -> tuple[str, ...]:
    """Add the rules no policy overrides; return the protected ids that are not snapshots."""
    for snapshot in ordered:
        if snapshot.pinned:
            ledger.add(snapshot.id, Rule.PINNED, "pinned")
        if not snapshot.components:
            ledger.add(snapshot.id, Rule.UNJUDGED, "records no component: no policy judges it")
    missing = []
    for snapshot_id, reasons in protected.items():
        if snapshot_id not in ledger.found:
            missing.append(snapshot_id)
            continue
        for text in list(reasons) or ["protected"]:
            ledger.add(snapshot_id, Rule.PROTECTED, text)
    for component in sorted(timelines):
        newest_verified = next((s for s in timelines[component] if s.verified), None)
        if newest_verified is not None:
            ledger.add(newest_verified.id, Rule.NEWEST_VERIFIED, "newest verified", component)
    # judged on what the rules above keep, so that a snapshot saving two components names both
    bare = [c for c in sorted(timelines) if not any(ledger.kept(s.id) for s in timelines[c])]
    for component in bare:
        newest = timelines[component][0]
        ledger.add(newest.id, Rule.LAST_OF_COMPONENT, "newest, as nothing else of it is kept", component)
    return tuple(sorted(missing))


class _LocalTimes:
    """Each snapshot's time on the configured zone's clock, computed once."""

    def __init__(self, zone: dt.tzinfo) -> None:
        self.zone = zone
        self.cache: dict[str, dt.datetime] = {}

    def __call__(self, snapshot: SnapshotInfo) -> dt.datetime:
        found = self.cache.get(snapshot.id)
        if found is None:
            found = self.cache[snapshot.id] = snapshot.time.astimezone(self.zone)
        return found


def _hour_label(local: dt.datetime) -> str:
    label = local.strftime("%Y-%m-%d %H:00")
    other = local.replace(fold=1 - local.fold)
    if other.utcoffset() != local.utcoffset():  # the hour the clock repeats: say which one
        offset = local.strftime("%z")
        label += f" ({offset[:3]}:{offset[3:]})"
    return label


def _week_label(local: dt.datetime) -> str:
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"


# rule, the count's attribute on Policy, the bucket's key, its label, the unit's plural
_Bucket = tuple[Rule, str, Callable[[dt.datetime], object], Callable[[dt.datetime], str], str]
BUCKETS: tuple[_Bucket, ...] = (
    (Rule.HOURLY, "hourly", lambda t: (t.toordinal(), t.hour, t.utcoffset()), _hour_label, "hours"),
    (Rule.DAILY, "daily", lambda t: t.toordinal(), lambda t: t.strftime("%Y-%m-%d"), "days"),
    (Rule.WEEKLY, "weekly", lambda t: t.isocalendar()[:2], _week_label, "weeks"),
    (Rule.MONTHLY, "monthly", lambda t: (t.year, t.month), lambda t: t.strftime("%Y-%m"), "months"),
    (Rule.YEARLY, "yearly", lambda t: t.year, lambda t: str(t.year), "years"),
)


def _apply(
    policy: Policy,
    component: str,
    timeline: list[SnapshotInfo],
    local: _LocalTimes,
    now: dt.datetime | None,
    ledger: _Ledger,
) -> None:
    """Add the reasons ``policy`` keeps snapshots of ``timeline`` (newest first) for."""
    if policy.empty:
        for snapshot in timeline:
            ledger.add(snapshot.id, Rule.NO_POLICY, "no retention policy: everything is kept", component)
        return
    if policy.last:
        count = len(timeline) if policy.last == UNLIMITED else policy.last
        text = "last (unlimited)" if policy.last == UNLIMITED else f"last {policy.last}"
        for snapshot in timeline[:count]:
            ledger.add(snapshot.id, Rule.LAST, text, component)
    for bucket in BUCKETS:
        if getattr(policy, bucket[1]):
            _keep_buckets(bucket, getattr(policy, bucket[1]), component, timeline, local, ledger)
    if policy.within is not None:
        _keep_within(policy, component, timeline, local.zone, now, ledger)
    for wanted in policy.tags:
        text = tag_text(wanted)
        for snapshot in timeline:
            if tags_match(wanted, snapshot.tags):
                ledger.add(snapshot.id, Rule.TAGS, text, component)


def _keep_buckets(
    bucket: _Bucket, count: int, component: str, timeline: list[SnapshotInfo], local: _LocalTimes, ledger: _Ledger
) -> None:
    """restic's walk: the newest snapshot of each bucket until ``count`` buckets are kept; the
    oldest snapshot too when the walk ends with buckets to spare."""
    rule, name, key_of, label_of, unit = bucket
    remaining = count
    seen: set[object] = set()
    for index, snapshot in enumerate(timeline):
        if remaining == 0:
            break
        moment = local(snapshot)
        key = key_of(moment)
        if key not in seen:
            seen.add(key)
            ledger.add(snapshot.id, rule, f"{name} {label_of(moment)}", component)
            if remaining > 0:
                remaining -= 1
        elif index == len(timeline) - 1:
            spare = "unlimited" if count == UNLIMITED else f"{len(seen)} of {count} {unit} found"
            ledger.add(snapshot.id, rule, f"{name}: oldest snapshot, {spare}", component)


def _keep_within(
    policy: Policy,
    component: str,
    timeline: list[SnapshotInfo],
    zone: dt.tzinfo,
    now: dt.datetime | None,
    ledger: _Ledger,
) -> None:
    assert policy.within is not None
    newest = next((s.time for s in timeline if now is None or s.time < now), None)
    cutoff = policy.within.before(newest, zone) if newest is not None else None
    text = f"within {policy.within} of the newest"
    for snapshot in timeline:
        if cutoff is not None and snapshot.time <= cutoff:
            break
        ledger.add(snapshot.id, Rule.WITHIN, text, component)
