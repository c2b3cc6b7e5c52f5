"""Roles and tablespaces from a snapshot's ``pg_dumpall --globals-only`` script, applied without
changing what the server already has.

The script is pg_dumpall's own fixed output: ``CREATE ROLE`` / ``ALTER ROLE ... WITH`` /
``COMMENT ON ROLE`` / ``ALTER ROLE ... SET`` for each role, ``GRANT role TO member`` for
memberships, ``CREATE TABLESPACE`` and its ``ALTER`` / ``GRANT`` / ``COMMENT``. It is split
statement by statement (quotes and comments respected, psql meta-commands skipped) and each
statement is judged by the object it is about:

- a role that does not exist is created with everything the script says about it (attributes,
  password when the dump holds one, settings, comment); a role that exists is left exactly as it
  is, unless ``overwrite`` (``restore --globals-overwrite``) asks to apply the script to it too;
- a membership is granted when its member is a role created now (or with ``overwrite``);
- a tablespace that does not exist is created when the server can use its location; otherwise
  it is reported, not fatal (its location is a folder on the database server).

Roles and memberships run in one transaction through psycopg (no shell, no psql): a failure
changes nothing and names the role. Statement texts never reach a log or a message: they may
hold password hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aura_ops import logs
from aura_ops.errors import AuraError, first_line

IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
IDENTS = rf"{IDENT}(?:\s*,\s*{IDENT})*"
ROLE_PATTERNS = (
    (re.compile(rf"^CREATE\s+ROLE\s+({IDENT})", re.I | re.S), True),
    (re.compile(rf"^ALTER\s+ROLE\s+({IDENT})\s", re.I | re.S), False),
    (re.compile(rf"^COMMENT\s+ON\s+ROLE\s+({IDENT})\s", re.I | re.S), False),
    (re.compile(rf"^SECURITY\s+LABEL\s+FOR\s+\S+\s+ON\s+ROLE\s+({IDENT})\s", re.I | re.S), False),
)
MEMBERSHIP = re.compile(rf"^GRANT\s+({IDENTS})\s+TO\s+({IDENTS})(?:\s|$)", re.I | re.S)
TABLESPACE_PATTERNS = (
    (re.compile(rf"^CREATE\s+TABLESPACE\s+({IDENT})\s", re.I | re.S), True),
    (re.compile(rf"^ALTER\s+TABLESPACE\s+({IDENT})\s", re.I | re.S), False),
    (re.compile(rf"^COMMENT\s+ON\s+TABLESPACE\s+({IDENT})\s", re.I | re.S), False),
    (re.compile(rf"^(?:GRANT|REVOKE)\s.*?\sON\s+TABLESPACE\s+({IDENT})\s", re.I | re.S), False),
    (re.compile(rf"^SECURITY\s+LABEL\s+FOR\s+\S+\s+ON\s+TABLESPACE\s+({IDENT})\s", re.I | re.S), False),
)
LOCATION = re.compile(r"\sLOCATION\s+'((?:[^']|'')*)'", re.I)


def unquote(ident: str) -> str:
    """A name as pg_dumpall's fmtId wrote it, back to the name itself."""
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident


def _names(text: str) -> tuple[str, ...]:
    return tuple(unquote(match) for match in re.findall(IDENT, text))


