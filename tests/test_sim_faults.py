"""The simulator's faults and callbacks, seen from the SimPlugin side: every
fault a ``simulate:`` knob promises, over real loopback HTTP, with callbacks
caught by a small receiver that verifies them with ``SimPlugin.parse_callback``."""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from kamen_router.config import Limits, Offer, Secret, Simulate, SupplierConfig, read_supplier
from kamen_router.errors import Problem, SupplierUnreachable
from kamen_router.http import HttpServer, Request, Response, bound_port, open_tcp_listener
from kamen_router.money import dumps_json
from kamen_router.outcome import Deliverables, Delivered, Failed, NotFound, Pending, Unknown
from kamen_router.plugin import (
    Callback,
    CallbackRejected,
    CallbackReply,
    SubmitRequest,
    SupplierContext,
    validate_plugin,
)
from kamen_router.sim import protocol
from kamen_router.sim.plugin import SimPlugin
from kamen_router.sim.server import SimSupplier, serve_simulator

API_KEY = "sim-faults-key-8d41c07b"
TOPUP, TOPUP_PID, TOPUP_PRICE = "mobile-cmcc-100", "P100", Decimal("99.20")
CARD, CARD_PID, CARD_PRICE = "steam-50", "C50", Decimal("48.50")
PHONE = "13800138000"
#: transport errors that mean "nothing was sent" (``plugin.send`` turns them
#: into SupplierUnreachable, which lets the router fail over)
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def make_supplier(
    *, name: str = "acme", api_key: str = API_KEY, timeout_s: float = 5.0, **simulate: Any
) -> SupplierConfig:
    sim: dict[str, Any] = {"latency_ms": (0.0, 2.0), "seed": 7, "callback_retry_s": (0.05, 0.1)}
    sim.update(simulate)
    return SupplierConfig(
        name=name,
        file=Path(f"{name}.yaml"),
        plugin="sim",
        enabled=True,
        endpoint=None,
        credentials={"api_key": Secret(api_key)},
        limits=Limits(timeout_s=timeout_s),
        offers={
            TOPUP: Offer(TOPUP, TOPUP_PID, TOPUP_PRICE),
            CARD: Offer(CARD, CARD_PID, CARD_PRICE),
        },
        simulate=Simulate(**sim),
    )


def order(key: str = "att-1", *, quantity: int = 1, card: bool = False) -> SubmitRequest:
    return SubmitRequest(
        attempt_key=key,
        order_id=f"order-{key}",
        sku=CARD if card else TOPUP,
        product_id=CARD_PID if card else TOPUP_PID,
        quantity=quantity,
        unit_price=CARD_PRICE if card else TOPUP_PRICE,
        max_price=None,
        account=None if card else PHONE,
    )


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class Receiver:
    """A callback listener: verifies with a SimPlugin, records, answers."""

    url: str
    plugin: SimPlugin | None = None
    got: list[Callback] = attrs.Factory(list)
    #: trio time of each accepted callback's arrival
    arrivals: list[float] = attrs.Factory(list)
    rejected: list[str] = attrs.Factory(list)
    #: scripted answers for the next callbacks (True: ok), then ok
    answers: list[bool] = attrs.Factory(list)
    arrived: trio.Event = attrs.Factory(trio.Event)

    async def handle(self, request: Request) -> Response:
        assert self.plugin is not None
        try:
            callback = self.plugin.parse_callback(request)
        except CallbackRejected as exc:
            self.rejected.append(exc.reason)
            reply = self.plugin.callback_reply(False)
        else:
            self.got.append(callback)
            self.arrivals.append(trio.current_time())
            self.arrived.set()
            reply = self.plugin.callback_reply(self.answers.pop(0) if self.answers else True)
        return Response(reply.status, reply.body, reply.content_type)

    async def wait_for(self, count: int) -> list[Callback]:
        while len(self.got) < count:
            await self.arrived.wait()
            self.arrived = trio.Event()
        return self.got


