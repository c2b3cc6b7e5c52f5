"""Retention by example: restic's documented cases, DST days, ISO weeks across a new year,
keep_within, the never-delete rules, and the configuration section."""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aura_ops import config
from aura_ops.errors import ConfigError
from aura_ops.retention import (
    UNLIMITED,
    Duration,
    Policy,
    Retention,
    Rule,
    SnapshotInfo,
    decide,
    parse_duration,
    time_zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def snap(
    snapshot_id: str,
    when: dt.datetime,
    components: tuple[str, ...] = ("db",),
    tags: tuple[str, ...] = (),
    pinned: bool = False,
    verified: bool = False,
) -> SnapshotInfo:
    return SnapshotInfo(snapshot_id, when, frozenset(components), frozenset(tags), pinned, verified)


def kept(snapshots: list[SnapshotInfo], policy: Policy, zone: dt.tzinfo = dt.UTC, **kwargs: object) -> list[str]:
    return decide(snapshots, Retention(policy, {}, zone), **kwargs).kept  # type: ignore[arg-type]


def reasons_of(plan_rows: list[dict[str, object]], snapshot_id: str) -> list[str]:
    return next(row["reasons"] for row in plan_rows if row["id"] == snapshot_id)  # type: ignore[misc]


# restic's own example (doc/060_forget.rst): backups every weekday for two weeks, one extra on
# Fridays, a Wednesday missed; `forget --keep-daily 5` keeps these five.
RESTIC_EXAMPLE = [
    ("60e5c031", "2025-04-21 11:00"),
    ("1dccffe9", "2025-04-22 11:00"),
    ("90a5c949", "2025-04-23 11:00"),
    ("79580708", "2025-04-24 11:00"),
    ("8a603ddf", "2025-04-25 11:00"),
    ("ae33bf10", "2025-04-25 23:00"),
    ("fb8b1418", "2025-04-28 11:00"),
    ("1db188b4", "2025-04-29 11:00"),
    ("7baa4f28", "2025-05-01 11:00"),
    ("05c48af3", "2025-05-02 11:00"),
    ("ad72e262", "2025-05-02 23:00"),
]


def restic_example() -> list[SnapshotInfo]:
    return [snap(i, dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC)) for i, t in RESTIC_EXAMPLE]


def test_keep_daily_keeps_what_restics_documentation_shows() -> None:
    assert sorted(kept(restic_example(), Policy(daily=5))) == sorted(
        ["ae33bf10", "fb8b1418", "1db188b4", "7baa4f28", "ad72e262"]
    )


def test_keep_last_keeps_the_newest_n() -> None:
    assert kept(restic_example(), Policy(last=3)) == ["7baa4f28", "05c48af3", "ad72e262"]


def test_buckets_that_have_no_snapshot_do_not_count() -> None:
    # the missed Wednesday (2025-04-30) does not use up one of the six days
    plan = decide(restic_example(), Retention(Policy(daily=6)))
    assert "8a603ddf" not in plan.kept and "ae33bf10" in plan.kept and "79580708" in plan.kept
    assert len(plan.kept) == 6


def test_fewer_buckets_than_asked_also_keeps_the_oldest_snapshot_as_restic_does() -> None:
    # three days with snapshots, seven asked for: the newest of each day, and the very oldest
    start = dt.datetime(2026, 5, 4, 8, tzinfo=dt.UTC)
    snapshots = [snap(f"s{i}", start + dt.timedelta(hours=5 * i)) for i in range(12)]  # spans 3 days
    plan = decide(snapshots, Retention(Policy(daily=7)))
    assert plan.kept == ["s0", "s3", "s7", "s11"]
    assert reasons_of(plan.rows(), "s0") == ["daily: oldest snapshot, 3 of 7 days found (db)"]
    # with enough days, no extra
    assert kept(snapshots, Policy(daily=3)) == ["s3", "s7", "s11"]


def test_unlimited_keeps_every_bucket() -> None:
    # the newest of each of the nine days; the oldest snapshot (60e5c031) is one of them
    plan = decide(restic_example(), Retention(Policy(daily=UNLIMITED)))
    assert sorted(plan.deleted) == ["05c48af3", "8a603ddf"]