def split(script: str) -> list[str]:
    """The SQL statements of a script, without their ``;``: semicolons inside quotes and
    comments do not end a statement; psql meta-command lines (``\\restrict``) are skipped."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(script)
    at_line_start = True
    while i < n:
        char = script[i]
        if at_line_start and not "".join(current).strip() and script[i:].lstrip(" \t").startswith("\\"):
            end = script.find("\n", i)  # a psql meta-command between statements: not SQL
            i = n if end < 0 else end + 1
            continue
        at_line_start = char == "\n"
        if char == "-" and script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end < 0 else end
            continue
        if char in "'\"":
            escapes = char == "'" and i > 0 and script[i - 1] in "eE" and (i < 2 or not script[i - 2].isalnum())
            j = i + 1
            while j < n:
                if escapes and script[j] == "\\":
                    j += 2
                    continue
                if script[j] == char:
                    if j + 1 < n and script[j + 1] == char:
                        j += 2
                        continue
                    break
                j += 1
            current.append(script[i : j + 1])
            i = j + 1
            continue
        if char == ";":
            text = "".join(current).strip()
            if text:
                statements.append(text)
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


@dataclass(frozen=True)
class Statement:
    text: str = field(repr=False)  # may hold a password hash: never printed
    kind: str  # set, role, membership, tablespace, other
    subject: str = ""  # the role or tablespace it is about
    creates: bool = False
    granted: tuple[str, ...] = ()  # membership: the roles granted
    members: tuple[str, ...] = ()  # membership: the roles receiving them
    location: str = ""  # CREATE TABLESPACE: its folder on the server


def classify(text: str) -> Statement:
    if re.match(r"^SET\s", text, re.I):
        return Statement(text, "set")
    for pattern, creates in ROLE_PATTERNS:
        match = pattern.match(text)
        if match:
            return Statement(text, "role", unquote(match.group(1)), creates)
    match = MEMBERSHIP.match(text)
    if match and not re.search(r"\sON\s", text[: match.end()], re.I):
        granted, members = _names(match.group(1)), _names(match.group(2))
        return Statement(text, "membership", members[0], granted=granted, members=members)
    for pattern, creates in TABLESPACE_PATTERNS:
        match = pattern.match(text)
        if match:
            where = LOCATION.search(text) if creates else None
            location = where.group(1).replace("''", "'") if where else ""
            return Statement(text, "tablespace", unquote(match.group(1)), creates, location=location)
    return Statement(text, "other", " ".join(text.split()[:3]))


def parse(script: str) -> list[Statement]:
    return [classify(text) for text in split(script)]


def _ordered(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def plan(statements: list[Statement], roles: set[str], tablespaces: set[str], overwrite: bool) -> dict[str, Any]:
    """Pure: which roles, memberships and tablespaces would be created, overwritten or left,
    given the names the server has now."""
    dumped_roles = _ordered([s.subject for s in statements if s.kind == "role"])
    created = [r for r in dumped_roles if r not in roles]
    existing = [r for r in dumped_roles if r in roles]
    memberships = [s for s in statements if s.kind == "membership"]
    granted = [s for s in memberships if overwrite or all(m in created for m in s.members)]
    dumped_spaces = _ordered([s.subject for s in statements if s.kind == "tablespace"])
    return {
        "roles_created": created,
        "roles_overwritten": existing if overwrite else [],
        "roles_left": [] if overwrite else existing,
        "memberships_granted": [_membership(s) for s in granted],
        "memberships_left": [_membership(s) for s in memberships if s not in granted],
        "tablespaces_created": [t for t in dumped_spaces if t not in tablespaces],
        "tablespaces_overwritten": [t for t in dumped_spaces if t in tablespaces] if overwrite else [],
        "tablespaces_left": [] if overwrite else [t for t in dumped_spaces if t in tablespaces],
        "tablespaces_not_created": [],
        "skipped": _ordered([s.subject for s in statements if s.kind == "other"]),
    }


def _membership(statement: Statement) -> str:
    return f"{', '.join(statement.granted)} -> {', '.join(statement.members)}"


def apply(admin: Any, script: str, overwrite: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Apply the globals ``script`` on ``admin``'s server as the module says; return what was
    created, overwritten, left and not created. ``dry_run``: only say what would be done.
    AuraError (nothing changed) when a role statement fails."""
    statements = parse(script)
    roles = {row[0] for row in admin.execute("SELECT rolname FROM pg_roles").fetchall()}
    spaces = {row[0] for row in admin.execute("SELECT spcname FROM pg_tablespace").fetchall()}
    report = plan(statements, roles, spaces, overwrite)
    if dry_run:
        return {**report, "dry_run": True}
    _apply_roles(admin, statements, set(report["roles_created"]), overwrite, report)
    _apply_tablespaces(admin, statements, set(report["tablespaces_created"]), overwrite, report)
    logs.get().info(
        "postgres.globals_applied",
        **{k: v for k, v in report.items() if v and k.startswith(("roles", "tablespaces"))},
    )
    return report