@attrs.define
class Rig:
    sim: SimSupplier
    plugin: SimPlugin
    url: str
    http: httpx.AsyncClient
    receiver: Receiver

    async def ledger(self) -> list[dict[str, Any]]:
        response = await self.http.get(self.url + "/ledger")
        assert response.status_code == 200
        orders: list[dict[str, Any]] = response.json()["orders"]
        return orders

    async def entry_once_acked(self, acked: int) -> dict[str, Any]:
        """The only ledger entry, once the simulator has counted ``acked``
        acknowledgements (it counts one when it has read the receiver's
        answer, a moment after the receiver has seen the callback)."""
        for _ in range(100):
            [entry] = await self.ledger()
            if entry["callbacks_acked"] >= acked:
                break
            await trio.sleep(0.02)
        return entry

    async def post(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        body = dumps_json(payload)
        headers = protocol.signed_headers(self.sim.supplier.name, API_KEY, body, time.time())
        return await self.http.post(self.url + path, content=body, headers=headers)


Start = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def start(nursery: trio.Nursery, http: httpx.AsyncClient) -> Start:
    """A simulator, a callback receiver, and a plugin bound to both.
    ``callbacks=False`` sends no notify_url; other keyword arguments go to
    SimSupplier."""

    async def start(supplier: SupplierConfig, *, callbacks: bool = True, **kwargs: Any) -> Rig:
        listener = await open_tcp_listener("127.0.0.1", 0)
        receiver = Receiver(f"http://127.0.0.1:{bound_port(listener)}/callbacks/{supplier.name}")
        await nursery.start(HttpServer(receiver.handle, name="receiver").serve, [listener])
        sim = SimSupplier(supplier, **kwargs)
        url = await nursery.start(functools.partial(serve_simulator, supplier, handler=sim))
        context = SupplierContext(
            supplier=supplier, endpoint=url, http=http, callback_url=receiver.url if callbacks else None
        )
        receiver.plugin = SimPlugin(context)
        return Rig(sim, receiver.plugin, url, http, receiver)

    return start


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------ reply faults


async def test_reset_is_a_transport_error_not_unreachable_and_the_order_was_taken(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(reset_rate=1.0), callbacks=False)
        # a warm keep-alive connection must not make the client resend the POST
        assert await rig.plugin.balance() == Decimal(100000)
        with pytest.raises(httpx.TransportError) as caught:
            await rig.plugin.submit(order())
        # a reset (or, where the platform closes in order, a disconnect)
        assert isinstance(caught.value, httpx.ReadError | httpx.RemoteProtocolError)
        assert not isinstance(caught.value, NOT_SENT)
        assert not isinstance(caught.value, SupplierUnreachable)
        [entry] = await rig.ledger()
        assert entry["status"] == "success" and entry["submits"] == 1
        assert isinstance(await rig.plugin.query(order()), Delivered)
        assert rig.sim.balance == Decimal(100000) - TOPUP_PRICE


async def test_error_after_accept_is_unknown_with_a_non_json_body(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(error_after_accept_rate=1.0), callbacks=False)
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Unknown) and outcome.detail in ("HTTP 502", "HTTP 503")
        raw = await rig.post(
            "/order", {"merchant_order_no": "raw", "product_id": TOPUP_PID, "quantity": 1, "account": PHONE}
        )
        assert raw.status_code in (502, 503)
        assert raw.headers["content-type"].startswith("text/html")
        with pytest.raises(ValueError):
            raw.json()
        ledger = await rig.ledger()
        assert [e["merchant_order_no"] for e in ledger] == ["att-1", "raw"]
        assert all(e["status"] == "success" for e in ledger)
        assert isinstance(await rig.plugin.query(order()), Delivered)


async def test_error_after_accept_answers_both_gateway_statuses(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(error_after_accept_rate=1.0), callbacks=False)
        details = set()
        for i in range(12):
            outcome = await rig.plugin.submit(order(f"att-{i}"))
            assert isinstance(outcome, Unknown)
            details.add(outcome.detail)
        assert details == {"HTTP 502", "HTTP 503"}
        assert len(await rig.ledger()) == 12


async def test_duplicate_reply_is_unknown_and_the_order_exists_once(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(duplicate_reply_rate=1.0, balance=Decimal(1000)), callbacks=False)
        assert await rig.plugin.submit(order()) == Unknown("duplicate order number")
        [entry] = await rig.ledger()
        assert entry["merchant_order_no"] == "att-1" and entry["status"] == "success"
        assert rig.sim.balance == Decimal(1000) - TOPUP_PRICE
        # the router resubmits nothing, but if it did: still one order, charged once
        assert await rig.plugin.submit(order()) == Unknown("duplicate order number")
        [entry] = await rig.ledger()
        assert entry["submits"] == 2
        assert rig.sim.balance == Decimal(1000) - TOPUP_PRICE
        assert isinstance(await rig.plugin.query(order()), Delivered)


