"""Each simulator fault, driven through the real daemon: the ledgers of the
simulators show every order delivered at most once, never submitted to a
second supplier while the first attempt's outcome was unknown, and every
acknowledged order settled."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio
from conftest import supplier

FAULTS: dict[str, dict[str, Any]] = {
    "timeout after accept": {"timeout_rate": 1.0},
    "reset after accept": {"reset_rate": 1.0},
    "5xx after accept": {"error_after_accept_rate": 1.0},
    "unconfirmed (5000)": {"unknown_rate": 1.0},
    "duplicate-order reply": {"duplicate_reply_rate": 1.0},
    "not found for a while": {
        "not_found_rate": 1.0,
        "not_found_s": 1.5,
        "pending_rate": 1.0,
        "pending_s": 0.3,
    },
    "pending": {"pending_rate": 1.0, "pending_s": 0.5},
    "failed after accept": {"fail_rate": 1.0},
    "callbacks delayed, duplicated, reordered": {
        "pending_rate": 1.0,
        "pending_s": 0.3,
        "callback_delay_s": [0.1, 0.6],
        "callback_duplicates": 2,
        "callback_reorder_rate": 1.0,
    },
    "callback before the reply": {"callback_before_reply_rate": 1.0},
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_through_the_daemon(make_daemon: Any, fault: str) -> None:
    with trio.fail_after(45):
        daemon = await make_daemon(
            {
                "faulty": supplier({"mobile-cmcc-100": "98.00"}, simulate=FAULTS[fault], timeout_s=0.5),
                "backup": supplier({"mobile-cmcc-100": "99.00"}),
            },
            skus={"mobile-cmcc-100": {}},
            callbacks={"listen": "127.0.0.1:0"},
        )
        replies: dict[str, dict[str, Any]] = {}

        async def one(i: int) -> None:
            response = await daemon.post(
                {"order_id": f"f{i}", "sku": "mobile-cmcc-100", "account": "13800138000", "wait_s": 25}
            )
            assert response.status_code in (200, 202)
            replies[f"f{i}"] = response.json()

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(one, i)
        for order_id, reply in list(replies.items()):
            if reply["state"] not in ("delivered", "failed", "attention"):
                replies[order_id] = (await daemon.get(order_id, wait_s=15)).json()
        assert {r["state"] for r in replies.values()} == {"delivered"}, replies

        key_to_order = {a["attempt_key"]: oid for oid, r in replies.items() for a in r["attempts"]}
        delivered: dict[str, list[str]] = defaultdict(list)
        submitted: dict[str, list[str]] = defaultdict(list)
        for name in ("faulty", "backup"):
            for entry in await daemon.ledger(name):
                order_id = key_to_order[entry["merchant_order_no"]]
                submitted[order_id].append(name)
                if entry["status"] == "success":
                    delivered[order_id].append(name)
        for order_id, reply in replies.items():
            assert len(delivered[order_id]) == 1, (fault, order_id, delivered[order_id])
            assert delivered[order_id] == [reply["supplier"]]
            attempts = reply["attempts"]
            # a second supplier only after the first attempt definitively ended
            for earlier in attempts[:-1]:
                assert earlier["state"] in ("rejected", "failed"), (fault, attempts)
            if fault != "failed after accept":
                # every fault except a definitive failure keeps the order at
                # the supplier that took it
                assert submitted[order_id] == ["faulty"], (fault, order_id, submitted[order_id])
