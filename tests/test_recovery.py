"""A start with many open orders: every one is reconciled, the supplier is
not flooded with queries, and new orders go through meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import ledger, start_daemon, supplier, write_config

from kamen_router import dispatch
from kamen_router.config import load_config
from kamen_router.daemon import serve_simulated_supplier
from kamen_router.journal import Journal
from kamen_router.orders import Order
from kamen_router.plugin import load_plugins

SKU = "mobile-cmcc-100"
OPEN = 60
SLOTS = 4


async def _peak_requests(base_url: str) -> int:
    async with httpx.AsyncClient(trust_env=False) as http:
        reply = await http.get(f"{base_url}/ledger")
        peak: int = reply.json()["peak_requests"]
        return peak


async def test_recovered_orders_are_queried_a_few_at_a_time(nursery: trio.Nursery, tmp_path: Path) -> None:
    """60 orders are pending at a supplier when the daemon stops. The next
    daemon queries them all (they were due at once) but never more than the
    supplier's ``max_in_flight`` at a time, delivers each exactly once, and
    takes a new order for another supplier while it does."""
    with trio.fail_after(60):
        # the supplier answers every request after 50 ms and keeps each
        # order processing for 3 s: long enough to outlive the first daemon
        limits = {"rate_per_s": 1000, "max_in_flight": SLOTS, "timeout_s": 2}
        url = await _pending_orders(
            nursery,
            tmp_path,
            OPEN,
            simulate={"pending_rate": 1.0, "pending_s": 3, "latency_ms": [50, 50]},
            limits={**limits, "max_in_flight": OPEN},
            together=True,
        )
        # the submits overlapped (so the check below can fail)
        assert await _peak_requests(url) > SLOTS

        # the next daemon allows the supplier SLOTS requests at a time, and
        # routes new orders to the other supplier (cheaper now), so every
        # request the slow one sees is a query
        path = write_config(
            tmp_path / "d",
            {
                "slow": supplier({SKU: "98.20"}, endpoint=url, limits=limits),
                "other": supplier({SKU: "97.00"}),
            },
            skus={SKU: {}},
        )
        second = await start_daemon(nursery, path)
        fresh = await second.order({"order_id": "new-1", "sku": SKU, "account": "13800138000", "wait_s": 10})
        assert (fresh["state"], fresh["supplier"]) == ("delivered", "other")

        async def settled(i: int, out: dict[str, Any]) -> None:
            out[f"r{i}"] = (await second.get(f"r{i}", wait_s=30)).json()

        final: dict[str, Any] = {}
        async with trio.open_nursery() as waiting:
            for i in range(OPEN):
                waiting.start_soon(settled, i, final)
        assert {o["state"] for o in final.values()} == {"delivered"}
        assert {o["supplier"] for o in final.values()} == {"slow"}
        peak = await _peak_requests(url)  # (before ledger(): a read starts it afresh)
        assert peak <= SLOTS, peak
        taken = await ledger(url)
        assert sorted(o["merchant_order_no"] for o in taken) == sorted(
            o["attempts"][0]["attempt_key"] for o in final.values()
        )
        assert all(o["submits"] == 1 for o in taken)
        await second.stop()


async def test_ready_before_every_open_order_is_read_and_nothing_sees_two_copies(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 orders are pending when the daemon stops. The next daemon reads
    them 4 at a time from a slow journal and is ready after the first 4;
    a status request, a repeated POST and the wait for each unread order
    wait for it to be read and answer with the one copy its task drives, so
    every order is submitted once and delivered once, and a new order goes
    through while the rest are still being read."""
    monkeypatch.setattr(dispatch, "RECOVERY_LOAD", 4)
    load_many = Journal.load_many

    async def slow_load_many(self: Journal, ids: Sequence[str]) -> list[Order]:
        await trio.sleep(0.3)  # a slow disk: ~2 s for all of them
        return await load_many(self, ids)

    with trio.fail_after(60):
        url = await _pending_orders(nursery, tmp_path, 30, simulate={"pending_rate": 1.0, "pending_s": 2})
        path = write_config(
            tmp_path / "d",
            {"slow": supplier({SKU: "98.20"}, endpoint=url), "other": supplier({SKU: "97.00"})},
            skus={SKU: {}},
        )
        monkeypatch.setattr(Journal, "load_many", slow_load_many)
        second = await start_daemon(nursery, path)
        dispatcher = second.info.dispatcher
        assert dispatcher.open_count == 30
        assert len(dispatcher._unread) == 26  # ready with only the oldest read
        fresh = await second.order({"order_id": "new-1", "sku": SKU, "account": "13800138000", "wait_s": 10})
        assert (fresh["state"], fresh["supplier"]) == ("delivered", "other")
        assert dispatcher._unread  # still reading

        last = await second.get("r29")  # not read yet: waits for it
        assert last.status_code in (200, 202) and last.json()["state"] in ("pending", "delivered")
        assert not dispatcher._unread
        repeat = await second.post({"order_id": "r28", "sku": SKU, "account": "13800138000", "wait_s": 30})
        assert repeat.status_code == 200 and repeat.json()["state"] == "delivered"

        final = {f"r{i}": (await second.get(f"r{i}", wait_s=30)).json() for i in range(30)}
        assert {o["state"] for o in final.values()} == {"delivered"}
        assert {len(o["attempts"]) for o in final.values()} == {1}
        taken = await ledger(url)
        assert sorted(o["merchant_order_no"] for o in taken) == sorted(
            o["attempts"][0]["attempt_key"] for o in final.values()
        )
        assert all(o["submits"] == 1 for o in taken)
        await second.stop()


async def _pending_orders(
    nursery: trio.Nursery,
    tmp_path: Path,
    count: int,
    *,
    simulate: dict[str, Any],
    limits: dict[str, Any] | None = None,
    together: bool = False,
) -> str:
    """``count`` orders r0, r1, ... pending at a supplier ``slow`` (simulated
    here, so that it outlives the daemon that took them, which is stopped;
    ``together``: posted all at once); returns the supplier's URL."""
    sim_cfg = load_config(
        write_config(tmp_path / "sim", {"slow": supplier({SKU: "98.20"}, simulate=simulate)}, skus={SKU: {}})
    )
    url: str = await nursery.start(
        serve_simulated_supplier, load_plugins(None)["sim"], sim_cfg.suppliers["slow"]
    )
    extra = {} if limits is None else {"limits": limits}
    path = write_config(
        tmp_path / "d",
        {"slow": supplier({SKU: "98.20"}, endpoint=url, **extra), "other": supplier({SKU: "98.90"})},
        skus={SKU: {}},
    )
    first = await start_daemon(nursery, path)

    async def post(i: int) -> None:
        reply = await first.post({"order_id": f"r{i}", "sku": SKU, "account": "13800138000", "wait_s": 0})
        assert reply.status_code == 202, reply.text

    async with trio.open_nursery() as posting:
        for i in range(count):
            if together:
                posting.start_soon(post, i)
            else:
                await post(i)
    for _ in range(200):  # every order submitted and answered PENDING
        states = [(await first.get(f"r{i}")).json()["state"] for i in range(count)]
        if all(state == "pending" for state in states):
            break
        await trio.sleep(0.05)
    assert all(state == "pending" for state in states), states
    await first.stop()
    return url
