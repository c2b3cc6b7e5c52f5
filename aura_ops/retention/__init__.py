"""Retention: which snapshots a prune keeps (restic's ``forget`` policy, in a configured time
zone) and the rules no policy overrides. Pure: it knows nothing of where snapshots are stored.
"""

from aura_ops.retention.decision import NEVER_DELETE, Decision, Plan, Reason, Rule, SnapshotInfo, decide
from aura_ops.retention.policy import UNLIMITED, Duration, Policy, Retention, parse_duration, time_zone

__all__ = [
    "NEVER_DELETE",
    "UNLIMITED",
    "Decision",
    "Duration",
    "Plan",
    "Policy",
    "Reason",
    "Retention",
    "Rule",
    "SnapshotInfo",
    "decide",
    "parse_duration",
    "time_zone",
]