def test_rules_are_alternatives_and_each_counts_on_its_own() -> None:
    # keep_last 2 keeps both snapshots of 2025-05-02; keep_daily 2 still counts 05-02 and 05-01
    # (restic: a snapshot kept by one rule still counts for the next; borg would skip it)
    plan = decide(restic_example(), Retention(Policy(last=2, daily=2)))
    assert sorted(plan.kept) == ["05c48af3", "7baa4f28", "ad72e262"]
    assert reasons_of(plan.rows(), "ad72e262") == ["last 2 (db)", "daily 2025-05-02 (db)"]


def test_a_25_hour_day_keeps_one_snapshot_and_not_two() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours. 00:10 CEST and
    # 23:50 CET are the same local day (in UTC they are two: 24 Oct 22:10 and 25 Oct 22:50).
    early = dt.datetime(2026, 10, 25, 0, 10, tzinfo=BERLIN)
    late = dt.datetime(2026, 10, 25, 23, 50, tzinfo=BERLIN)
    next_day = dt.datetime(2026, 10, 26, 12, 0, tzinfo=BERLIN)
    day_before = dt.datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN)
    assert early.astimezone(dt.UTC).date() != late.astimezone(dt.UTC).date()
    snapshots = [snap("a", day_before), snap("b", early), snap("c", late), snap("d", next_day)]
    assert kept(snapshots, Policy(daily=3), BERLIN) == ["a", "c", "d"]
    assert kept(snapshots, Policy(daily=2), BERLIN) == ["c", "d"]
    # bucketed by UTC instead, 00:10 CEST would have been a day of its own (one extra kept)
    assert kept(snapshots, Policy(daily=3), dt.UTC) == ["b", "c", "d"]


def test_a_23_hour_day_keeps_one_snapshot_and_drops_none() -> None:
    # America/New_York enters summer time on 2026-03-08 (23 hours): 00:30 EST and 23:30 EDT
    # fall on two UTC days but one local day; each neighbouring day keeps its own.
    snapshots = [
        snap("a", dt.datetime(2026, 3, 7, 23, 30, tzinfo=NEW_YORK)),
        snap("b", dt.datetime(2026, 3, 8, 0, 30, tzinfo=NEW_YORK)),
        snap("c", dt.datetime(2026, 3, 8, 23, 30, tzinfo=NEW_YORK)),
        snap("d", dt.datetime(2026, 3, 9, 0, 30, tzinfo=NEW_YORK)),
    ]
    assert kept(snapshots, Policy(daily=3), NEW_YORK) == ["a", "c", "d"]
    plan = decide(snapshots, Retention(Policy(daily=3), {}, NEW_YORK))
    assert reasons_of(plan.rows(), "c") == ["daily 2026-03-08 (db)"]


def test_the_hour_the_clock_repeats_is_two_hours() -> None:
    # 2026-10-25 in Berlin: 02:30 CEST and 02:30 CET are an hour apart, two hourly buckets
    first = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)  # 02:30 CEST
    snapshots = [snap(f"h{i}", first + dt.timedelta(hours=i)) for i in range(4)]  # 02:30+2 02:30+1 03:30 04:30
    snapshots.append(snap("h1-early", first + dt.timedelta(minutes=45)))  # 01:15 UTC: 02:15 CET, same hour as h1
    plan = decide(snapshots, Retention(Policy(hourly=4), {}, BERLIN))
    assert sorted(plan.kept) == ["h0", "h1", "h2", "h3"]
    assert reasons_of(plan.rows(), "h0") == ["hourly 2026-10-25 02:00 (+02:00) (db)"]
    assert reasons_of(plan.rows(), "h1") == ["hourly 2026-10-25 02:00 (+01:00) (db)"]
    assert reasons_of(plan.rows(), "h2") == ["hourly 2026-10-25 03:00 (db)"]


def test_times_given_on_a_repeated_wall_clock_hour_are_ordered_by_the_instant() -> None:
    # 02:40 CEST (fold=0) is 50 minutes before 02:30 CET (fold=1); same zone object, so Python
    # alone would compare the wall clocks and call the first one newer
    first = dt.datetime(2026, 10, 25, 2, 40, tzinfo=BERLIN)
    second = dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN)
    assert first > second  # the trap
    plan = decide([snap("first", first), snap("second", second)], Retention(Policy(last=1)))
    assert plan.kept == ["second"]


