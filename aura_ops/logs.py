"""Logging, configured once: console lines on a terminal, JSON lines otherwise, and always a
daily JSON file ``<dir>/aura_YYYYMMDD.log``. Every line passes the redaction processor.

Context (``run_id``, ``component``, ``host``, ``step``) is bound with ``bind`` and rides on
every line of the code that runs inside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, TextIO

from aura_ops.secrets import MASK, mask

# structlog (and rich, which it imports) costs ~200 ms: it is imported and configured on the
# first log call, so `aura-ops --help` and commands that never log stay fast.
_settings: tuple[Path | None, str, TextIO | None, bool | None] = (None, "info", None, None)
_applied = False

_SECRET_KEYS = {"password", "passwd", "secret", "token", "pgpassword", "api_key"}
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in _SECRET_KEYS or key.lower().endswith(("_password", "_token", "_secret")):
        return MASK if value else value
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every value of the event."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


class _DailyFile:
    """Appends JSON lines to ``aura_YYYYMMDD.log`` in a folder, switching files at midnight UTC."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._day = ""
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        with self._lock:
            if day != self._day or self._file is None:
                self._open(day)
            assert self._file is not None
            self._file.write(line + "\n")
            self._file.flush()

    def _open(self, day: str) -> None:
        if self._file:
            self._file.close()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"aura_{day}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # a file name that is not UTF-8 reaches a log line as escaped text, never as an error
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
        self._day = day


class _TeeLogger:
    """Receives the finished event dict; writes it to the console and the daily file."""

    def __init__(self, console: TextIO, pretty: bool, daily: _DailyFile | None) -> None:
        import structlog

        self._console = console
        self._daily = daily
        self._pretty = structlog.dev.ConsoleRenderer(colors=True) if pretty else None
        self._lock = threading.Lock()

    def msg(self, **event: Any) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False)
        if self._daily is not None:
            self._daily.write(line)
        text = self._pretty(None, "", dict(event)) if self._pretty else line
        with self._lock:  # one write a line: lines from worker threads never interleave
            self._console.write(text + "\n")
            self._console.flush()

    debug = info = warning = error = critical = exception = log = msg


def configure(
    log_dir: Path | None = None,
    level: str = "info",
    console: TextIO | None = None,
    pretty: bool | None = None,
) -> None:
    """Set logging for the whole process (applied on the first log call; later call wins)."""
    global _settings, _applied
    _settings = (log_dir, level, console, pretty)
    _applied = False


def _apply() -> None:
    global _applied
    import structlog

    log_dir, level, console, pretty = _settings
    _applied = True
    stream = console or sys.stderr
    if pretty is None:
        pretty = stream.isatty()
    daily = _DailyFile(log_dir) if log_dir is not None else None
    tee = _TeeLogger(stream, pretty, daily)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            lambda _, __, event: event,  # hand the dict itself to _TeeLogger.msg
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 20)),
        logger_factory=lambda *_: tee,
        cache_logger_on_first_use=False,
    )


def get(name: str = "aura") -> Any:
    """Return a bound logger."""
    import structlog

    if not _applied:
        _apply()
    return structlog.get_logger(name)


@contextlib.contextmanager
def bind(**context: Any) -> Iterator[None]:
    """Bind context keys (run_id, component, host, step) for the code inside the block."""
    import structlog

    if not _applied:
        _apply()
    with structlog.contextvars.bound_contextvars(**context):
        yield
