"""Supplier callbacks through the real listener: genuine ones settle
orders, duplicates and late ones are harmless, forged and mismatched ones
are refused and change nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from conftest import RunningDaemon, start_daemon, supplier, write_config

from kamen_router.sim.protocol import signed_headers

KEY = "test-key-0123456789"  # the key conftest.supplier() gives every supplier
SKUS = {"mobile-cmcc-100": {}}
SLOW = {"pending_rate": 1.0, "pending_s": 60}  # only a callback settles it in time


async def _daemon(nursery: trio.Nursery, tmp_path: Path, **suppliers: dict[str, Any]) -> RunningDaemon:
    path = write_config(tmp_path, suppliers, skus=SKUS, callbacks={"listen": "127.0.0.1:0"})
    return await start_daemon(nursery, path)


def _body(
    attempt: dict[str, Any], *, status: str = "success", price: str | None = None, qty: int = 1
) -> bytes:
    return json.dumps(
        {
            "order_no": "SIM-X1",
            "merchant_order_no": attempt["attempt_key"],
            "product_id": "P-mobile-cmcc-100",
            "quantity": qty,
            "status": status,
            "unit_price": price or attempt["unit_price"],
            "cards": [],
            "receipt": "SN-CALLBACK-1" if status == "success" else None,
        }
    ).encode()


async def _post(
    daemon: RunningDaemon,
    supplier_name: str,
    body: bytes,
    *,
    key: str = KEY,
    merchant: str | None = None,
    at: float | None = None,
) -> httpx.Response:
    headers = signed_headers(merchant or supplier_name, key, body, time.time() if at is None else at)
    async with httpx.AsyncClient(trust_env=False) as http:
        assert daemon.info.callbacks_url is not None
        return await http.post(
            f"{daemon.info.callbacks_url}/callbacks/{supplier_name}", content=body, headers=headers
        )


async def _pending_order(daemon: RunningDaemon, order_id: str) -> dict[str, Any]:
    response = await daemon.post(
        {"order_id": order_id, "sku": "mobile-cmcc-100", "account": "13800138000", "wait_s": 1}
    )
    order: dict[str, Any] = response.json()
    assert order["state"] == "pending", order
    return order


async def test_a_callback_settles_a_pending_order_and_repeats_are_harmless(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        daemon = await _daemon(nursery, tmp_path, slow=supplier({"mobile-cmcc-100": "98.00"}, simulate=SLOW))
        order = await _pending_order(daemon, "cb1")
        attempt = order["attempts"][0]
        reply = await _post(daemon, "slow", _body(attempt))
        assert (reply.status_code, reply.text) == (200, "ok")
        settled = (await daemon.get("cb1", wait_s=5)).json()
        assert settled["state"] == "delivered"
        assert settled["deliverables"]["receipt"] == "SN-CALLBACK-1"
        for body in (_body(attempt), _body(attempt, status="processing")):  # duplicate, then stale
            reply = await _post(daemon, "slow", body)
            assert (reply.status_code, reply.text) == (200, "ok")
        assert (await daemon.get("cb1")).json() == settled
        metrics = await daemon.scrape()
        assert 'kamen_router_callbacks_total{result="accepted",supplier="slow"} 1.0' in metrics
        assert 'kamen_router_callbacks_total{result="duplicate",supplier="slow"} 2.0' in metrics
        await daemon.stop()


async def test_forged_and_mismatched_callbacks_change_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(30):
        daemon = await _daemon(
            nursery,
            tmp_path,
            slow=supplier({"mobile-cmcc-100": "98.00"}, simulate=SLOW),
            other=supplier({"mobile-cmcc-100": "99.00"}, simulate=SLOW),
        )
        order = await _pending_order(daemon, "cb2")
        attempt = order["attempts"][0]
        assert attempt["supplier"] == "slow"
        forged = {
            "bad signature": await _post(daemon, "slow", _body(attempt), key="not-the-key-0000"),
            # signed by another configured supplier, sent to its own path
            "wrong supplier": await _post(daemon, "other", _body(attempt)),
            "wrong amount": await _post(daemon, "slow", _body(attempt, price="120.00")),
            "wrong quantity": await _post(daemon, "slow", _body(attempt, qty=5)),
            "unknown order": await _post(daemon, "slow", _body({**attempt, "attempt_key": "KR" + "Z" * 30})),
            "replayed": await _post(daemon, "slow", _body(attempt), at=time.time() - 3600),
            "tampered": await _post(daemon, "slow", _body(attempt).replace(b"success", b"failed ")),
        }
        for what, reply in forged.items():
            assert reply.text == "fail", what
        # nothing changed: still pending at the same supplier, one attempt
        now = (await daemon.get("cb2")).json()
        assert now["state"] == "pending"
        assert now["attempts"] == order["attempts"]
        metrics = await daemon.scrape()
        for result in ("rejected", "wrong_supplier", "mismatch", "unknown_attempt", "stale"):
            assert f'result="{result}"' in metrics, result
        assert 'result="accepted"' not in metrics
        # the genuine one still works afterwards
        assert (await _post(daemon, "slow", _body(attempt))).text == "ok"
        assert (await daemon.get("cb2", wait_s=5)).json()["state"] == "delivered"
        await daemon.stop()


async def test_a_failed_callback_fails_over_with_a_new_attempt(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(30):
        daemon = await _daemon(
            nursery,
            tmp_path,
            slow=supplier({"mobile-cmcc-100": "98.00"}, simulate=SLOW),
            other=supplier({"mobile-cmcc-100": "99.00"}),
        )
        order = await _pending_order(daemon, "cb3")
        reply = await _post(daemon, "slow", _body(order["attempts"][0], status="failed"))
        assert reply.text == "ok"
        final = (await daemon.get("cb3", wait_s=10)).json()
        assert final["state"] == "delivered" and final["supplier"] == "other"
        assert [a["outcome"] for a in final["attempts"]] == ["failed", "delivered"]
        await daemon.stop()


async def test_callbacks_from_outside_the_allowlist_are_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        daemon = await _daemon(
            nursery,
            tmp_path,
            slow=supplier(
                {"mobile-cmcc-100": "98.00"}, simulate=SLOW, callback_allow_from=["203.0.113.0/24"]
            ),
        )
        order = await _pending_order(daemon, "cb4")
        reply = await _post(daemon, "slow", _body(order["attempts"][0]))
        assert reply.status_code == 403
        assert (await daemon.get("cb4")).json()["state"] == "pending"
        await daemon.stop()


async def test_real_simulator_callbacks_duplicated_reordered_and_racing_the_reply(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The simulator sends the callbacks itself: some before the submit
    reply, duplicated, with a stale 'processing' after the final one."""
    with trio.fail_after(40):
        faults = {
            "pending_rate": 0.5,
            "pending_s": 0.5,
            "callback_before_reply_rate": 0.5,
            "callback_duplicates": 2,
            "callback_reorder_rate": 1.0,
            "callback_delay_s": [0, 0.2],
            "callback_retry_s": [0.2, 0.5],
        }
        daemon = await _daemon(
            nursery,
            tmp_path,
            noisy=supplier({"mobile-cmcc-100": "98.00"}, simulate=faults),
            other=supplier({"mobile-cmcc-100": "99.00"}),
        )
        replies: list[dict[str, Any]] = []

        async def one(i: int) -> None:
            response = await daemon.post(
                {"order_id": f"r{i}", "sku": "mobile-cmcc-100", "account": "13800138000", "wait_s": 20}
            )
            replies.append(response.json())

        async with trio.open_nursery() as inner:
            for i in range(20):
                inner.start_soon(one, i)
        assert {r["state"] for r in replies} == {"delivered"}
        assert {r["supplier"] for r in replies} == {"noisy"}
        ledger = await daemon.ledger("noisy")
        assert len(ledger) == 20 and all(e["status"] == "success" for e in ledger)
        assert await daemon.ledger("other") == []
        await daemon.stop()


