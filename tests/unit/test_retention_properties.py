"""Property-based tests of retention: random timelines (irregular times, daylight-saving
switches, a new year, tags, pins, protections, unverified snapshots, several components)
checked against a reference written here from the definition, not from the module's code.

The reference groups a timeline by bucket and takes the newest of each bucket outright;
the module walks the timeline as restic does. They agree when every bucket is one stretch of
time, which holds for the zones used here.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from collections.abc import Callable, Hashable
from zoneinfo import ZoneInfo

from hypothesis import event, given, settings
from hypothesis import strategies as st

from aura_ops.retention import UNLIMITED, Duration, Plan, Policy, Retention, Rule, SnapshotInfo, decide

UTC = dt.UTC
ZONES: list[dt.tzinfo] = [
    UTC,
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Australia/Lord_Howe"),  # a half-hour daylight-saving shift
]
# Instants something happens at: each zone's switches in 2026, a new year inside ISO week
# 2026-W53, and the first Monday of 2027
PIVOTS = [
    dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Berlin: 02:00 CET -> 03:00 CEST
    dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Berlin: 03:00 CEST -> 02:00 CET
    dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York: 02:00 EST -> 03:00 EDT
    dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York: 02:00 EDT -> 01:00 EST
    dt.datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe: 02:00 +11 -> 01:30 +10:30
    dt.datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
    dt.datetime(2027, 1, 4, 0, 0, tzinfo=UTC),
]
COMPONENTS = ["db", "files", "app"]
TAGS = ["release", "audit", "q4"]
POLICY_RULES = (Rule.NO_POLICY, Rule.LAST, Rule.HOURLY, Rule.DAILY, Rule.WEEKLY, Rule.MONTHLY, Rule.YEARLY)
POLICY_RULES += (Rule.WITHIN, Rule.TAGS)

offsets = st.one_of(
    st.integers(-3 * 3600, 3 * 3600),  # around the switch, to the second
    st.integers(-24 * 60, 24 * 60).map(lambda hours: hours * 3600),  # on the hour: exactly at a cutoff
    st.integers(-40 * 86400, 40 * 86400),
    st.integers(-4 * 365 * 86400, 4 * 365 * 86400),
)


snapshot_fields = st.tuples(
    offsets,
    st.integers(0, 19),  # 0: a snapshot that records no component
    st.frozensets(st.sampled_from(COMPONENTS), min_size=1),
    st.sampled_from(ZONES),  # the same instant, written in any zone
    st.frozensets(st.sampled_from(TAGS), max_size=2),
    st.integers(0, 14),  # 0: pinned
    st.integers(0, 3),  # verified when below the timeline's rate
    st.integers(0, 999),  # an id prefix unrelated to time
)


@st.composite
def timelines(draw: st.DrawFn) -> list[SnapshotInfo]:
    pivot = draw(st.sampled_from(PIVOTS))
    verify_rate = draw(st.sampled_from([0, 2, 4]))  # none verified yet, about half, all
    fields = draw(st.lists(snapshot_fields, max_size=40))
    if fields:  # a few snapshots at exactly the same time as another
        twins = st.tuples(st.sampled_from([f[0] for f in fields]), snapshot_fields)
        fields += [(moment, *other[1:]) for moment, other in draw(st.lists(twins, max_size=3))]
    snapshots = []
    for index, (offset, rare, components, shown_in, tags, pin, verified, prefix) in enumerate(fields):
        snapshots.append(
            SnapshotInfo(
                id=f"{prefix:03d}-{index:03d}",
                time=(pivot + dt.timedelta(seconds=offset)).astimezone(shown_in),
                components=frozenset() if rare == 0 else components,
                tags=tags,
                pinned=pin == 0,
                verified=verified < verify_rate,
            )
        )
    return snapshots


COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
durations = st.builds(
    Duration,
    years=st.sampled_from([0, 0, 0, 1]),
    months=st.sampled_from([0, 0, 1, 3]),
    days=st.integers(0, 10),
    hours=st.integers(0, 50),
).filter(lambda d: not d.zero)
tag_sets = st.one_of(st.frozensets(st.sampled_from(TAGS), min_size=1, max_size=2), st.just(frozenset({""})))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """A few rules on (none: the empty policy), so each rule is often the only one; a quarter
    keep by tags alone (which can keep nothing of a component)."""
    if draw(st.integers(0, 3)) == 0:
        return Policy(tags=tuple(draw(st.lists(tag_sets, min_size=1, max_size=2))))
    enabled = draw(st.sets(st.sampled_from([*COUNTS, "within", "tags"]), max_size=4))
    chosen: dict[str, object] = {name: draw(st.sampled_from([1, 1, 2, 3, 5, 8, UNLIMITED])) for name in COUNTS}
    chosen = {name: count for name, count in chosen.items() if name in enabled}
    if "within" in enabled:
        chosen["within"] = draw(durations)
    if "tags" in enabled:
        chosen["tags"] = tuple(draw(st.lists(tag_sets, min_size=1, max_size=2)))
    return Policy(**chosen)  # type: ignore[arg-type]


retentions = st.builds(
    Retention,
    default=policies(),
    components=st.dictionaries(st.sampled_from(COMPONENTS), policies(), max_size=2),
    zone=st.sampled_from(ZONES),
)


# ---- the reference: the definition, written plainly ------------------------------------------


def newest_first(snapshots: list[SnapshotInfo]) -> list[SnapshotInfo]:
    return sorted(snapshots, key=lambda s: (s.time.timestamp(), s.id), reverse=True)


def hour_started(local: dt.datetime) -> Hashable:
    # the instant the local clock's hour began, with the offset in force: an hour of elapsed time
    return local.replace(minute=0, second=0, microsecond=0, tzinfo=None) - local.utcoffset()  # type: ignore[operator]


def iso_week(local: dt.datetime) -> Hashable:
    # ISO 8601: a week belongs to the year of its Thursday; week 1 holds the year's first Thursday
    thursday = local.date() + dt.timedelta(days=3 - local.weekday())
    return thursday.year, (thursday - dt.date(thursday.year, 1, 1)).days // 7 + 1


PERIODS: dict[Rule, Callable[[dt.datetime], Hashable]] = {
    Rule.HOURLY: hour_started,
    Rule.DAILY: lambda local: local.date(),
    Rule.WEEKLY: iso_week,
    Rule.MONTHLY: lambda local: (local.year, local.month),
    Rule.YEARLY: lambda local: local.year,
}


def newest_of_each_bucket(timeline: list[SnapshotInfo], count: int, rule: Rule, zone: dt.tzinfo) -> set[str]:
    """The newest snapshot of each of the ``count`` newest buckets that have one; the oldest
    snapshot too when fewer buckets than ``count`` have one."""
    buckets: dict[Hashable, list[SnapshotInfo]] = defaultdict(list)
    for snapshot in timeline:
        buckets[PERIODS[rule](snapshot.time.astimezone(zone))].append(snapshot)
    heads = newest_first([max(members, key=lambda s: (s.time.timestamp(), s.id)) for members in buckets.values()])
    chosen = heads if count == UNLIMITED else heads[:count]
    ids = {s.id for s in chosen}
    if count == UNLIMITED or len(buckets) < count:
        ids.add(timeline[-1].id)
    return ids


def cutoff_of(newest: dt.datetime, within: Duration, zone: dt.tzinfo) -> dt.datetime | None:
    """``within`` before ``newest``: years, months, days on the calendar, then elapsed hours."""
    local = newest.astimezone(zone)
    year, month = local.year - within.years, local.month - within.months
    while month < 1:
        month += 12
        year -= 1
    try:
        first = dt.datetime(year, month, 1, local.hour, local.minute, local.second, local.microsecond, tzinfo=zone)
        cutoff = (first + dt.timedelta(days=local.day - 1 - within.days)).astimezone(UTC)
        return cutoff - dt.timedelta(hours=within.hours)
    except (ValueError, OverflowError):
        return None  # before year 1


def newest_before(timeline: list[SnapshotInfo], now: dt.datetime | None) -> dt.datetime | None:
    return max((s.time for s in timeline if now is None or s.time < now), default=None)


def within_window(timeline: list[SnapshotInfo], within: Duration, zone: dt.tzinfo, now: dt.datetime | None) -> set[str]:
    newest = newest_before(timeline, now)
    cutoff = None if newest is None else cutoff_of(newest, within, zone)
    return {s.id for s in timeline if cutoff is None or s.time > cutoff}


def has_tags(wanted: frozenset[str], snapshot: SnapshotInfo) -> bool:
    return not snapshot.tags if wanted == {""} else all(tag in snapshot.tags for tag in wanted)


def policy_keeps(policy: Policy, timeline: list[SnapshotInfo], zone: dt.tzinfo, now: dt.datetime | None) -> dict:
    """rule -> ids kept by that rule of ``policy`` in ``timeline`` (newest first)."""
    if policy.empty:
        return {Rule.NO_POLICY: {s.id for s in timeline}}
    kept: dict[Rule, set[str]] = {}
    if policy.last:
        kept[Rule.LAST] = {s.id for s in (timeline if policy.last == UNLIMITED else timeline[: policy.last])}
    for rule, count in (
        (Rule.HOURLY, policy.hourly),
        (Rule.DAILY, policy.daily),
        (Rule.WEEKLY, policy.weekly),
        (Rule.MONTHLY, policy.monthly),
        (Rule.YEARLY, policy.yearly),
    ):
        if count:
            kept[rule] = newest_of_each_bucket(timeline, count, rule, zone)
    if policy.within is not None:
        kept[Rule.WITHIN] = within_window(timeline, policy.within, zone, now)
    if policy.tags:
        kept[Rule.TAGS] = {s.id for s in timeline if any(has_tags(w, s) for w in policy.tags)}
    return kept


def reference(
    snapshots: list[SnapshotInfo], retention: Retention, protected: dict[str, list[str]], now: dt.datetime | None
) -> dict[tuple[Rule, str | None], set[str]]:
    """(rule, component or None) -> the ids that rule keeps."""
    expected: dict[tuple[Rule, str | None], set[str]] = defaultdict(set)
    ids = {s.id for s in snapshots}
    timelines = {c: newest_first([s for s in snapshots if c in s.components]) for c in COMPONENTS}
    timelines = {c: t for c, t in timelines.items() if t}
    for component, timeline in timelines.items():
        for rule, kept in policy_keeps(retention.policy_for(component), timeline, retention.zone, now).items():
            expected[rule, component] |= kept
        verified = [s for s in timeline if s.verified]
        if verified:
            expected[Rule.NEWEST_VERIFIED, component].add(verified[0].id)
    expected[Rule.PINNED, None] = {s.id for s in snapshots if s.pinned}
    expected[Rule.UNJUDGED, None] = {s.id for s in snapshots if not s.components}
    expected[Rule.PROTECTED, None] = set(protected) & ids
    so_far = set().union(*expected.values())
    for component, timeline in timelines.items():
        if not so_far & {s.id for s in timeline}:
            expected[Rule.LAST_OF_COMPONENT, component].add(timeline[0].id)
            event("a component would have been left without a snapshot")
    return {key: value for key, value in expected.items() if value}


def actual(plan: Plan) -> dict[tuple[Rule, str | None], set[str]]:
    found: dict[tuple[Rule, str | None], set[str]] = defaultdict(set)
    for decision in plan.decisions:
        for reason in decision.reasons:
            for component in reason.components or (None,):
                found[reason.rule, component].add(decision.snapshot.id)
    return dict(found)


# ---- properties ------------------------------------------------------------------------------

now_offsets = st.one_of(st.none(), offsets)
protection_reasons = st.lists(st.sampled_from(["needed by rollback of run r1", "referenced by run r2"]), max_size=2)


@settings(max_examples=200, deadline=None)
@given(timelines(), retentions, st.data())
def test_every_rule_keeps_exactly_what_its_definition_says(
    snapshots: list[SnapshotInfo], retention: Retention, data: st.DataObject
) -> None:
    ids = [s.id for s in snapshots]
    protected = data.draw(st.dictionaries(st.sampled_from([*ids, "gone-1"]), protection_reasons, max_size=4))
    offset = data.draw(now_offsets)
    now = None if offset is None else data.draw(st.sampled_from(PIVOTS)) + dt.timedelta(seconds=offset)
    within = retention.policy_for("db").within
    newest = newest_before([s for s in snapshots if "db" in s.components], now)
    if within and newest and data.draw(st.booleans()):  # one exactly at the cutoff: not within
        cutoff = cutoff_of(newest, within, retention.zone)
        if cutoff is not None:
            snapshots = [*snapshots, SnapshotInfo("at-cutoff", cutoff, frozenset({"db"}))]
            event("a snapshot exactly at the keep_within cutoff")

    plan = decide(snapshots, retention, protected, now)

    expected = reference(snapshots, retention, protected, now)
    assert actual(plan) == expected
    assert set(plan.kept) == set().union(*expected.values())
    assert plan.missing_protected == tuple(sorted(set(protected) - set(ids)))


@settings(max_examples=200, deadline=None)
@given(timelines(), retentions, st.data())
def test_never_deleted_whatever_the_policy(
    snapshots: list[SnapshotInfo], retention: Retention, data: st.DataObject
) -> None:
    ids = [s.id for s in snapshots]
    protected = data.draw(st.dictionaries(st.sampled_from(ids or ["none"]), protection_reasons, max_size=4))
    plan = decide(snapshots, retention, protected)
    kept = set(plan.kept)
    by_id = {d.snapshot.id: d for d in plan.decisions}

    assert {s.id for s in snapshots if s.pinned} <= kept
    assert set(protected) & set(ids) <= kept
    assert {s.id for s in snapshots if not s.components} <= kept
    for component in COMPONENTS:
        holding = newest_first([s for s in snapshots if component in s.components])
        if holding:
            assert kept & {s.id for s in holding}, f"{component} was left without a snapshot"
        verified = [s for s in holding if s.verified]
        if verified:
            assert verified[0].id in kept and by_id[verified[0].id].protected
    for decision in plan.decisions:
        assert decision.keep == bool(decision.reasons) == (decision.as_row()["decision"] == "keep")
        if decision.snapshot.pinned or decision.snapshot.id in protected:
            assert decision.protected
    assert len(plan.decisions) == len(snapshots)


@settings(max_examples=100, deadline=None)
@given(timelines(), retentions, st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_order_snapshots_come_in(
    snapshots: list[SnapshotInfo], retention: Retention, rng: random.Random
) -> None:
    shuffled = snapshots[:]
    rng.shuffle(shuffled)
    assert decide(shuffled, retention) == decide(snapshots, retention)
    times = [d.snapshot.time for d in decide(snapshots, retention).decisions]
    assert times == sorted(times)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(PIVOTS),
    st.sampled_from(ZONES),
    st.integers(60, 30 * 60),  # the interval between snapshots, in seconds: 1 to 30 min
    st.integers(-30 * 3600, 0),
)
def test_a_daylight_saving_switch_neither_keeps_nor_drops_a_snapshot(
    pivot: dt.datetime, zone: dt.tzinfo, step: int, start: int
) -> None:
    # a dense, regular run of snapshots across a switch: unlimited daily keeps exactly the last
    # one of each calendar day (plus the very first), unlimited hourly the last of each hour as
    # the clock on the wall shows it, except that the hour a clock repeats counts twice
    first = pivot + dt.timedelta(seconds=start)
    snapshots = [
        SnapshotInfo(f"{i:05d}", first + dt.timedelta(seconds=step * i), frozenset({"db"}))
        for i in range(min(1500, 60 * 3600 // step))
    ]
    daily = decide(snapshots, Retention(Policy(daily=UNLIMITED), {}, zone))
    days: dict[dt.date, str] = {}
    for s in snapshots:
        days[s.time.astimezone(zone).date()] = s.id  # the last one written wins
    assert set(daily.kept) == set(days.values()) | {snapshots[0].id}

    hourly = decide(snapshots, Retention(Policy(hourly=UNLIMITED), {}, zone))
    hours: dict[tuple[dt.date, int, dt.timedelta | None], str] = {}
    for s in snapshots:
        local = s.time.astimezone(zone)
        hours[local.date(), local.hour, local.utcoffset()] = s.id
    assert set(hourly.kept) == set(hours.values()) | {snapshots[0].id}
    whole_hours = all(s.time.astimezone(zone).utcoffset() % dt.timedelta(hours=1) == dt.timedelta(0) for s in snapshots)
    if whole_hours:
        # local hours then start with UTC hours: each hour of elapsed time keeps exactly one,
        # 23 on the day summer time starts and 25 on the day it ends
        utc_hours = {s.time.replace(minute=0, second=0, microsecond=0): s.id for s in snapshots}
        assert set(hourly.kept) == set(utc_hours.values()) | {snapshots[0].id}
