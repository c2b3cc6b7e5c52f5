"""Secrets: resolved only from the environment or files, and masked wherever text leaves us.

Every secret value that aura-ops resolves is registered here; ``mask`` replaces registered
values and anything that looks like a credential (DSN passwords, ``password=...``, tokens).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from aura_ops.errors import ConfigError

MASK = "***"

_lock = threading.Lock()
_known: set[str] = set()

_PATTERNS = (
    # scheme://user:password@host
    (re.compile(r"(\w+://[^/\s:@]*:)([^@\s/]+)(@)"), rf"\1{MASK}\3"),
    # password=secret / PGPASSWORD=secret in conninfo strings and env dumps
    (
        re.compile(
            r"(?i)\b((?:pg)?password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s'\",;&]+)"
        ),
        rf"\1\2{MASK}",
    ),
)

SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|credential|dsn)")


def register(value: str | None) -> None:
    """Remember a secret value so that ``mask`` hides it everywhere from now on."""
    if value and len(value) >= 3:
        with _lock:
            _known.add(value)


def mask(text: str) -> str:
    """Return ``text`` with every registered secret and credential-looking part masked."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def from_env(name: str, what: str) -> str:
    """Read a secret from environment variable ``name``; raise ConfigError naming ``what``."""
    value = os.environ.get(name)
    if value is None or value == "":
        raise ConfigError(f"{what}: environment variable {name} is not set")
    register(value)
    return value


def from_file(path: str | Path, what: str) -> str:
    """Read a secret from a file (first line, stripped); raise ConfigError naming ``what``."""
    file = Path(path).expanduser()
    try:
        value = file.read_text().splitlines()[0].strip() if file.stat().st_size else ""
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {file}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what}: secret file {file} is empty")
    register(value)
    return value