async def test_not_found_window_then_delivered(start: Start) -> None:
    with trio.fail_after(10):
        clock = ManualClock()
        rig = await start(make_supplier(not_found_rate=1.0, not_found_s=30), clock=clock, callbacks=False)
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        assert isinstance(await rig.plugin.query(order()), NotFound)
        clock.now = 29.9
        assert isinstance(await rig.plugin.query(order()), NotFound)
        # the ledger and a resubmission see the truth all along
        [entry] = await rig.ledger()
        assert entry["status"] == "success"
        assert await rig.plugin.submit(order()) == Unknown("duplicate order number")
        clock.now = 30.0
        assert isinstance(await rig.plugin.query(order()), Delivered)
        assert len(await rig.ledger()) == 1


async def test_not_found_combines_with_a_pending_fate(start: Start) -> None:
    with trio.fail_after(10):
        clock = ManualClock()
        supplier = make_supplier(not_found_rate=1.0, not_found_s=5, pending_rate=1.0, pending_s=10)
        rig = await start(supplier, clock=clock, callbacks=False)
        assert isinstance(await rig.plugin.submit(order()), Pending)
        assert isinstance(await rig.plugin.query(order()), NotFound)
        clock.now = 5
        assert isinstance(await rig.plugin.query(order()), Pending)
        clock.now = 10
        assert isinstance(await rig.plugin.query(order()), Delivered)


async def test_not_found_rate_takes_only_its_share(start: Start) -> None:
    with trio.fail_after(10):
        clock = ManualClock()
        rig = await start(make_supplier(not_found_rate=0.5, not_found_s=60), clock=clock, callbacks=False)
        outcomes = []
        for i in range(40):
            await rig.plugin.submit(order(f"att-{i}"))
            outcomes.append(await rig.plugin.query(order(f"att-{i}")))
        hidden = sum(isinstance(o, NotFound) for o in outcomes)
        assert 8 <= hidden <= 32
        assert all(isinstance(o, NotFound | Delivered) for o in outcomes)


async def test_timeout_and_unknown_still_work_with_the_new_fates_off(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(timeout_rate=1.0, timeout_s=0.3))
        with pytest.raises(httpx.ReadTimeout):
            await rig.plugin.submit(order("t"))
        # the callback does not wait for the held reply
        [callback] = await rig.receiver.wait_for(1)
        assert callback.attempt_key == "t" and isinstance(callback.outcome, Delivered)
        other = await start(make_supplier(unknown_rate=1.0))
        assert isinstance(await other.plugin.submit(order("u")), Unknown)
        [callback] = await other.receiver.wait_for(1)
        assert callback.attempt_key == "u" and isinstance(callback.outcome, Delivered)


# -------------------------------------------------------------- callbacks


async def test_a_delivered_order_calls_back_signed_and_once(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        submitted = await rig.plugin.submit(order(card=True, quantity=2))
        assert isinstance(submitted, Delivered)
        [callback] = await rig.receiver.wait_for(1)
        assert callback.attempt_key == "att-1"
        assert callback.outcome == submitted
        assert callback.unit_price == CARD_PRICE and callback.quantity == 2
        assert callback.supplier_ref == "acme-00000001"
        assert callback.sent_at is not None and abs(callback.sent_at - time.time()) < 5
        await trio.sleep(0.2)
        assert len(rig.receiver.got) == 1 and rig.receiver.rejected == []
        [entry] = await rig.ledger()
        assert (entry["callbacks_sent"], entry["callbacks_acked"]) == (1, 1)


async def test_a_failed_order_calls_back_failed(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(fail_rate=1.0))
        assert isinstance(await rig.plugin.submit(order()), Failed)
        [callback] = await rig.receiver.wait_for(1)
        assert isinstance(callback.outcome, Failed) and callback.attempt_key == "att-1"


async def test_a_pending_order_completes_and_calls_back_without_any_query(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(pending_rate=1.0, pending_s=0.3))
        t0 = trio.current_time()
        assert isinstance(await rig.plugin.submit(order()), Pending)
        [callback] = await rig.receiver.wait_for(1)
        assert rig.receiver.arrivals[0] - t0 >= 0.3
        assert isinstance(callback.outcome, Delivered) and callback.outcome.deliverables.receipt
        entry = await rig.entry_once_acked(1)
        assert entry["status"] == "success"
        assert entry["delivered_at"] == pytest.approx(entry["accepted_at"] + 0.3)
        assert (entry["callbacks_sent"], entry["callbacks_acked"]) == (1, 1)


async def test_no_notify_url_no_callback(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_duplicates=2, callback_reorder_rate=1.0), callbacks=False)
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        await trio.sleep(0.3)
        assert rig.receiver.got == []
        [entry] = await rig.ledger()
        assert entry["callbacks_sent"] == 0


