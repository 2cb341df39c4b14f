"""Structured logs: one line per event, logfmt or JSON, to stderr for
journald.

Events carry fields (``event(log, "attempt", order_id=..., supplier=...)``);
the formatter renders them after the message. A filter scrubs every
configured secret value from every line as a last line of defence, so a
credential that slipped into an exception message still never reaches the
log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

_FIELDS = "kr_fields"


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields``."""
    if logger.isEnabledFor(level):
        # what Logger.log would do, less the search of the stack for the
        # caller (always this function): the dispatcher logs every call
        record = logging.getLogRecordFactory()(
            logger.name, level, __file__, sys._getframe().f_lineno, msg, None, None, "event"
        )
        record.__dict__[_FIELDS] = fields
        logger.handle(record)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, _FIELDS, None)
    return dict(fields) if isinstance(fields, dict) else {}


#: the second last formatted, and its text (one tuple: threads may log at once)
_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    global _second
    second = int(record.created)  # as gmtime takes it: floored, and never negative
    seen, text = _second
    if second != seen:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


#: characters that make a logfmt value need quotes
_NEEDS_QUOTES = re.compile(r'[ ="\\\n\t]')


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=info logger=… msg="…" key=value …``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            parts["error"] = self.formatException(record.exc_info)
        out = []
        for key, value in parts.items():
            # inline rather than a function per value: a line has a dozen
            # values, and every order logs one
            text = value if type(value) is str else "null" if value is None else str(value)
            if text == "" or _NEEDS_QUOTES.search(text):
                text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
            out.append(f"{key}={text}")
        return " ".join(out)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class SecretFilter(logging.Filter):
    """Replaces every known secret value in a record with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()

    def set_secrets(self, values: Iterable[str]) -> None:
        # longest first, so a secret containing another is scrubbed whole;
        # very short values would scrub ordinary words, and are too weak to
        # be worth hiding from the operator's own log anyway
        self.secrets = tuple(sorted({v for v in values if len(v) >= 6}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        fields = getattr(record, _FIELDS, None)
        if not record.exc_info:
            # most lines hold no secret: one search of all their text says so
            texts = [message]
            if isinstance(fields, dict):
                texts += [v for v in fields.values() if isinstance(v, str)]
            text = "\x00".join(texts)
            if not any(secret in text for secret in self.secrets):
                return True
        scrubbed = self._scrub(message)
        fields = _fields(record)
        # fields are rebuilt only when one of them holds a secret
        if any(isinstance(v, str) and self._scrub(v) != v for v in fields.values()):
            fields = {k: self._scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
            record.msg, record.args = scrubbed, None
            setattr(record, _FIELDS, fields)
        elif scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self._scrub(text) != text:
                record.exc_info = None
                record.msg = f"{record.msg} (traceback withheld: it held a secret)"
        return True

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


SECRETS = SecretFilter()


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines in batches, one write for many: a line waits at most
    ``interval_s`` (``flush_due``, called by a timer, and the next line
    see to that), a warning or worse goes out at once with everything
    before it, and so does a batch of ``max_lines``.

    Every write to a pipe wakes its reader (journald), which costs the
    writer far more than the line itself: a daemon that logs every order
    would spend more on those wake-ups than on routing the order. Records
    are formatted when their batch is written, together (their message is
    fixed when they come: a record's arguments may change later)."""

    def __init__(self, stream: Any, interval_s: float = 0.1, max_lines: int = 512) -> None:
        super().__init__(stream)
        self.interval_s = interval_s
        self.max_lines = max_lines
        self._records: list[logging.LogRecord] = []
        self._first_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.args:
            try:
                record.msg, record.args = record.getMessage(), None
            except Exception:
                self.handleError(record)
                return
        now = time.monotonic()
        records = self._records
        if not records:
            self._first_at = now
        records.append(record)
        if (
            record.levelno >= logging.WARNING
            or len(records) >= self.max_lines
            or now - self._first_at >= self.interval_s
        ):
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._records:
                return
            lines = []
            for record in self._records:
                try:
                    lines.append(self.format(record) + self.terminator)
                except Exception:
                    self.handleError(record)
            self._records.clear()
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:
                # as logging does: a broken stderr never breaks the daemon
                # (and there is nowhere left to say so)
                pass

    def flush_due(self) -> None:
        """Write what has waited ``interval_s`` or longer."""
        if self._records and time.monotonic() - self._first_at >= self.interval_s:
            self.flush()


#: how long the daemon's log lines may wait to be written in a batch
BATCH_S = 0.1

_handler: logging.Handler | None = None


def flush_due() -> None:
    """Write the log lines that have waited long enough (see ``setup``)."""
    if isinstance(_handler, BatchingHandler):
        _handler.flush_due()


def flush() -> None:
    """Write every log line still waiting."""
    if _handler is not None:
        _handler.flush()


def setup(level: str = "info", fmt: str = "logfmt", batch_s: float = 0.0) -> None:
    """Configure the root logger: one handler on stderr. With ``batch_s``,
    lines are written in batches (``BatchingHandler``) and the caller
    calls ``flush_due`` every ``batch_s`` or so; logging's own shutdown
    writes what is left at exit."""
    global _handler
    # no line shows the process, thread or multiprocessing name: not
    # looking them up spares every record a system call and two lookups
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stderr, batch_s) if batch_s > 0 else logging.StreamHandler(sys.stderr)
    _handler = handler
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(SECRETS)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # one line per supplier request would drown the router's own events
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
