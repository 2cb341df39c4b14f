"""Orders the router cannot settle go to attention, and a human settles them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import trio
from conftest import start_daemon, supplier, write_config

from kamen_router.config import load_config
from kamen_router.daemon import serve_simulated_supplier
from kamen_router.plugin import load_plugins

SKUS = {"mobile-cmcc-100": {}}


async def _vanishing_supplier(nursery: trio.Nursery, tmp_path: Path) -> tuple[str, trio.CancelScope]:
    """A simulated supplier that takes orders but whose reply never comes
    (timeout after accept), and that can then be made to vanish."""
    path = write_config(
        tmp_path / "sim",
        {"gone": supplier({"mobile-cmcc-100": "98.00"}, simulate={"timeout_rate": 1.0})},
        skus=SKUS,
    )
    config = load_config(path)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve_simulated_supplier(
                load_plugins(None)["sim"], config.suppliers["gone"], task_status=task_status
            )

    url: str = await nursery.start(run)
    return url, scope


async def test_unreconcilable_attempt_goes_to_attention_and_is_resolved(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(40):
        url, sim_scope = await _vanishing_supplier(nursery, tmp_path)
        path = write_config(
            tmp_path / "d",
            {
                "gone": supplier({"mobile-cmcc-100": "98.00"}, endpoint=url, timeout_s=0.3),
                "other": supplier({"mobile-cmcc-100": "99.00"}),
            },
            skus=SKUS,
            orders={"reconcile_limit_s": 2},
        )
        daemon = await start_daemon(nursery, path)
        response = await daemon.post({"order_id": "a1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert response.status_code == 202
        # the supplier took the order, then vanished: the answer can never be known
        await trio.sleep(0.5)
        sim_scope.cancel()
        final = (await daemon.get("a1", wait_s=15)).json()
        assert final["state"] == "attention"
        assert final["error"]["code"] == "reconcile_limit"
        # never failed over while the first attempt's outcome was unknown
        assert [a["supplier"] for a in final["attempts"]] == ["gone"]
        assert await daemon.ledger("other") == []

        listed = (await daemon.http.get("/v1/orders", params={"state": "attention"})).json()
        assert [o["order_id"] for o in listed["orders"]] == ["a1"]

        bad = await daemon.http.post("/v1/orders/a1/resolve", json={"by": "ops"})
        assert bad.status_code == 400
        resolved = await daemon.http.post(
            "/v1/orders/a1/resolve", json={"by": "li.wei", "delivered": {"receipt": "CMCC-2026-1"}}
        )
        assert resolved.status_code == 200, resolved.text
        body: dict[str, Any] = resolved.json()
        assert body["state"] == "delivered"
        assert body["deliverables"]["receipt"] == "CMCC-2026-1"
        assert body["resolution"]["by"] == "li.wei"
        again = await daemon.http.post("/v1/orders/a1/resolve", json={"by": "ops", "failed": "oops"})
        assert again.status_code == 409
        assert (await daemon.get("a1")).json()["state"] == "delivered"
        assert (await daemon.http.get("/v1/orders", params={"state": "attention"})).json()["orders"] == []
        await daemon.stop()
    with sqlite3.connect(tmp_path / "d/var/journal.sqlite3") as db:
        state, resolution = db.execute("SELECT state, resolution FROM orders WHERE order_id='a1'").fetchone()
    assert state == "delivered" and "li.wei" in resolution