def test_iso_weeks_run_across_the_new_year() -> None:
    # 2026-12-28 (Mon) .. 2027-01-03 (Sun) is ISO week 2026-W53; 2027-01-04 starts 2027-W01
    snapshots = [
        snap("sun-w52", dt.datetime(2026, 12, 27, 12, tzinfo=dt.UTC)),
        snap("mon-w53", dt.datetime(2026, 12, 28, 12, tzinfo=dt.UTC)),
        snap("fri-w53", dt.datetime(2027, 1, 1, 12, tzinfo=dt.UTC)),
        snap("sun-w53", dt.datetime(2027, 1, 3, 12, tzinfo=dt.UTC)),
        snap("mon-w01", dt.datetime(2027, 1, 4, 12, tzinfo=dt.UTC)),
    ]
    plan = decide(snapshots, Retention(Policy(weekly=2)))
    assert plan.kept == ["sun-w53", "mon-w01"]
    assert reasons_of(plan.rows(), "sun-w53") == ["weekly 2026-W53 (db)"]
    assert reasons_of(plan.rows(), "mon-w01") == ["weekly 2027-W01 (db)"]
    # the calendar year is not the ISO year: yearly sees 2026 and 2027
    assert kept(snapshots, Policy(yearly=2)) == ["mon-w53", "mon-w01"]


def test_iso_week_one_can_start_in_december() -> None:
    # 2025-12-29 (Mon) is in 2026-W01, together with 2026-01-01
    snapshots = [
        snap("a", dt.datetime(2025, 12, 28, tzinfo=dt.UTC)),  # 2025-W52
        snap("b", dt.datetime(2025, 12, 29, tzinfo=dt.UTC)),
        snap("c", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ]
    plan = decide(snapshots, Retention(Policy(weekly=1)))
    assert plan.kept == ["c"]
    assert reasons_of(plan.rows(), "c") == ["weekly 2026-W01 (db)"]


def test_weeks_follow_the_configured_zone() -> None:
    # Sunday 23:30 in New York is already Monday (next ISO week) in UTC
    sunday_night = dt.datetime(2026, 6, 7, 23, 30, tzinfo=NEW_YORK)
    saturday = dt.datetime(2026, 6, 6, 12, tzinfo=NEW_YORK)
    snapshots = [snap("sat", saturday), snap("sun", sunday_night)]
    plan = decide(snapshots, Retention(Policy(weekly=2), {}, NEW_YORK))
    # one week in New York: the newest kept, the other kept as restic's "oldest" extra
    assert reasons_of(plan.rows(), "sun") == ["weekly 2026-W23 (db)"]
    assert reasons_of(plan.rows(), "sat") == ["weekly: oldest snapshot, 1 of 2 weeks found (db)"]
    assert kept(snapshots, Policy(weekly=1), NEW_YORK) == ["sun"]
    plan_utc = decide(snapshots, Retention(Policy(weekly=2)))
    assert reasons_of(plan_utc.rows(), "sat") == ["weekly 2026-W23 (db)"]
    assert reasons_of(plan_utc.rows(), "sun") == ["weekly 2026-W24 (db)"]


def test_keep_within_counts_from_the_newest_snapshot_not_from_now() -> None:
    old = dt.datetime(2019, 3, 1, tzinfo=dt.UTC)
    snapshots = [snap(f"s{i}", old + dt.timedelta(hours=12 * i)) for i in range(10)]  # 4.5 days
    plan = decide(snapshots, Retention(Policy(within=parse_duration("2d"))), now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    # newest is s9 at +108h; cutoff +60h, strictly after it: s6 (+72h) .. s9; s5 (+60h) is not
    assert plan.kept == ["s6", "s7", "s8", "s9"]
    assert reasons_of(plan.rows(), "s6") == ["within 2d of the newest (db)"]


def test_keep_within_days_are_calendar_days_in_the_zone() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29: one calendar day before 12:00 CEST on the 29th
    # is 12:00 CET on the 28th, 23 hours earlier, not 24
    newest = dt.datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN)
    snapshots = [
        snap("24h", newest.astimezone(dt.UTC) - dt.timedelta(hours=24)),  # 11:00 CET on the 28th
        snap("boundary", dt.datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)),  # exactly the cutoff
        snap("inside", dt.datetime(2026, 3, 28, 12, 1, tzinfo=BERLIN)),
        snap("newest", newest),
    ]
    assert kept(snapshots, Policy(within=parse_duration("1d")), BERLIN) == ["inside", "newest"]
    # hours are elapsed time: 24h reaches back to 11:00 CET (exclusive)
    assert kept(snapshots, Policy(within=parse_duration("24h")), BERLIN) == ["boundary", "inside", "newest"]