async def test_a_callback_not_answered_ok_is_retried_on_the_schedule(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_retry_s=[0.1, 0.2, 5]))
        rig.receiver.answers = [False, False]
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        callbacks = await rig.receiver.wait_for(3)
        assert all(c.attempt_key == "att-1" and isinstance(c.outcome, Delivered) for c in callbacks)
        first, second, third = rig.receiver.arrivals
        assert second - first >= 0.1 and third - second >= 0.2
        await trio.sleep(0.3)
        assert len(rig.receiver.got) == 3
        [entry] = await rig.ledger()
        assert (entry["callbacks_sent"], entry["callbacks_acked"]) == (3, 1)


async def test_callbacks_are_given_up_after_the_last_retry(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_retry_s=[0.02, 0.02]))
        rig.receiver.answers = [False] * 10
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        await rig.receiver.wait_for(3)
        await trio.sleep(0.3)
        assert len(rig.receiver.got) == 3
        [entry] = await rig.ledger()
        assert (entry["callbacks_sent"], entry["callbacks_acked"]) == (3, 0)


async def test_an_unreachable_receiver_does_not_hurt_the_simulator(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        supplier = make_supplier(callback_retry_s=[0.02, 0.02])
        sim = SimSupplier(supplier)
        url = await nursery.start(functools.partial(serve_simulator, supplier, handler=sim))
        dead = f"http://127.0.0.1:{closed_port()}/cb"
        plugin = SimPlugin(SupplierContext(supplier=supplier, endpoint=url, http=http, callback_url=dead))
        assert isinstance(await plugin.submit(order("a")), Delivered)
        for _ in range(200):
            if sim.ledger()[0]["callbacks_sent"] == 3:
                break
            await trio.sleep(0.02)
        await trio.sleep(0.1)
        assert isinstance(await plugin.submit(order("b")), Delivered)
        entries = sim.ledger()
        assert entries[0]["callbacks_sent"] == 3 and entries[0]["callbacks_acked"] == 0


async def test_duplicated_callbacks(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_duplicates=2))
        submitted = await rig.plugin.submit(order())
        callbacks = await rig.receiver.wait_for(3)
        assert all(c.outcome == submitted and c.attempt_key == "att-1" for c in callbacks)
        await trio.sleep(0.2)
        assert len(rig.receiver.got) == 3
        [entry] = await rig.ledger()
        assert (entry["callbacks_sent"], entry["callbacks_acked"]) == (3, 3)


async def test_a_stale_processing_callback_comes_after_the_final_one(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_reorder_rate=1.0, callback_duplicates=1))
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        callbacks = await rig.receiver.wait_for(3)
        assert [type(c.outcome) for c in callbacks] == [Delivered, Delivered, Pending]
        assert callbacks[2].supplier_ref == "acme-00000001"
        [entry] = await rig.ledger()
        assert entry["status"] == "success" and entry["callbacks_sent"] == 3


async def test_a_stale_callback_after_a_failure(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(fail_rate=1.0, callback_reorder_rate=1.0))
        assert isinstance(await rig.plugin.submit(order()), Failed)
        callbacks = await rig.receiver.wait_for(2)
        assert [type(c.outcome) for c in callbacks] == [Failed, Pending]


async def test_callbacks_are_delayed_as_configured(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_delay_s=[0.3, 0.5], callback_duplicates=2))
        t0 = trio.current_time()
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        assert rig.receiver.got == []
        await rig.receiver.wait_for(3)
        delays = [arrival - t0 for arrival in rig.receiver.arrivals]
        assert all(0.3 <= d < 2.0 for d in delays), delays
        # each copy draws its own delay
        assert len({round(d, 3) for d in delays}) > 1


async def test_before_reply_the_callback_overtakes_the_submit_reply(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_before_reply_rate=1.0, pending_rate=1.0))
        outcome = await rig.plugin.submit(order())
        returned = trio.current_time()
        # the order completed at once, and its callback was already in
        assert isinstance(outcome, Delivered)
        [callback] = rig.receiver.got
        assert callback.outcome == outcome
        assert rig.receiver.arrivals[0] < returned
        [entry] = await rig.ledger()
        assert entry["status"] == "success" and entry["callbacks_acked"] == 1