def _apply_roles(
    admin: Any, statements: list[Statement], created: set[str], overwrite: bool, report: dict[str, Any]
) -> None:
    import psycopg

    granted = set(report["memberships_granted"])
    not_granted: list[dict[str, str]] = []
    with admin.transaction():
        for statement in statements:
            if statement.kind == "role" and (statement.subject in created or (overwrite and not statement.creates)):
                try:
                    admin.execute(statement.text.encode())
                except psycopg.Error as exc:
                    raise AuraError(
                        f"--globals: role {statement.subject}: {first_line(exc)}; no role was created or changed"
                    ) from None
            elif statement.kind == "membership" and _membership(statement) in granted:
                try:
                    with admin.transaction():  # a savepoint: a grantor missing here is reported
                        admin.execute(statement.text.encode())
                except psycopg.Error as exc:
                    not_granted.append({"membership": _membership(statement), "reason": first_line(exc)})
    if not_granted:
        failed = {item["membership"] for item in not_granted}
        report["memberships_granted"] = [m for m in report["memberships_granted"] if m not in failed]
        report["memberships_not_granted"] = not_granted


def _apply_tablespaces(
    admin: Any, statements: list[Statement], missing: set[str], overwrite: bool, report: dict[str, Any]
) -> None:
    """Outside a transaction: PostgreSQL creates tablespaces only there."""
    import psycopg

    failed: dict[str, str] = {}
    for statement in statements:
        if statement.kind != "tablespace" or statement.subject in failed:
            continue
        if statement.subject not in missing and not (overwrite and not statement.creates):
            continue
        try:
            admin.execute(statement.text.encode())
        except psycopg.Error as exc:
            if statement.creates:
                failed[statement.subject] = first_line(exc)
            else:
                logs.get().warning(
                    "postgres.tablespace_property_not_set", tablespace=statement.subject, reason=first_line(exc)
                )
    if failed:
        report["tablespaces_created"] = [t for t in report["tablespaces_created"] if t not in failed]
        report["tablespaces_not_created"] = [{"name": name, "reason": reason} for name, reason in failed.items()]
        for name, reason in failed.items():
            logs.get().warning("postgres.tablespace_not_created", tablespace=name, reason=reason)


def summary(report: dict[str, Any]) -> list[str]:
    """Human lines for the restore's output."""
    verb = "would be " if report.get("dry_run") else ""
    lines = []

    def line(label: str, items: list[str], suffix: str = "") -> None:
        if items:
            lines.append(f"{label}: {', '.join(items)}{suffix}")

    line(f"roles {verb}created", report["roles_created"])
    line(f"roles {verb}overwritten from the snapshot", report["roles_overwritten"])
    line(
        "roles that exist here, left as they were",
        report["roles_left"],
        " (--globals-overwrite would change them to the snapshot's)",
    )
    line(f"memberships {verb}granted", report["memberships_granted"])
    line("memberships left (their member existed already)", report["memberships_left"])
    line(
        "memberships not granted",
        [f"{m['membership']} ({m['reason']})" for m in report.get("memberships_not_granted", [])],
    )
    line(f"tablespaces {verb}created", report["tablespaces_created"])
    line("tablespaces that exist here, left as they were", report["tablespaces_left"])
    line("tablespaces not created", [f"{t['name']} ({t['reason']})" for t in report["tablespaces_not_created"]])
    line("statements not understood, skipped", report["skipped"])
    return lines