def test_keep_within_months_roll_over_like_restic() -> None:
    # Go's AddDate: 31 March less one month is "31 February", that is 3 March
    cutoff = Duration(months=1).before(dt.datetime(2026, 3, 31, 10, tzinfo=dt.UTC), dt.UTC)
    assert cutoff == dt.datetime(2026, 3, 3, 10, tzinfo=dt.UTC)
    assert Duration(years=1).before(dt.datetime(2028, 2, 29, tzinfo=dt.UTC), dt.UTC) == dt.datetime(
        2027, 3, 1, tzinfo=dt.UTC
    )
    assert Duration(years=5000).before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.UTC).year == 1


def test_a_snapshot_from_the_future_is_not_the_newest_keep_within_counts_from() -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    snapshots = [
        snap("old", now - dt.timedelta(days=10)),
        snap("recent", now - dt.timedelta(days=1, hours=12)),
        snap("latest", now - dt.timedelta(hours=1)),
        snap("future", now + dt.timedelta(days=30)),  # a clock that ran ahead
    ]
    assert kept(snapshots, Policy(within=parse_duration("2d")), now=now) == ["recent", "latest", "future"]
    # without `now`, the future snapshot is the newest and the others fall out of the window
    assert kept(snapshots, Policy(within=parse_duration("2d"))) == ["future"]


def test_keep_tags_are_alternatives_of_tag_sets() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    snapshots = [
        snap("plain", start),
        snap("release", start + dt.timedelta(days=1), tags=("release",)),
        snap("audit", start + dt.timedelta(days=2), tags=("audit",)),
        snap("audit-q4", start + dt.timedelta(days=3), tags=("audit", "q4")),
        snap("newest", start + dt.timedelta(days=4), tags=("nightly",), verified=True),
    ]
    wanted = (frozenset({"release"}), frozenset({"audit", "q4"}))
    plan = decide(snapshots, Retention(Policy(tags=wanted)))
    assert plan.kept == ["release", "audit-q4", "newest"]
    assert reasons_of(plan.rows(), "audit-q4") == ["tags audit+q4 (db)"]
    assert reasons_of(plan.rows(), "newest") == ["newest verified (db)"]
    assert kept(snapshots, Policy(last=1, tags=(frozenset({""}),))) == ["plain", "newest"]


def test_never_deleted_whatever_the_policy() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    snapshots = [
        snap("pinned", start, pinned=True),
        snap("rollback", start + dt.timedelta(days=1)),
        snap("verified", start + dt.timedelta(days=2), components=("db", "files"), verified=True),
        snap("files-verified", start + dt.timedelta(days=3), components=("files",), verified=True),
        snap("doomed", start + dt.timedelta(days=4)),
        snap("unverified", start + dt.timedelta(days=5)),
    ]
    protected = {"rollback": ["needed by rollback of run r1"], "gone": ["referenced by run r2 (interrupted)"]}
    plan = decide(snapshots, Retention(Policy(last=1)), protected=protected)
    assert plan.kept == ["pinned", "rollback", "verified", "files-verified", "unverified"]
    assert plan.deleted == ["doomed"]
    assert plan.missing_protected == ("gone",)
    rows = plan.rows()
    assert reasons_of(rows, "pinned") == ["pinned"]
    assert reasons_of(rows, "rollback") == ["needed by rollback of run r1"]
    assert reasons_of(rows, "verified") == ["newest verified (db)"]
    assert reasons_of(rows, "files-verified") == ["newest verified (files)", "last 1 (files)"]
    assert reasons_of(rows, "unverified") == ["last 1 (db)"]
    assert [r["protected"] for r in rows] == [True, True, True, True, False, False]


def test_a_tags_only_policy_never_leaves_a_component_without_a_snapshot() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    snapshots = [snap("a", start), snap("b", start + dt.timedelta(days=1)), snap("c", start, components=("files",))]
    plan = decide(snapshots, Retention(Policy(tags=(frozenset({"release"}),))))
    assert plan.kept == ["c", "b"]
    assert reasons_of(plan.rows(), "b") == ["newest, as nothing else of it is kept (db)"]
    assert plan.decisions[-1].protected
    shared = [snap("both", start, components=("db", "files"))]
    assert decide(shared, Retention(Policy(tags=(frozenset({"x"}),)))).rows()[0]["reasons"] == [
        "newest, as nothing else of it is kept (db, files)"
    ]


