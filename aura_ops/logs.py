"""Logging, configured once: console lines on a terminal, JSON lines otherwise, and always a
daily JSON file ``<dir>/aura_YYYYMMDD.log``. Every line passes the redaction processor.

Context (``run_id``, ``component``, ``host``, ``step``) is bound with ``bind`` and rides on
every line of the code that runs inside it.

A line is an event dict built as structlog builds it (the call's keys, ``event``, the bound
context, ``level``, ``timestamp``), rendered here: JSON, or on a terminal the columns of
structlog's console renderer (time, level, event, then the other keys sorted). Not structlog
itself: importing it costs about 0.1 s of CPU (it imports its console renderer, rich and
asyncio), more than the rest of a backup with nothing to copy.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, TextIO

from aura_ops.secrets import MASK, mask

_SECRET_KEYS = {"password", "passwd", "secret", "token", "pgpassword", "api_key"}
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

# the bound context: one immutable dict per context (threads start with none, as with structlog)
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("aura_log_context", default={})  # noqa: B039 - never mutated


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
    """Processor (structlog's signature): mask secrets in every value of the event."""
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


# the console renderer's colours (structlog.dev's defaults)
_RESET, _BRIGHT, _DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
_KEY, _VALUE = "\x1b[36m", "\x1b[35m"
_RED, _YELLOW, _GREEN = "\x1b[31m", "\x1b[33m", "\x1b[32m"
_LEVEL_COLOURS = {"critical": _RED, "error": _RED, "warning": _YELLOW, "info": _GREEN, "debug": _GREEN}
_LEVEL_WIDTH = len("exception")  # structlog pads to its longest level name
_EVENT_WIDTH = 30


def _console_value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if set(value) & {" ", "\t", "=", "\r", "\n", '"', "'"} else value
    return repr(value)


def render_console(event: dict[str, Any]) -> str:
    """One coloured line for a terminal: time, level, event, then the other keys sorted
    (the layout of structlog's ``ConsoleRenderer(colors=True)``); an exception's text below it."""
    event = dict(event)
    exception = event.pop("exception", None)
    columns = []
    if "timestamp" in event:
        columns.append(f"{_DIM}{event.pop('timestamp')}{_RESET}")
    if "level" in event:
        level = str(event.pop("level"))
        colour = _LEVEL_COLOURS.get(level, _RED)
        columns.append(f"[{colour}{_BRIGHT}{level:<{_LEVEL_WIDTH}}{_RESET}]")
    if "event" in event:
        columns.append(f"{_BRIGHT}{str(event.pop('event')):<{_EVENT_WIDTH}}{_RESET}")
    columns += [f"{_KEY}{key}{_RESET}={_VALUE}{_console_value(event[key])}{_RESET}" for key in sorted(event)]
    line = " ".join(columns).rstrip(" ")
    return line if exception is None else f"{line}\n{exception}"


class _Sink:
    """Receives the finished event dict; writes it to the console and the daily file."""

    def __init__(self, console: TextIO, pretty: bool, daily: _DailyFile | None, level: int) -> None:
        self._console = console
        self._daily = daily
        self._pretty = pretty
        self.level = level
        self._lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False)
        if self._daily is not None:
            self._daily.write(line)
        text = render_console(event) if self._pretty else line
        with self._lock:  # one write a line: lines from worker threads never interleave
            self._console.write(text + "\n")
            self._console.flush()


_settings: tuple[Path | None, str, TextIO | None, bool | None] = (None, "info", None, None)
_sink: _Sink | None = None
_sink_lock = threading.Lock()


def configure(
    log_dir: Path | None = None,
    level: str = "info",
    console: TextIO | None = None,
    pretty: bool | None = None,
) -> None:
    """Set logging for the whole process (applied on the first log call; later call wins)."""
    global _settings, _sink
    with _sink_lock:
        _settings = (log_dir, level, console, pretty)
        _sink = None


def _current_sink() -> _Sink:
    global _sink
    with _sink_lock:
        if _sink is None:
            log_dir, level, console, pretty = _settings
            stream = console or sys.stderr
            if pretty is None:
                pretty = stream.isatty()
            daily = _DailyFile(log_dir) if log_dir is not None else None
            _sink = _Sink(stream, pretty, daily, _LEVELS.get(level, 20))
        return _sink


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class Logger:
    """``log.info("event.name", key=value, ...)``; the same for debug, warning, error, critical
    (``exception``: an error line with the traceback being handled)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _log(self, level: str, event: str, values: dict[str, Any]) -> None:
        sink = _current_sink()
        if _LEVELS[level] < sink.level:
            return
        line: dict[str, Any] = dict(values)
        line["event"] = event
        for key, value in _context.get().items():
            line.setdefault(key, value)
        line["level"] = level
        line["timestamp"] = _timestamp()
        exc_info = line.pop("exc_info", None)
        if exc_info:
            import traceback

            error = sys.exc_info() if exc_info is True else exc_info
            if isinstance(error, BaseException):
                error = (type(error), error, error.__traceback__)
            if error[0] is not None:
                line["exception"] = "".join(traceback.format_exception(*error))
        sink.write(dict(redact(None, level, line)))

    def debug(self, event: str, **values: Any) -> None:
        self._log("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._log("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._log("warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._log("error", event, values)

    def critical(self, event: str, **values: Any) -> None:
        self._log("critical", event, values)

    def exception(self, event: str, **values: Any) -> None:
        self._log("error", event, {"exc_info": True, **values})


def get(name: str = "aura") -> Logger:
    """Return a logger (it follows ``configure`` calls made after this one)."""
    return Logger(name)


@contextlib.contextmanager
def bind(**context: Any) -> Iterator[None]:
    """Bind context keys (run_id, component, host, step) for the code inside the block."""
    token = _context.set({**_context.get(), **context})
    try:
        yield
    finally:
        _context.reset(token)
