"""A retention policy as plain values: which snapshots a prune keeps, the way restic's ``forget``
reads its ``--keep-*`` options.

Nothing here knows where snapshots are stored: a local repository and an off-site copy are
pruned by the same policy. The configuration (``config.RetentionConfig``) validates the YAML and
builds these values; :mod:`aura_ops.retention.decision` applies them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

UNLIMITED = -1  # a count meaning "every bucket" (restic's `unlimited`)
DURATION_PART = re.compile(r"(\d+)([ymdh])")
DURATION_HELP = "a duration like 2y5m7d3h (years, months, days, hours; each unit at most once)"
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Z"})


@dataclass(frozen=True)
class Duration:
    """restic's ``--keep-within`` duration: calendar years, months and days, then elapsed hours."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{count}{unit}" for count, unit in parts if count) or "0h"

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, moment: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
        """The instant this duration before ``moment``: years, months and days subtracted on the
        calendar of ``zone`` (the wall-clock time kept; a day that does not exist rolls over, as
        Go's ``AddDate`` does: 31 March less a month is 3 March), then hours of elapsed time."""
        local = moment.astimezone(zone)
        month_index = local.year * 12 + local.month - 1 - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        try:
            day = dt.date(year, month + 1, 1) + dt.timedelta(days=local.day - 1 - self.days)
            wall = dt.datetime.combine(day, local.time().replace(fold=0), tzinfo=zone)
            return wall.astimezone(dt.UTC) - dt.timedelta(hours=self.hours)
        except (ValueError, OverflowError):  # before year 1: every snapshot is within
            return dt.datetime.min.replace(tzinfo=dt.UTC)


def parse_duration(text: str) -> Duration:
    """``2y5m7d3h`` (``m`` is months, as in restic) as a Duration; ValueError when it is not one
    or is zero."""
    compact = text.strip() if isinstance(text, str) else ""
    parts = DURATION_PART.findall(compact)
    units = [unit for _, unit in parts]
    if not parts or "".join(n + u for n, u in parts) != compact or len(set(units)) != len(units):
        raise ValueError(f"expected {DURATION_HELP}, got {text!r}")
    counts = {unit: int(number) for number, unit in parts}
    duration = Duration(*(counts.get(unit, 0) for unit in "ymdh"))
    if duration.zero:
        raise ValueError(f"a duration of zero keeps nothing: leave keep_within out, or give {DURATION_HELP}")
    return duration


def time_zone(name: str) -> dt.tzinfo:
    """The IANA time zone ``name`` (``UTC`` needs no time zone database); ValueError naming it
    when it is unknown."""
    if name in UTC_NAMES:
        return dt.UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}; give an IANA name such as UTC or Europe/Berlin") from None


@dataclass(frozen=True)
class Policy:
    """restic's ``forget`` options. A count is how many buckets (hours, days, ISO weeks, months,
    years that have snapshots) keep their newest snapshot; 0 is off, UNLIMITED keeps every
    bucket. ``tags`` are alternatives, each a set of tags a snapshot must all carry (``""``
    alone: a snapshot without tags). A policy with nothing set keeps everything."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None
    tags: tuple[frozenset[str], ...] = ()

    @property
    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and self.within is None and not self.tags

    def __str__(self) -> str:
        """One line for humans: ``keep 3 last, 7 daily, within 2d, tags release``."""
        if self.empty:
            return "keep everything (no keep_* rule)"
        rules = []
        for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            count = getattr(self, name)
            if count:
                rules.append(f"{'all' if count == UNLIMITED else count} {'latest' if name == 'last' else name}")
        if self.within is not None:
            rules.append(f"within {self.within} of the newest")
        rules.extend(f"{tag_text(wanted)}" for wanted in self.tags)
        return "keep " + ", ".join(rules)


def tag_text(wanted: frozenset[str]) -> str:
    """How a keep_tags alternative reads in a reason: ``tag release``, ``tags audit+q4``, ``untagged``."""
    if wanted == frozenset({""}):
        return "untagged"
    names = sorted(wanted)
    return f"tag {names[0]}" if len(names) == 1 else "tags " + "+".join(names)


def tags_match(wanted: frozenset[str], tags: frozenset[str]) -> bool:
    """restic's ``HasTags``: every wanted tag is present; ``""`` alone matches an untagged snapshot."""
    if wanted == frozenset({""}):
        return not tags
    return wanted <= tags


@dataclass(frozen=True)
class Retention:
    """The policies of a configuration: ``default`` for every component without its own entry
    in ``components`` (an entry replaces the default entirely), and the time zone whose calendar
    the hourly to yearly buckets and keep_within follow."""

    default: Policy = Policy()
    components: Mapping[str, Policy] = field(default_factory=lambda: MappingProxyType({}))
    zone: dt.tzinfo = dt.UTC

    def policy_for(self, component: str) -> Policy:
        return self.components.get(component, self.default)

    @property
    def configured(self) -> bool:
        """Whether any policy would delete anything at all (an empty one keeps everything)."""
        return not self.default.empty or any(not p.empty for p in self.components.values())

    def describe(self) -> list[str]:
        """One line per policy, for a dry-run header: ``every component: keep 7 daily`` ..."""
        zone = getattr(self.zone, "key", None) or str(self.zone)
        lines = [f"{'other components' if self.components else 'every component'}: {self.default}"]
        lines += [f"{name}: {policy}" for name, policy in sorted(self.components.items())]
        return [*lines, f"time zone: {zone}"]
