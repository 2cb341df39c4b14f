"""Structured log lines: what ``event`` writes, the timestamps, the secret
scrubber's quick path."""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import pytest

from kamen_router.logs import JsonFormatter, LogfmtFormatter, SecretFilter, event


def _logger(
    name: str, formatter: logging.Formatter, secrets: list[str]
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    scrubber = SecretFilter()
    scrubber.set_secrets(secrets)
    handler.addFilter(scrubber)
    log = logging.getLogger(f"kamen_router.test_logs.{name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, stream


def _at(monkeypatch: pytest.MonkeyPatch, when: float) -> None:
    monkeypatch.setattr(time, "time", lambda: when)
    monkeypatch.setattr(time, "time_ns", lambda: int(when * 1e9))


def test_an_event_line(monkeypatch: pytest.MonkeyPatch) -> None:
    log, out = _logger("line", LogfmtFormatter(), ["s3cret-api-key"])
    _at(monkeypatch, 1764057600.25)
    event(
        log,
        "submit",
        order_id="o-1",
        supplier="sup a",
        reason="",
        detail='say "hi"\\now',
        latency_ms=1.5,
        refund=None,
        token="key=s3cret-api-key",
    )
    event(log, "hidden", logging.DEBUG, order_id="o-2")
    assert out.getvalue() == (
        "ts=2025-11-25T08:00:00.250Z level=info logger=kamen_router.test_logs.line msg=submit"
        ' order_id=o-1 supplier="sup a" reason="" detail="say \\"hi\\"\\\\now" latency_ms=1.5'
        ' refund=null token="key=***"\n'
    )


def test_timestamps_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    log, out = _logger("ts", LogfmtFormatter(), [])
    for when in (1764057599.875, 1764057601.0, 1764057601.5, 1764057600.125, 1764057659.75):
        _at(monkeypatch, when)
        event(log, "tick")
    stamps = [line.split(" ", 1)[0] for line in out.getvalue().splitlines()]
    assert stamps == [
        "ts=2025-11-25T07:59:59.875Z",
        "ts=2025-11-25T08:00:01.000Z",
        "ts=2025-11-25T08:00:01.500Z",
        "ts=2025-11-25T08:00:00.125Z",
        "ts=2025-11-25T08:00:59.750Z",
    ]


def test_a_line_without_secrets_is_left_alone() -> None:
    scrubber = SecretFilter()
    scrubber.set_secrets(["s3cret-api-key"])
    fields = {"order_id": "o-1", "n": 3}
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)
    record.kr_fields = fields
    assert scrubber.filter(record)
    assert (record.msg, record.args, record.kr_fields) == ("plain %s", ("text",), fields)
    record.kr_fields = {"order_id": "o-1", "note": "was s3cret-api-key"}
    assert scrubber.filter(record)
    assert record.kr_fields == {"order_id": "o-1", "note": "was ***"}
    assert record.getMessage() == "plain text"


def test_json_lines_scrub_too(monkeypatch: pytest.MonkeyPatch) -> None:
    log, out = _logger("json", JsonFormatter(), ["s3cret-api-key"])
    _at(monkeypatch, 1764057600.0)
    event(log, "reload refused", logging.ERROR, problem="bad key s3cret-api-key", line=3)
    assert out.getvalue() == (
        '{"ts": "2025-11-25T08:00:00.000Z", "level": "error", "logger": "kamen_router.test_logs.json",'
        ' "msg": "reload refused", "problem": "bad key ***", "line": 3}\n'
    )


class _CountingStream(io.StringIO):
    """A stream that counts the writes it is given (each a system call on a
    real pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _batching(name: str, interval_s: float, max_lines: int = 512) -> tuple[logging.Logger, Any]:
    from kamen_router.logs import BatchingHandler

    stream = _CountingStream()
    handler = BatchingHandler(stream, interval_s, max_lines)
    handler.setFormatter(LogfmtFormatter())
    log = logging.getLogger(f"kamen_router.test_logs.batch.{name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, stream


def test_batched_lines_wait_for_their_interval_then_go_in_one_write() -> None:
    log, stream = _batching("interval", 0.2)
    for i in range(20):
        event(log, "submit", order_id=f"o{i}")
    assert stream.getvalue() == ""  # held: the interval has not passed
    handler = log.handlers[0]
    handler.flush_due()  # type: ignore[attr-defined]
    assert stream.getvalue() == ""
    time.sleep(0.25)
    handler.flush_due()  # type: ignore[attr-defined]
    lines = stream.getvalue().splitlines()
    assert [line.split("order_id=")[1] for line in lines] == [f"o{i}" for i in range(20)]
    assert stream.writes == 1
    # a line that comes after the interval takes the waiting ones with it
    event(log, "submit", order_id="late")
    time.sleep(0.25)
    event(log, "submit", order_id="later")
    assert stream.getvalue().splitlines()[-2:][0].endswith("order_id=late")
    assert stream.writes == 2


def test_a_warning_goes_out_at_once_after_the_lines_before_it() -> None:
    log, stream = _batching("warning", 60)
    event(log, "submit", order_id="a")
    event(log, "submit", order_id="b")
    event(log, "supplier failing", logging.WARNING, supplier="north")
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["level=info", "level=info", "level=warning"]
    assert stream.writes == 1


def test_a_full_batch_goes_out_without_waiting() -> None:
    log, stream = _batching("full", 60, max_lines=10)
    for i in range(25):
        event(log, "submit", order_id=f"o{i:02d}")
    assert stream.writes == 2
    assert len(stream.getvalue().splitlines()) == 20
    log.handlers[0].flush()
    assert len(stream.getvalue().splitlines()) == 25


def test_a_batched_line_says_what_was_true_when_it_was_logged() -> None:
    """Lines are formatted when their batch is written; a message's
    arguments are read when it is logged."""
    log, stream = _batching("args", 60)
    state = ["pending"]
    log.info("order o1 is %s", state)
    state[0] = "delivered"
    log.handlers[0].flush()
    assert "order o1 is ['pending']" in stream.getvalue()