async def _queries(daemon: RunningDaemon) -> float:
    total = 0.0
    for line in (await daemon.scrape()).splitlines():
        if line.startswith("kamen_router_attempts_total{") and 'operation="query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_pending_order_at_a_supplier_that_calls_back_is_queried_sparingly(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """With callbacks on, an attempt PENDING at a supplier that calls back
    is queried at most once per ``orders.callback_wait_s`` (the sim plugin
    alone queries it three times in 5 s); its callback settles it at
    once. With ``callback_wait_s: 0`` the plugin's schedule alone applies."""
    with trio.fail_after(40):
        for wait_s, most, least in ((3, 1, 1), (0, 99, 3)):
            path = write_config(
                tmp_path / f"w{wait_s}",
                {"slow": supplier({"mobile-cmcc-100": "98.00"}, simulate=SLOW)},
                skus=SKUS,
                callbacks={"listen": "127.0.0.1:0"},
                orders={"callback_wait_s": wait_s},
            )
            daemon = await start_daemon(nursery, path)
            order = await _pending_order(daemon, "sparing")
            await trio.sleep(4)
            queried = await _queries(daemon)
            assert least <= queried <= most, (wait_s, queried)
            reply = await _post(daemon, "slow", _body(order["attempts"][0]))
            assert (reply.status_code, reply.text) == (200, "ok")
            settled = (await daemon.get("sparing", wait_s=5)).json()
            assert settled["state"] == "delivered"
            await daemon.stop()