async def test_before_reply_holds_the_reply_through_callback_retries(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(callback_before_reply_rate=1.0, callback_retry_s=[0.2]))
        rig.receiver.answers = [False]
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Delivered)
        assert len(rig.receiver.got) == 2
        assert rig.receiver.arrivals[1] - rig.receiver.arrivals[0] >= 0.2


async def test_before_reply_combines_with_a_reply_fault(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(
            make_supplier(callback_before_reply_rate=1.0, unknown_rate=1.0, callback_duplicates=1)
        )
        assert isinstance(await rig.plugin.submit(order()), Unknown)
        assert len(rig.receiver.got) >= 1 and isinstance(rig.receiver.got[0].outcome, Delivered)
        await rig.receiver.wait_for(2)
        [entry] = await rig.ledger()
        assert entry["callbacks_sent"] == 2


async def test_a_forged_callback_over_http_is_refused_with_fail(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        submitted = await rig.plugin.submit(order())
        assert isinstance(submitted, Delivered)
        await rig.receiver.wait_for(1)
        body = dumps_json(callback_body(status="success"))
        headers = protocol.signed_headers("acme", "not-the-key", body, time.time())
        response = await rig.http.post(rig.receiver.url, content=body, headers=headers)
        assert response.status_code == 200 and response.content == b"fail"
        assert rig.receiver.rejected == ["bad_signature"]
        assert len(rig.receiver.got) == 1


# ------------------------------------------------ parse_callback directly


def callback_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_order_no": "att-1",
        "order_no": "acme-00000001",
        "status": "success",
        "product_id": TOPUP_PID,
        "quantity": 1,
        "unit_price": "99.20",
        "cards": [],
        "receipt": "SN123",
    }
    body.update(changes)
    return body


def callback_request(
    payload: dict[str, Any] | bytes,
    *,
    key: str = API_KEY,
    merchant: str = "acme",
    now: float = 1_700_000_000.0,
    tamper: Callable[[bytes], bytes] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Request:
    body = payload if isinstance(payload, bytes) else dumps_json(payload)
    signed = protocol.signed_headers(merchant, key, body, now)
    if tamper is not None:
        body = tamper(body)
    signed.update(headers or {})
    return Request(
        method=method,
        path="/callbacks/acme",
        query={},
        headers={k.lower(): v for k, v in signed.items()},
        body=body,
    )


@pytest.fixture
def plugin() -> SimPlugin:
    # parse_callback and callback_reply do no I/O: the client is never used
    unused = httpx.AsyncClient(trust_env=False)
    return SimPlugin(SupplierContext(supplier=make_supplier(), endpoint="http://sim.test", http=unused))


def test_a_signed_callback_parses(plugin: SimPlugin) -> None:
    callback = plugin.parse_callback(callback_request(callback_body()))
    assert callback.attempt_key == "att-1"
    assert callback.outcome == Delivered(
        Deliverables(receipt="SN123"), unit_cost=TOPUP_PRICE, supplier_ref="acme-00000001"
    )
    assert (callback.unit_price, callback.quantity, callback.supplier_ref) == (
        TOPUP_PRICE,
        1,
        "acme-00000001",
    )
    assert callback.sent_at == 1_700_000_000.0
    failed = plugin.parse_callback(callback_request(callback_body(status="failed", receipt=None)))
    assert isinstance(failed.outcome, Failed)
    pending = plugin.parse_callback(callback_request(callback_body(status="processing", receipt=None)))
    assert pending.outcome == Pending(supplier_ref="acme-00000001")


def test_a_success_whose_goods_do_not_fit_is_unknown(plugin: SimPlugin) -> None:
    card = {"number": "1", "password": "p", "expires": None}
    wrong_count = callback_body(quantity=2, cards=[card], receipt=None)
    assert isinstance(plugin.parse_callback(callback_request(wrong_count)).outcome, Unknown)
    nothing = callback_body(receipt=None)
    assert isinstance(plugin.parse_callback(callback_request(nothing)).outcome, Unknown)


@pytest.mark.parametrize(
    "forge",
    [
        {"key": "wrong-key"},
        {"merchant": "other"},
        {"tamper": lambda body: body.replace(b"99.20", b"0.01")},
        {"tamper": lambda body: body.replace(b"SN123", b"SN124")},
        {"headers": {protocol.HEADER_TIMESTAMP: "1700000001"}},
        {"headers": {protocol.HEADER_TIMESTAMP: "17e8"}},
        {"headers": {protocol.HEADER_TIMESTAMP: ""}},
        {"headers": {protocol.HEADER_SIGN: ""}},
        {"headers": {protocol.HEADER_SIGN: "é" * 64}},
        {"headers": {protocol.HEADER_MERCHANT: "ACME"}},
    ],
)
def test_forged_callbacks_are_rejected(plugin: SimPlugin, forge: dict[str, Any]) -> None:
    with pytest.raises(CallbackRejected) as caught:
        plugin.parse_callback(callback_request(callback_body(), **forge))
    assert caught.value.reason == "bad_signature"
    assert API_KEY not in str(caught.value)


def test_a_callback_without_headers_is_rejected(plugin: SimPlugin) -> None:
    request = Request("POST", "/cb", {}, {}, dumps_json(callback_body()))
    with pytest.raises(CallbackRejected) as caught:
        plugin.parse_callback(request)
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        callback_body(status="done"),
        callback_body(quantity="1"),
        callback_body(unit_price="free"),
        callback_body(merchant_order_no=""),
        callback_body(cards=[{"number": 1}]),
        {"merchant_order_no": "att-1"},
    ],
)
def test_signed_but_malformed_callbacks_are_rejected(
    plugin: SimPlugin, payload: dict[str, Any] | bytes
) -> None:
    with pytest.raises(CallbackRejected) as caught:
        plugin.parse_callback(callback_request(payload))
    assert caught.value.reason == "malformed"