def test_an_empty_policy_keeps_everything_and_says_so() -> None:
    snapshots = restic_example()
    plan = decide(snapshots, Retention())
    assert plan.deleted == []
    assert all(row["reasons"] == ["no retention policy: everything is kept (db)"] for row in plan.rows())
    assert plan.policy == ("every component: keep everything (no keep_* rule)", "time zone: UTC")
    assert not Retention().configured


def test_a_snapshot_without_components_is_never_judged() -> None:
    plan = decide([snap("odd", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), components=())], Retention(Policy(last=1)))
    assert plan.kept == ["odd"]
    assert plan.rows()[0]["reasons"] == ["records no component: no policy judges it"]


def test_per_component_policy_replaces_the_default_and_any_timeline_keeps_a_shared_snapshot() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    both = ("db", "files")
    snapshots = [snap(f"s{i}", start + dt.timedelta(days=i), components=both) for i in range(5)]
    snapshots += [snap(f"d{i}", start + dt.timedelta(days=i, hours=1), components=("db",)) for i in range(5)]
    retention = Retention(Policy(last=2), {"db": Policy(last=1)})
    plan = decide(snapshots, retention)
    # files keeps its two newest (s3, s4), db keeps only d4
    assert sorted(plan.kept) == ["d4", "s3", "s4"]
    assert reasons_of(plan.rows(), "s4") == ["last 2 (files)"]
    assert plan.policy == ("other components: keep 2 latest", "db: keep 1 latest", "time zone: UTC")


def test_reasons_name_every_component_whose_rule_keeps_the_snapshot() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    snapshots = [snap("s", start, components=("db", "files", "app"), verified=True)]
    plan = decide(snapshots, Retention(Policy(last=1, daily=1)))
    assert reasons_of(plan.rows(), "s") == [
        "newest verified (app, db, files)",
        "last 1 (app, db, files)",
        "daily 2026-01-01 (app, db, files)",
    ]
    kinds = {reason.rule for reason in plan.decisions[0].reasons}
    assert kinds == {Rule.NEWEST_VERIFIED, Rule.LAST, Rule.DAILY}


def test_the_plan_is_a_dry_run_listing() -> None:
    plan = decide(restic_example(), Retention(Policy(daily=5)))
    rows = plan.rows()
    assert [r["id"] for r in rows] == [i for i, _ in RESTIC_EXAMPLE]  # oldest first
    assert rows[0] == {
        "id": "60e5c031",
        "time": "2025-04-21T11:00:00+00:00",  # in UTC
        "components": ["db"],
        "tags": [],
        "pinned": False,
        "verified": False,
        "decision": "delete",
        "protected": False,
        "reasons": [],
    }
    assert rows[-1]["decision"] == "keep" and rows[-1]["reasons"] == ["daily 2025-05-02 (db)"]


def test_the_same_snapshots_in_any_order_give_the_same_plan() -> None:
    snapshots = restic_example() + [snap("same-time", dt.datetime(2025, 5, 2, 23, tzinfo=dt.UTC))]
    expected = decide(snapshots, Retention(Policy(last=1, daily=3)))
    assert expected.kept[-1] == "same-time"  # equal times: the greater id is the newer
    for seed in range(5):
        shuffled = snapshots[:]
        random.Random(seed).shuffle(shuffled)
        assert decide(shuffled, Retention(Policy(last=1, daily=3))) == expected


