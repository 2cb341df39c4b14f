"""Intake: what a new order costs the journal, and repeats of orders the
daemon no longer holds in memory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
from conftest import supplier

ORDER = {"order_id": "i1", "sku": "mobile-cmcc-100", "account": "13800138000"}
SKUS = {"mobile-cmcc-100": {"name": "China Mobile 100"}}


def _commits(daemon: Any) -> int:
    stats = daemon.info.dispatcher.journal.statistics()
    return int(stats.commits)


async def test_a_waiting_order_is_journaled_with_its_first_attempt(make_daemon: Callable[..., Any]) -> None:
    """Order and first attempt share the intake commit; the outcome is the
    second and last."""
    with trio.fail_after(20):
        d = await make_daemon({"a": supplier({"mobile-cmcc-100": "98.00"})}, skus=SKUS)
        before = _commits(d)
        reply = await d.order(ORDER)
        assert reply["state"] == "delivered", reply
        assert _commits(d) - before == 2
        stored = await d.info.dispatcher.journal.load("i1")
        assert stored is not None
        assert stored.state.value == "delivered"
        assert [(a.seq, a.supplier, a.state.value) for a in stored.attempts] == [(1, "a", "delivered")]
        assert d.info.dispatcher.router.limiters["a"].in_flight == 0


async def test_an_order_that_does_not_wait_is_received_first(make_daemon: Callable[..., Any]) -> None:
    with trio.fail_after(20):
        d = await make_daemon({"a": supplier({"mobile-cmcc-100": "98.00"})}, skus=SKUS)
        response = await d.post(ORDER)
        assert response.status_code == 202
        assert (response.json()["state"], response.json()["attempts"]) == ("received", [])
        final = (await d.get("i1", wait_s=10)).json()
        assert final["state"] == "delivered"
        assert len(await d.ledger("a")) == 1


async def test_a_stored_order_gone_from_memory_is_answered_from_the_journal(
    make_daemon: Callable[..., Any],
) -> None:
    """A repeat of an order the journal holds but memory no longer does gets
    the stored order (409 with another body), submits nothing, and leaves
    the supplier's limits as they were."""
    with trio.fail_after(20):
        d = await make_daemon({"a": supplier({"mobile-cmcc-100": "98.00"})}, skus=SKUS)
        first = await d.order(ORDER)
        assert first["state"] == "delivered"
        dispatcher = d.info.dispatcher
        dispatcher._recent.clear()
        again = await d.post({**ORDER, "wait_s": 5})
        assert again.status_code == 200
        assert again.json() == first
        other = await d.post({**ORDER, "account": "13900139000", "wait_s": 5})
        assert other.status_code == 409
        assert len(await d.ledger("a")) == 1
        assert dispatcher.router.limiters["a"].in_flight == 0
        assert dispatcher.open_count == 0


async def test_at_the_open_limit_a_stored_order_is_still_answered(make_daemon: Callable[..., Any]) -> None:
    with trio.fail_after(20):
        d = await make_daemon(
            {
                "a": supplier({"mobile-cmcc-100": "98.00"}),
                "slow": supplier({"steam-50": "48.00"}, simulate={"latency_ms": [4000, 4000]}, timeout_s=10),
            },
            orders={"max_open": 1},
        )
        done = await d.order(ORDER)
        d.info.dispatcher._recent.clear()
        # the only open slot, held while its submit is on the wire
        held = await d.post({"order_id": "held", "sku": "steam-50"})
        assert held.status_code == 202
        assert d.info.dispatcher.open_count == 1
        again = await d.post(ORDER)
        assert again.status_code == 200
        assert again.json() == done
        refused = await d.post({**ORDER, "order_id": "i2"})
        assert refused.status_code == 503
        assert d.info.dispatcher.open_count == 1


async def test_each_submit_is_logged_once_with_its_outcome(
    make_daemon: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """One line per submit, with its outcome; a failover logs every submit,
    in order."""
    caplog.set_level(logging.INFO)
    with trio.fail_after(20):
        d = await make_daemon(
            {
                "cheap": supplier({"mobile-cmcc-100": "97.00"}, simulate={"stock": 0}),
                "dear": supplier({"mobile-cmcc-100": "99.00"}),
            },
            skus=SKUS,
        )
        reply = await d.order(ORDER)
        assert (reply["state"], reply["supplier"]) == ("delivered", "dear"), reply
        submits = [
            r.kr_fields  # type: ignore[attr-defined]
            for r in caplog.records
            if r.name == "kamen_router.orders" and r.getMessage() == "submit"
        ]
        assert [(f["supplier"], f["outcome"], f["reason"]) for f in submits] == [
            ("cheap", "rejected", "out_of_stock"),
            ("dear", "delivered", "-"),
        ]
        for fields, attempt in zip(submits, reply["attempts"], strict=True):
            assert fields["order_id"] == "i1"
            assert fields["attempt_key"] == attempt["attempt_key"]
            assert fields["account"] == "*******8000"
            assert fields["latency_ms"] == attempt["latency_ms"]