def test_a_signed_get_is_malformed(plugin: SimPlugin) -> None:
    with pytest.raises(CallbackRejected) as caught:
        plugin.parse_callback(callback_request(callback_body(), method="GET"))
    assert caught.value.reason == "malformed"


def test_callback_replies(plugin: SimPlugin) -> None:
    assert plugin.callback_reply(True) == CallbackReply(200, b"ok")
    refused = plugin.callback_reply(False)
    assert (refused.status, refused.body) == (200, b"fail")
    assert validate_plugin(SimPlugin, "sim", "test") is SimPlugin


# ---------------------------------------------- clock-driven, no network


def _signed_order(key: str, notify_url: str | None) -> Request:
    payload = {
        "merchant_order_no": key,
        "product_id": TOPUP_PID,
        "quantity": 1,
        "account": PHONE,
        "fields": {},
        "max_unit_price": None,
        "notify_url": notify_url,
    }
    body = dumps_json(payload)
    headers = protocol.signed_headers("acme", API_KEY, body, time.time())
    return Request("POST", "/order", {}, {k.lower(): v for k, v in headers.items()}, body)


async def test_pending_completion_and_callbacks_follow_the_trio_clock(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Under an autojumping MockClock an hour of pending and minutes of
    callback delay and back-off pass at once, each at its exact time."""
    seen: list[tuple[float, str]] = []
    answers = [b"fail", b"ok"]

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append((trio.current_time(), json.loads(request.content)["status"]))
        return httpx.Response(200, content=answers.pop(0) if answers else b"ok")

    supplier = make_supplier(
        pending_rate=1.0, pending_s=3600, callback_delay_s=[10, 10], callback_retry_s=[60, 600]
    )
    sim = SimSupplier(supplier, wall_clock=time.time)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as client:
        await nursery.start(functools.partial(sim.run, http=client))
        t0 = trio.current_time()
        reply = await sim(_signed_order("att-1", "http://receiver.test/cb"))
        assert reply.status == 200 and b'"processing"' in reply.body
        await trio.sleep(3600 + 10 + 60 + 1)
        assert [(round(t - t0, 1), status) for t, status in seen] == [
            (3610.0, "success"),
            (3670.0, "success"),
        ]
        [entry] = sim.ledger()
        assert entry["delivered_at"] == pytest.approx(t0 + 3600)
        assert (entry["callbacks_sent"], entry["callbacks_acked"]) == (2, 1)


async def test_without_run_pending_orders_still_settle_on_query(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = SimSupplier(make_supplier(pending_rate=1.0, pending_s=5))
    reply = await sim(_signed_order("att-1", "http://receiver.test/cb"))
    assert b'"processing"' in reply.body
    await trio.sleep(5)
    [entry] = sim.ledger()
    assert entry["status"] == "success" and entry["callbacks_sent"] == 0


# ---------------------------------------------------------- reproducibility


async def test_a_seed_reproduces_every_fate_and_callback_knobs_change_none(start: Start) -> None:
    faults: dict[str, Any] = dict(
        seed=11,
        fail_rate=0.15,
        unknown_rate=0.15,
        reset_rate=0.15,
        error_after_accept_rate=0.15,
        duplicate_reply_rate=0.15,
    )

    async def run(**extra: Any) -> list[str]:
        rig = await start(make_supplier(**faults, **extra), callbacks=False)
        kinds = []
        for i in range(30):
            try:
                outcome = await rig.plugin.submit(order(f"att-{i}"))
                kinds.append(f"{outcome.kind}:{outcome.reason or ''}")
            except httpx.TransportError:
                kinds.append("reset")
        return kinds

    with trio.fail_after(20):
        first = await run()
        assert await run() == first
        assert await run(not_found_rate=0.5, not_found_s=1, callback_reorder_rate=0.5) == first
        assert {"reset", "failed:failed", "delivered:"} <= set(first)


# ------------------------------------------------------------------ config


def read(tmp_path: Path, simulate: str) -> tuple[SupplierConfig | None, list[Problem]]:
    path = tmp_path / "acme.yaml"
    path.write_text(
        "plugin: sim\n"
        f"credentials: {{api_key: {API_KEY}}}\n"
        f"offers: {{{TOPUP}: {{product_id: {TOPUP_PID}, price: 99.20}}}}\n"
        f"simulate: {simulate}\n",
        encoding="utf-8",
    )
    problems: list[Problem] = []
    return read_supplier(path, problems, None), problems


def test_fault_knobs_default_off(tmp_path: Path) -> None:
    supplier, problems = read(tmp_path, "{}")
    assert problems == [] and supplier is not None and supplier.simulate is not None
    sim = supplier.simulate
    assert sim.reset_rate == sim.error_after_accept_rate == sim.duplicate_reply_rate == 0
    assert sim.not_found_rate == sim.not_found_s == 0
    assert sim.callback_delay_s == (0, 0) and sim.callback_duplicates == 0
    assert sim.callback_reorder_rate == sim.callback_before_reply_rate == 0


def test_fault_knobs_are_read(tmp_path: Path) -> None:
    supplier, problems = read(
        tmp_path,
        "{reset_rate: 0.1, error_after_accept_rate: 0.1, duplicate_reply_rate: 0.1,"
        " not_found_rate: 0.5, not_found_s: 30, callback_delay_s: [0.5, 2],"
        " callback_duplicates: 2, callback_reorder_rate: 0.3, callback_before_reply_rate: 0.2,"
        " callback_retry_s: [0.1, 1]}",
    )
    assert problems == [] and supplier is not None and supplier.simulate is not None
    sim = supplier.simulate
    assert (sim.reset_rate, sim.error_after_accept_rate, sim.duplicate_reply_rate) == (0.1, 0.1, 0.1)
    assert (sim.not_found_rate, sim.not_found_s) == (0.5, 30)
    assert sim.callback_delay_s == (0.5, 2) and sim.callback_duplicates == 2
    assert (sim.callback_reorder_rate, sim.callback_before_reply_rate) == (0.3, 0.2)
    assert sim.callback_retry_s == (0.1, 1)


@pytest.mark.parametrize(
    ("simulate", "key", "words"),
    [
        ("{reset_rate: 1.5}", "simulate.reset_rate", "at most 1"),
        ("{error_after_accept_rate: -0.1}", "simulate.error_after_accept_rate", "at least 0"),
        ("{duplicate_reply_rate: yes}", "simulate.duplicate_reply_rate", "expected a number"),
        ("{not_found_rate: 2}", "simulate.not_found_rate", "at most 1"),
        ("{not_found_s: -1}", "simulate.not_found_s", "at least 0"),
        ("{callback_delay_s: [2, 1]}", "simulate.callback_delay_s", "[low, high]"),
        ("{callback_delay_s: 1}", "simulate.callback_delay_s", "[low, high]"),
        ("{callback_duplicates: 11}", "simulate.callback_duplicates", "at most 10"),
        ("{callback_duplicates: 0.5}", "simulate.callback_duplicates", "integer"),
        ("{callback_reorder_rate: 1.1}", "simulate.callback_reorder_rate", "at most 1"),
        ("{callback_before_reply_rate: -1}", "simulate.callback_before_reply_rate", "at least 0"),
        ("{callback_retry_s: [1, -1]}", "simulate.callback_retry_s", "each from 0 to 3600"),
        ("{callback_retry_s: 5}", "simulate.callback_retry_s", "list"),
        ("{reset_rate: 0.6, duplicate_reply_rate: 0.5}", "simulate.fail_rate", "at most 1"),
        ("{pending_rate: 0.5, error_after_accept_rate: 0.6}", "simulate.fail_rate", "at most 1"),
        ("{callback_delay: [1, 2]}", "simulate.callback_delay", "unknown key"),
    ],
)
def test_bad_fault_knobs_name_their_key(tmp_path: Path, simulate: str, key: str, words: str) -> None:
    supplier, problems = read(tmp_path, simulate)
    assert supplier is None
    assert [p.key for p in problems] == [key], problems
    assert words in problems[0].message


def test_combining_knobs_do_not_count_toward_the_fate_sum(tmp_path: Path) -> None:
    supplier, problems = read(
        tmp_path,
        "{fail_rate: 0.5, reset_rate: 0.5, not_found_rate: 1, callback_reorder_rate: 1,"
        " callback_before_reply_rate: 1}",
    )
    assert problems == [] and supplier is not None


# ------------------------------------------------- standalone, another process


async def test_the_standalone_simulator_serves_faults_and_its_ledger(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(
        "plugin: sim\n"
        f"credentials: {{api_key: {API_KEY}}}\n"
        f"offers: {{{TOPUP}: {{product_id: {TOPUP_PID}, price: 99.20}}}}\n"
        "simulate: {latency_ms: [0, 2], seed: 5, duplicate_reply_rate: 1}\n",
        encoding="utf-8",
    )
    port = closed_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "kamen_router", "sim", "-c", str(path), "--listen", f"127.0.0.1:{port}"],
            stdout=-1,
            env=env,
        )
        try:
            assert process.stdout is not None
            line = b""
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the simulator exited before it was listening"
                line += chunk
            url = f"http://127.0.0.1:{port}"
            assert url.encode() in line
            supplier = make_supplier()
            plugin = SimPlugin(SupplierContext(supplier=supplier, endpoint=url, http=http))
            assert await plugin.submit(order()) == Unknown("duplicate order number")
            reply = await http.get(url + "/ledger")
            [entry] = reply.json()["orders"]
            assert entry["merchant_order_no"] == "att-1" and entry["status"] == "success"
            assert entry["submits"] == 1 and entry["callbacks_sent"] == 0
        finally:
            process.terminate()
            await process.wait()


async def test_the_standalone_simulator_sends_callbacks(
    tmp_path: Path, http: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(
        "plugin: sim\n"
        f"credentials: {{api_key: {API_KEY}}}\n"
        f"offers: {{{TOPUP}: {{product_id: {TOPUP_PID}, price: 99.20}}}}\n"
        "simulate: {latency_ms: [0, 2], seed: 5, pending_rate: 1, pending_s: 0.2, callback_duplicates: 1}\n",
        encoding="utf-8",
    )
    listener = await open_tcp_listener("127.0.0.1", 0)
    receiver = Receiver(f"http://127.0.0.1:{bound_port(listener)}/cb")
    await nursery.start(HttpServer(receiver.handle, name="receiver").serve, [listener])
    port = closed_port()
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "kamen_router", "sim", "-c", str(path), "--listen", f"127.0.0.1:{port}"],
            stdout=-1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            line = b""
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the simulator exited before it was listening"
                line += chunk
            url = f"http://127.0.0.1:{port}"
            context = SupplierContext(
                supplier=make_supplier(), endpoint=url, http=http, callback_url=receiver.url
            )
            receiver.plugin = SimPlugin(context)
            assert isinstance(await receiver.plugin.submit(order()), Pending)
            with trio.move_on_after(3):
                await receiver.wait_for(2)
            assert [type(c.outcome) for c in receiver.got] == [Delivered, Delivered]
            # the simulator counts an ack once it has read the answer
            for _ in range(100):
                [entry] = (await http.get(url + "/ledger")).json()["orders"]
                if entry["callbacks_acked"] == 2:
                    break
                await trio.sleep(0.02)
            assert (entry["status"], entry["callbacks_sent"], entry["callbacks_acked"]) == ("success", 2, 2)
        finally:
            process.terminate()
            await process.wait()