def test_ten_thousand_snapshots_are_decided_quickly() -> None:
    rng = random.Random(7)
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    snapshots = [
        snap(
            f"s{i:05d}",
            start + dt.timedelta(seconds=rng.randrange(3 * 365 * 86400)),
            tuple(rng.sample(["db", "files", "app"], rng.randint(1, 3))),
            verified=rng.random() < 0.5,
        )
        for i in range(10_000)
    ]
    retention = Retention(
        Policy(last=3, hourly=24, daily=7, weekly=4, monthly=12, yearly=5, within=Duration(days=2)), {}, BERLIN
    )
    began = time.perf_counter()
    plan = decide(snapshots, retention)
    elapsed = time.perf_counter() - began
    assert len(plan.decisions) == 10_000 and 0 < len(plan.kept) < 10_000
    assert elapsed < 5, elapsed  # measured about 0.1 s; generous for a loaded machine


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        snap("naive", dt.datetime(2026, 1, 1))
    twins = [snap("x", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), snap("x", dt.datetime(2026, 1, 2, tzinfo=dt.UTC))]
    with pytest.raises(ValueError, match="share an id"):
        decide(twins, Retention())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2y5m7d3h", Duration(2, 5, 7, 3)),
        ("7d", Duration(days=7)),
        ("3h2d", Duration(days=2, hours=3)),
        (" 36h ", Duration(hours=36)),
    ],
)
def test_durations_read_like_restics(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "7w", "1d1d", "d", "0d", "-1d", "1.5d", "7 d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_time_zones_are_iana_names() -> None:
    assert time_zone("UTC") is dt.UTC
    assert time_zone("Europe/Berlin") == BERLIN
    for bad in ("Europe/Berln", "", "../../etc/passwd", "/usr/share/zoneinfo/UTC"):
        with pytest.raises(ValueError, match="unknown time zone"):
            time_zone(bad)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aura.yaml"
    path.write_text(text)
    return path


def test_the_retention_section_builds_the_policies(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components:
  db: {type: postgres, dsn_env: X}
  uploads: {type: files, path: up}
retention:
  keep_last: 3
  keep_daily: 7
  keep_monthly: unlimited
  keep_within: 3h2d
  keep_tags: [release, [audit, q4], ""]
  timezone: Europe/Berlin
  components:
    db: {keep_last: 5}
""",
    )
    section = config.load(path).retention
    assert section.keep_within == "2d3h"
    retention = section.retention()
    assert retention.zone == BERLIN
    assert retention.default == Policy(
        last=3,
        daily=7,
        monthly=UNLIMITED,
        within=Duration(days=2, hours=3),
        tags=(frozenset({"release"}), frozenset({"audit", "q4"}), frozenset({""})),
    )
    assert retention.policy_for("db") == Policy(last=5)
    assert retention.policy_for("uploads") is retention.default
    assert retention.configured


def test_no_retention_section_keeps_everything(tmp_path: Path) -> None:
    retention = config.load(write(tmp_path, "repository: {path: repo}\n")).retention.retention()
    assert retention == Retention(Policy(), {}, dt.UTC)
    assert not retention.configured


def test_retention_errors_are_reported_at_once_with_their_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
retention:
  keep_daily: -1
  keep_weekly: yes
  keep_within: 30
  keep_tags: [[], ["", x]]
  keep_everything: true
  timezone: Mars/Olympus
  components:
    db: {keep_hourly: many, timezone: UTC}
""",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = caught.value.problems
    assert any(p.startswith("At 'retention.keep_daily':") and "0 or more" in p for p in problems)
    assert any(p.startswith("At 'retention.keep_weekly':") and "'unlimited'" in p for p in problems)
    assert any(p.startswith("At 'retention.keep_within':") and "2y5m7d3h" in p for p in problems)
    assert any(p.startswith("At 'retention.keep_tags':") and "list of tags" in p for p in problems)
    assert "At 'retention.keep_everything': unknown key" in problems
    assert any(p.startswith("At 'retention.timezone':") and "Mars/Olympus" in p for p in problems)
    assert any(p.startswith("At 'retention.components.db.keep_hourly':") for p in problems)
    assert "At 'retention.components.db.timezone': unknown key" in problems
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("release", "list of tags"),
        ("[2026]", "list of tags"),
        ("[[a, 1]]", "list of tags"),
        ('[["", a]]', "stands alone"),
    ],
)
def test_keep_tags_errors_say_what_is_expected(tmp_path: Path, tags: str, message: str) -> None:
    path = write(tmp_path, f"repository: {{path: repo}}\nretention: {{keep_tags: {tags}}}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("At 'retention.keep_tags':") and message in caught.value.problems[0]


def test_a_policy_for_an_unknown_component_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
repository: {path: repo}
components: {db: {type: postgres, dsn_env: X}}
retention: {keep_daily: 7, components: {dbb: {keep_last: 3}}}
""",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.problems == ["At 'retention.components.dbb': unknown component 'dbb'"]
