"""The daemon end to end: orders in over the real Unix socket, routed to
simulated suppliers over real HTTP, journaled in a real SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import trio
from conftest import ledger, start_daemon, supplier, write_config

from kamen_router.config import load_config
from kamen_router.daemon import serve_simulated_supplier
from kamen_router.plugin import load_plugins

CHEAP, MID, DEAR = "98.20", "98.90", "99.60"


async def raw_exchange(socket: Path, body: bytes) -> bytes:
    """POST ``body`` over a raw connection, as curl would, and return what
    comes back; the server may answer before the body is all sent."""
    stream = await trio.open_unix_socket(str(socket))
    async with stream:
        head = (
            b"POST /v1/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(head + body)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
        return reply


async def sold_out_cheap(make_daemon: Any, **faults: dict[str, Any]) -> Any:
    """A daemon whose cheapest supplier has just sold its last unit, after
    the catalog last looked: the next order there is refused out_of_stock."""
    daemon = await make_daemon(three(cheap={"stock": 1}, **faults))
    for _ in range(200):  # the catalog read at start-up, bounded
        suppliers = (await daemon.http.get("/v1/suppliers")).json()["suppliers"]
        cheap = next(s for s in suppliers if s["name"] == "cheap")
        if cheap["offers"]["mobile-cmcc-100"]["catalog_price"] is not None:
            break
        await trio.sleep(0.02)
    last = await daemon.order({"order_id": "last-unit", "sku": "mobile-cmcc-100", "account": "13800138000"})
    assert last["supplier"] == "cheap"
    return daemon


def three(**faults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "cheap": supplier({"mobile-cmcc-100": CHEAP, "steam-50": 47.9}, simulate=faults.get("cheap")),
        "mid": supplier({"mobile-cmcc-100": MID, "steam-50": 48.5}, simulate=faults.get("mid")),
        "dear": supplier({"mobile-cmcc-100": DEAR}, simulate=faults.get("dear")),
    }


async def test_cheapest_supplier_delivers(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three())
        reply = await daemon.order({"order_id": "t1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "delivered"
        assert reply["supplier"] == "cheap"
        assert reply["unit_price"] == CHEAP
        assert reply["deliverables"]["receipt"]
        assert [a["supplier"] for a in reply["attempts"]] == ["cheap"]
        assert len(await daemon.ledger("cheap")) == 1
        assert await daemon.ledger("mid") == []


async def test_card_product_delivers_cards(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three())
        reply = await daemon.order({"order_id": "c1", "sku": "steam-50", "quantity": 3})
        assert reply["state"] == "delivered"
        cards = reply["deliverables"]["cards"]
        assert len(cards) == 3
        assert all(c["number"] and c["password"] for c in cards)


async def test_rejected_fails_over_to_next_cheapest(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await sold_out_cheap(make_daemon)
        reply = await daemon.order({"order_id": "f1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "delivered"
        assert reply["supplier"] == "mid"
        assert [(a["supplier"], a["outcome"], a["reason"]) for a in reply["attempts"]] == [
            ("cheap", "rejected", "out_of_stock"),
            ("mid", "delivered", None),
        ]
        assert reply["attempts"][0]["attempt_key"] != reply["attempts"][1]["attempt_key"]


async def test_failed_fails_over_with_a_new_attempt(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three(cheap={"fail_rate": 1.0}))
        reply = await daemon.order({"order_id": "f2", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "delivered"
        assert [a["outcome"] for a in reply["attempts"]] == ["failed", "delivered"]
        cheap = await daemon.ledger("cheap")
        assert [o["status"] for o in cheap] == ["failed"]


async def test_every_supplier_failing_fails_the_order(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three(cheap={"fail_rate": 1.0}, mid={"stock": 0}, dear={"balance": 1}))
        # the first catalog and balance refresh run beside the first orders:
        # wait for them to land, as the check below is about what they show
        for _ in range(200):
            route = (await daemon.http.get("/v1/route", params={"sku": "mobile-cmcc-100"})).json()
            if len(route["excluded"]) == 2:
                break
            await trio.sleep(0.02)
        reply = await daemon.order({"order_id": "f3", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "failed"
        assert reply["error"]["code"] == "suppliers_exhausted"
        # the catalog showed mid out of stock and the balance refresh showed
        # dear nearly empty, so neither was even tried
        assert [a["reason"] for a in reply["attempts"]] == ["failed"]
        route = (await daemon.http.get("/v1/route", params={"sku": "mobile-cmcc-100"})).json()
        reasons = {e["supplier"]: e["reason"] for e in route["excluded"]}
        assert reasons == {"mid": "out_of_stock", "dear": "balance_low"}


async def test_price_ceiling_skips_dearer_suppliers(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await sold_out_cheap(make_daemon)
        # cheap is out of stock; mid and dear are above the ceiling
        reply = await daemon.order(
            {"order_id": "p1", "sku": "mobile-cmcc-100", "account": "13800138000", "max_price": "98.50"}
        )
        assert reply["state"] == "failed"
        assert [a["supplier"] for a in reply["attempts"]] == ["cheap"]
        assert await daemon.ledger("mid") == [] and await daemon.ledger("dear") == []
        below_all = await daemon.order(
            {"order_id": "p2", "sku": "mobile-cmcc-100", "account": "13800138000", "max_price": 90}
        )
        assert below_all["state"] == "failed"
        assert below_all["error"]["code"] == "no_supplier"
        assert below_all["attempts"] == []


async def test_invalid_account_fails_at_once_without_failover(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three())
        reply = await daemon.order({"order_id": "i1", "sku": "mobile-cmcc-100", "account": "invalid-0000"})
        assert reply["state"] == "failed"
        assert reply["error"]["code"] == "invalid_account"
        assert [a["supplier"] for a in reply["attempts"]] == ["cheap"]
        assert await daemon.ledger("mid") == []


async def test_unknown_outcome_never_fails_over(make_daemon: Any) -> None:
    """The cheapest supplier takes the order but answers 5000 (query to
    confirm): the router must query it, not try another supplier."""
    with trio.fail_after(30):
        daemon = await make_daemon(three(cheap={"unknown_rate": 1.0}))
        reply = await daemon.order({"order_id": "u1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "delivered"
        assert reply["supplier"] == "cheap"
        assert len(reply["attempts"]) == 1
        assert await daemon.ledger("mid") == []


async def test_timeout_after_accept_is_reconciled_by_query(make_daemon: Any) -> None:
    with trio.fail_after(30):
        suppliers = three(cheap={"timeout_rate": 1.0})
        suppliers["cheap"]["limits"]["timeout_s"] = 0.3
        daemon = await make_daemon(suppliers)
        reply = await daemon.order({"order_id": "to1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "delivered"
        assert reply["supplier"] == "cheap"
        assert await daemon.ledger("mid") == []
        assert len(await daemon.ledger("cheap")) == 1


async def test_pending_is_followed_to_delivery(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three(cheap={"pending_rate": 1.0, "pending_s": 0.5}))
        response = await daemon.post({"order_id": "pd1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert response.status_code == 202
        assert response.json()["state"] in ("received", "routing", "submitted", "pending")
        final = await daemon.get("pd1", wait_s=20)
        assert final.status_code == 200
        assert final.json()["state"] == "delivered"


async def test_unreachable_supplier_is_retried_then_skipped(make_daemon: Any, tmp_path: Path) -> None:
    with trio.fail_after(30):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()  # nothing listens there now
        suppliers = three()
        suppliers["cheap"] = supplier({"mobile-cmcc-100": CHEAP}, endpoint=f"http://127.0.0.1:{port}")
        daemon = await make_daemon(suppliers)
        reply = await daemon.order({"order_id": "n1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        assert reply["state"] == "delivered"
        assert [(a["supplier"], a["reason"]) for a in reply["attempts"]] == [
            ("cheap", "unreachable"),
            ("mid", None),
        ]


async def test_same_order_id_is_idempotent_and_conflicts_on_a_new_body(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three())
        body = {"order_id": "d1", "sku": "mobile-cmcc-100", "account": "13800138000"}
        first = await daemon.order(body)
        second = await daemon.order(body)
        assert first == second
        again = await daemon.post({**body, "wait_s": 0})
        assert again.status_code == 200 and again.json() == first
        conflict = await daemon.post({**body, "account": "13900000000"})
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "conflict"
        assert len(await daemon.ledger("cheap")) == 1


async def test_concurrent_duplicates_make_one_order(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three())
        body = {"order_id": "d2", "sku": "mobile-cmcc-100", "account": "13800138000", "wait_s": 10}
        replies: list[Any] = []

        async def post() -> None:
            replies.append(await daemon.post(body))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(post)
        assert {r.status_code for r in replies} == {200}
        assert len({r.text for r in replies}) == 1
        assert len(await daemon.ledger("cheap")) == 1


async def test_bad_input_is_refused_and_changes_nothing(make_daemon: Any, tmp_path: Path) -> None:
    with trio.fail_after(30):
        daemon = await make_daemon(three())
        cases = [
            (b"{not json", 400, "malformed_json"),
            (b"[1, 2]", 400, "invalid_order"),
            ({"order_id": "b1", "sku": "nope"}, 400, "unknown_sku"),
            ({"order_id": "b1", "sku": "mobile-cmcc-100", "colour": "red"}, 400, "invalid_order"),
            ({"order_id": "b1", "sku": "mobile-cmcc-100", "quantity": "2"}, 400, "invalid_order"),
            ({"order_id": "b1", "sku": "mobile-cmcc-100", "quantity": 0}, 400, "invalid_order"),
            ({"order_id": "b1", "sku": "mobile-cmcc-100", "max_price": -1}, 400, "invalid_order"),
            ({"order_id": "b 1", "sku": "mobile-cmcc-100"}, 400, "invalid_order"),
            ({"sku": "mobile-cmcc-100"}, 400, "invalid_order"),
            (b"{" + b'"a":' * 10 + b"}", 400, "malformed_json"),
        ]
        for body, status, code in cases:
            response = await daemon.post(body)
            assert response.status_code == status, (body, response.text)
            assert response.json()["error"]["code"] == code
        huge = b'{"order_id":"b2","sku":"mobile-cmcc-100","account":"' + b"1" * (2 << 20) + b'"}'
        head = await raw_exchange(daemon.info.socket, huge)
        assert head.startswith(b"HTTP/1.1 413 "), head[:100]
        assert (await daemon.get("b1")).status_code == 404
        assert (await daemon.get("b2")).status_code == 404
        # the daemon still serves
        assert (await daemon.order({"order_id": "b3", "sku": "mobile-cmcc-100", "account": "1"}))[
            "state"
        ] == "delivered"
    with sqlite3.connect(tmp_path / "var/journal.sqlite3") as db:
        assert [r[0] for r in db.execute("SELECT order_id FROM orders")] == ["b3"]


async def test_metrics_count_orders_and_latency(make_daemon: Any) -> None:
    with trio.fail_after(30):
        daemon = await sold_out_cheap(make_daemon)
        await daemon.order({"order_id": "m1", "sku": "mobile-cmcc-100", "account": "13800138000"})
        await daemon.order(
            {"order_id": "m2", "sku": "mobile-cmcc-100", "account": "13800138000", "max_price": 1}
        )
        text = await daemon.scrape()
        assert 'kamen_router_orders_total{state="delivered"} 2.0' in text
        assert 'kamen_router_orders_total{state="failed"} 1.0' in text
        assert (
            'kamen_router_supplier_request_duration_seconds_count{operation="submit",supplier="mid"} 1.0'
            in text
        )
        assert (
            'kamen_router_attempts_total{operation="submit",outcome="rejected",supplier="cheap"} 1.0' in text
        )
        assert "m1" not in text and "13800138000" not in text


async def test_order_survives_a_daemon_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The daemon stops while the supplier is still processing the order;
    the next daemon reconciles it by query and delivers, with no second
    submission anywhere."""
    with trio.fail_after(40):
        sim_cfg_path = write_config(
            tmp_path / "sim",
            {"slow": supplier({"mobile-cmcc-100": CHEAP}, simulate={"pending_rate": 1.0, "pending_s": 2})},
            skus={"mobile-cmcc-100": {}},
        )
        sim_cfg = load_config(sim_cfg_path)
        plugins = load_plugins(None)
        url = await nursery.start(serve_simulated_supplier, plugins["sim"], sim_cfg.suppliers["slow"])
        path = write_config(
            tmp_path / "d",
            {
                "slow": supplier({"mobile-cmcc-100": CHEAP}, endpoint=url),
                "other": supplier({"mobile-cmcc-100": MID}),
            },
            skus={"mobile-cmcc-100": {}},
        )
        first = await start_daemon(nursery, path)
        response = await first.post(
            {"order_id": "r1", "sku": "mobile-cmcc-100", "account": "13800138000", "wait_s": 0.5}
        )
        assert response.status_code == 202
        assert response.json()["state"] == "pending"
        other_url = first.info.simulators["other"]
        await first.stop()

        second = await start_daemon(nursery, path)
        final = await second.get("r1", wait_s=20)
        assert final.json()["state"] == "delivered"
        assert final.json()["supplier"] == "slow"
        assert len(await ledger(url)) == 1
        assert await second.ledger("other") == []
        assert other_url  # the first daemon's simulator is gone with it
        await second.stop()


async def test_received_order_resumes_routing_after_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    """An order journaled as received (the daemon died before routing it) is
    routed by the next start."""
    with trio.fail_after(30):
        from kamen_router.journal import open_journal
        from kamen_router.orders import Order, OrderRequest

        path = write_config(tmp_path, three())
        config = load_config(path)
        journal = await open_journal(config.journal.path)
        await journal.create(
            Order.receive(
                OrderRequest("rr1", "mobile-cmcc-100", account="13800138000"),
                time.time(),
            )
        )
        await journal.close()
        daemon = await start_daemon(nursery, path)
        final = await daemon.get("rr1", wait_s=20)
        assert final.json()["state"] == "delivered"
        await daemon.stop()
