"""Intake: what a new order costs the journal, and repeats of orders the
daemon no longer holds in memory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
from conftest import supplier, until

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

        def submits_logged() -> list[Any]:
            return [
                r.kr_fields  # type: ignore[attr-defined]
                for r in caplog.records
                if r.name == "kamen_router.orders" and r.getMessage() == "submit"
            ]

        # the line of the submit that settled the order follows the reply
        await until(lambda: len(submits_logged()) >= 2, 5, "the second submit's line", step=0.01)
        await trio.sleep(0.05)  # and no third comes
        submits = submits_logged()
        assert [(f["supplier"], f["outcome"], f["reason"]) for f in submits] == [
            ("cheap", "rejected", "out_of_stock"),
            ("dear", "delivered", "-"),
        ]
        for fields, attempt in zip(submits, reply["attempts"], strict=True):
            assert fields["order_id"] == "i1"
            assert fields["attempt_key"] == attempt["attempt_key"]
            assert fields["account"] == "*******8000"
            assert fields["latency_ms"] == attempt["latency_ms"]


@pytest.mark.parametrize(
    ("order_id", "seq", "key"),
    [
        ("i1", 1, "KRJTM3OZZNP67OR62R7MPAJH3JAN0001"),
        ("c-t0-b3-99", 2, "KRWRIBDEFPHUPGLTJWY3IEIGPZBQ0002"),
        ("A" * 64, 9999, "KR2U7NU6TDPSM4Y75VM3MW5H5BBG9999"),
        ("order:2026-12-03.7_x", 12, "KRNEPFL5JNWQTAGLKUOUAZCOKCWP0012"),
    ],
)
def test_attempt_keys_are_the_ones_suppliers_already_hold(order_id: str, seq: int, key: str) -> None:
    """The merchant order number of an attempt never changes between
    versions: a supplier asked about an attempt made before an upgrade must
    be asked under the number it was given. (Values from the first release:
    "KR", 26 characters of the base32 of the order id's sha256, the attempt's
    number in four digits.)"""
    import base64
    import hashlib

    from kamen_router.orders import attempt_key

    assert attempt_key(order_id, seq) == key
    digest = base64.b32encode(hashlib.sha256(order_id.encode()).digest()).decode()
    assert key == f"KR{digest[:26]}{seq:04d}"


def test_reply_timestamps_read_as_datetime_writes_them() -> None:
    """``created_at``/``updated_at``: UTC with milliseconds, cut from the
    microseconds the way ``datetime`` rounds and cuts them, across second
    boundaries and at the edges of rounding."""
    import datetime
    import random

    from kamen_router.orders import _iso

    rng = random.Random(7)
    stamps = [0.0, 1.0e9, 1764792465.0785, 1764792465.9999995, 1764792465.0000005, 4102444799.999]
    stamps += [rng.uniform(0, 4.1e9) for _ in range(5000)]
    edges = [0.9995, 0.9999996, 4e-7, 0.5]
    stamps += [rng.randint(0, 4_100_000_000) + rng.choice(edges) for _ in range(5000)]
    for ts in stamps:
        expected = datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")
        assert _iso(ts) == expected.replace("+00:00", "Z"), ts


async def test_a_waiting_post_is_answered_only_with_what_is_on_disk(make_daemon: Callable[..., Any]) -> None:
    """An order that fails at once (no supplier under its ceiling) is settled
    in memory before its commit; on a slow disk, the waiting POST must still
    answer only once the failure is journaled, never ahead of it."""
    with trio.fail_after(30):
        d = await make_daemon({"a": supplier({"mobile-cmcc-100": "98.00"})}, skus=SKUS)
        journal = d.info.dispatcher.journal
        save = journal.save

        async def slow_disk(order: Any, then: Any = None) -> None:
            await trio.sleep(0.2)  # a commit that takes its time
            await save(order, then)

        journal.save = slow_disk
        for i in range(8):
            reply = await d.post({**ORDER, "order_id": f"cap{i}", "max_price": "50", "wait_s": 5})
            stored = await journal.load(f"cap{i}")
            assert stored is not None
            assert (reply.status_code, reply.json()["state"]) == (200, "failed"), reply.json()
            assert stored.state.value == "failed", "the reply went out before the commit"
