"""Secrets: resolved only from the environment or files, and masked wherever text leaves us.

Every secret the configuration names is registered when it is loaded (``register_config``),
secret playbook parameters before their run starts, and any value resolved later on the way
(``from_env``, ``from_file``). ``mask`` replaces whole occurrences of registered values, of any
length, and anything that looks like a credential (DSN passwords, ``password=...``, tokens).
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aura_ops.errors import ConfigError

MASK = "***"

_lock = threading.Lock()
_known: set[str] = set()
_compiled: re.Pattern[str] | None = None

_PATTERNS = (
    # scheme://user:password@host
    (re.compile(r"(\w+://[^/\s:@]*:)(\S*)(@[^\s@]*)"), rf"\1{MASK}\3"),  # up to the last @: a password may hold / and @
    # password=secret / PGPASSWORD=secret in conninfo strings and env dumps
    (
        re.compile(
            r"(?i)\b((?:pg)?password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s'\",;&]+)"
        ),
        rf"\1\2{MASK}",
    ),
)

# conninfo keys whose values are secrets (libpq): a DSN's password parts
_DSN_SECRETS = ("password", "sslpassword")


def register(value: str | None) -> None:
    """Remember a secret value so that ``mask`` hides it everywhere from now on (any length)."""
    global _compiled
    if value:
        with _lock:
            if value not in _known:
                _known.add(value)
                _compiled = None


def registered() -> set[str]:
    """The registered values (for tests)."""
    with _lock:
        return set(_known)


def forget() -> None:
    """Forget every registered value (for tests)."""
    global _compiled
    with _lock:
        _known.clear()
        _compiled = None


def _pattern() -> re.Pattern[str] | None:
    """One alternation of every registered value, longest first. A value is masked only as a
    whole: where it begins (ends) with a letter, digit or underscore, the character before
    (after) it must not be one, so ``abc`` is masked in ``pw=abc.`` but not in ``abcdef``."""
    global _compiled
    with _lock:
        if _compiled is None and _known:
            parts = []
            for value in sorted(_known, key=len, reverse=True):
                before = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
                after = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
                parts.append(before + re.escape(value) + after)
            _compiled = re.compile("|".join(parts))
        return _compiled


def mask(text: str) -> str:
    """Return ``text`` with every registered secret and credential-looking part masked."""
    if not text:
        return text
    pattern = _pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for credential, replacement in _PATTERNS:
        text = credential.sub(replacement, text)
    return text


def mask_values(value: Any, _seen: dict[str, str] | None = None) -> Any:
    """``value`` with every string inside it (dict keys and values, list items) masked (each
    distinct string once: a report's rows repeat their keys and many of their values)."""
    seen = {} if _seen is None else _seen
    if isinstance(value, str):
        found = seen.get(value)
        if found is None:
            found = seen[value] = mask(value)
        return found
    if isinstance(value, dict):
        return {mask_values(k, seen): mask_values(v, seen) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_values(v, seen) for v in value]
    return value


def from_env(name: str, what: str) -> str:
    """Read a secret from environment variable ``name``; raise ConfigError naming ``what``."""
    value = os.environ.get(name)
    if value is None or value == "":
        raise ConfigError(f"{what}: environment variable {name} is not set")
    register(value)
    return value


def _read_file(path: str | Path) -> str:
    file = Path(path).expanduser()
    return file.read_text().splitlines()[0].strip() if file.stat().st_size else ""


def from_file(path: str | Path, what: str) -> str:
    """Read a secret from a file (first line, stripped); raise ConfigError naming ``what``."""
    file = Path(path).expanduser()
    try:
        value = _read_file(file)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {file}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what}: secret file {file} is empty")
    register(value)
    return value


def register_dsn(dsn: str | None) -> None:
    """Register the password parts of a PostgreSQL DSN (URL or ``key=value`` form), as written
    and percent-decoded."""
    if not dsn:
        return
    # URL form: the password runs from the first ':' of the user part to the LAST '@' (one left
    # unencoded may hold '/' or '@', and a parser then shows its pieces: register those too)
    for match in re.finditer(r"://[^/\s:@]*:(\S*)@[^\s@]*", dsn):
        password = match.group(1).split("?", 1)[0]
        for value in (password, urllib.parse.unquote(password)):
            register(value)
            for piece in re.split(r"[/@]", value):
                if len(piece) >= 3:
                    register(piece)
    if "=" in dsn:
        try:
            from psycopg.conninfo import conninfo_to_dict

            params = conninfo_to_dict(dsn)
        except Exception:  # noqa: BLE001 - a DSN that cannot be parsed fails where it is used
            return
        for key in _DSN_SECRETS:
            register(str(params.get(key) or ""))


def register_config(data: Any) -> None:
    """Register every secret a configuration names, before anything runs: the value of each
    ``*_env`` variable and the first line of each ``*_file`` (a DSN's password part too), and
    the password of a ``dsn``. A missing variable or unreadable file is skipped here: it fails
    where it is used."""
    for key, value in _items(data):
        if not isinstance(value, str | Path) or not str(value):
            continue
        if key.endswith("_env"):
            resolved = os.environ.get(str(value)) or ""
            register(resolved)
            if "dsn" in key:
                register_dsn(resolved)
        elif key.endswith("_file"):
            try:
                register(_read_file(value))
            except (OSError, UnicodeDecodeError):
                continue
        elif key == "dsn":
            register_dsn(str(value))


def _items(data: Any) -> Iterable[tuple[str, Any]]:
    """Every (key, value) of a nested structure of dicts, lists and pydantic models."""
    if hasattr(data, "model_dump"):
        data = data.model_dump()
    if isinstance(data, dict):
        for key, value in data.items():
            yield str(key), value
            yield from _items(value)
    elif isinstance(data, list | tuple):
        for item in data:
            yield from _items(item)
