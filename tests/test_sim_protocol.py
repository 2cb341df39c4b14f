"""The ``sim`` reference protocol end to end: SimPlugin talking to SimSupplier
over real loopback HTTP, plus the plugin's reply mapping on canned replies."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from kamen_router.config import Limits, Offer, Secret, Simulate, SupplierConfig, read_supplier
from kamen_router.errors import Problem, SupplierUnreachable
from kamen_router.money import dumps_json
from kamen_router.outcome import (
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    NotFound,
    Pending,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.plugin import SubmitRequest, SupplierContext, load_plugins, validate_plugin
from kamen_router.sim import protocol
from kamen_router.sim.plugin import SimPlugin, SimReplyError
from kamen_router.sim.server import SimSupplier, serve_simulator

API_KEY = "sim-test-key-5f0c2a9e7d"
TOPUP, TOPUP_PID, TOPUP_PRICE = "mobile-cmcc-100", "P100", Decimal("99.20")
CARD, CARD_PID, CARD_PRICE = "steam-50", "C50", Decimal("48.50")
PHONE = "13800138000"


def make_supplier(
    *, name: str = "acme", api_key: str = API_KEY, timeout_s: float = 5.0, **simulate: Any
) -> SupplierConfig:
    sim: dict[str, Any] = {"latency_ms": (0.0, 2.0), "seed": 7}
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


def order(
    key: str = "att-1",
    *,
    sku: str = TOPUP,
    quantity: int = 1,
    account: str | None = PHONE,
    max_price: Decimal | None = None,
    product_id: str | None = None,
) -> SubmitRequest:
    pid, price = (TOPUP_PID, TOPUP_PRICE) if sku == TOPUP else (CARD_PID, CARD_PRICE)
    return SubmitRequest(
        attempt_key=key,
        order_id=f"order-{key}",
        sku=sku,
        product_id=product_id or pid,
        quantity=quantity,
        unit_price=price,
        max_price=max_price,
        account=account,
    )


def card_order(key: str = "att-1", quantity: int = 1) -> SubmitRequest:
    return order(key, sku=CARD, quantity=quantity, account=None)


class ManualClock:
    """The simulator's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class Rig:
    sim: SimSupplier
    plugin: SimPlugin
    url: str
    http: httpx.AsyncClient

    async def ledger(self) -> list[dict[str, Any]]:
        response = await self.http.get(self.url + "/ledger")
        assert response.status_code == 200
        data = response.json()
        assert data["supplier"] == self.sim.supplier.name
        orders: list[dict[str, Any]] = data["orders"]
        return orders

    async def post(self, path: str, body: bytes, *, signed: bool = True) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if signed:
            headers = protocol.signed_headers(self.sim.supplier.name, API_KEY, body, time.time())
        return await self.http.post(self.url + path, content=body, headers=headers)


Start = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def start(nursery: trio.Nursery, http: httpx.AsyncClient) -> Start:
    """Serve a simulator for a supplier and bind a plugin to it.

    ``plugin_supplier`` lets the plugin side use another config (another
    key); other keyword arguments go to SimSupplier.
    """

    async def start(
        supplier: SupplierConfig, *, plugin_supplier: SupplierConfig | None = None, **kwargs: Any
    ) -> Rig:
        sim = SimSupplier(supplier, **kwargs)
        url = await nursery.start(functools.partial(serve_simulator, supplier, handler=sim))
        assert url.startswith("http://127.0.0.1:")
        context = SupplierContext(supplier=plugin_supplier or supplier, endpoint=url, http=http)
        return Rig(sim, SimPlugin(context), url, http)

    return start


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------ over loopback


async def test_topup_is_delivered_with_a_receipt(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Delivered)
        assert outcome.deliverables.receipt and outcome.deliverables.receipt.startswith("SN")
        assert outcome.deliverables.cards == ()
        assert outcome.unit_cost == TOPUP_PRICE
        assert outcome.supplier_ref == "acme-00000001"
        [entry] = await rig.ledger()
        assert entry["merchant_order_no"] == "att-1"
        assert entry["status"] == "success"
        assert entry["account_masked"] == "***8000"
        assert entry["unit_price"] == "99.20"
        assert entry["delivered_at"] is not None


async def test_card_product_delivers_quantity_cards(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        outcome = await rig.plugin.submit(card_order(quantity=3))
        assert isinstance(outcome, Delivered)
        cards = outcome.deliverables.cards
        assert len(cards) == 3
        assert len({c.number for c in cards}) == 3
        assert all(c.number.isdigit() and c.password and c.expires for c in cards)
        assert outcome.deliverables.receipt is None
        assert outcome.unit_cost == CARD_PRICE
        [entry] = await rig.ledger()
        assert entry["quantity"] == 3 and entry["account_masked"] is None


async def test_out_of_stock_is_rejected(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(stock=2))
        outcome = await rig.plugin.submit(card_order("a", quantity=3))
        assert outcome == Rejected(RejectReason.OUT_OF_STOCK, "out of stock")
        assert isinstance(await rig.plugin.submit(card_order("b", quantity=2)), Delivered)
        outcome = await rig.plugin.submit(card_order("c"))
        assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.OUT_OF_STOCK
        assert [e["merchant_order_no"] for e in await rig.ledger()] == ["b"]


async def test_insufficient_balance_is_rejected(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(balance=Decimal("150")))
        assert isinstance(await rig.plugin.submit(order("a")), Delivered)
        outcome = await rig.plugin.submit(order("b"))
        assert isinstance(outcome, Rejected)
        assert outcome.reason is RejectReason.INSUFFICIENT_BALANCE
        assert len(await rig.ledger()) == 1


async def test_invalid_or_blacklisted_account_is_invalid(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        for key, account in (("a", "invalid-1380"), ("b", "BLACKLIST-1390")):
            outcome = await rig.plugin.submit(order(key, account=account))
            assert isinstance(outcome, Invalid)
            assert outcome.reason is InvalidReason.INVALID_ACCOUNT
        assert await rig.ledger() == []


async def test_the_supplier_enforces_the_price_ceiling(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        outcome = await rig.plugin.submit(order("a", max_price=Decimal("99.19")))
        assert isinstance(outcome, Rejected)
        assert outcome.reason is RejectReason.PRICE_ABOVE_CEILING
        assert await rig.ledger() == []
        outcome = await rig.plugin.submit(order("b", max_price=Decimal("99.2")))
        assert isinstance(outcome, Delivered)


async def test_unknown_product_is_rejected(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        outcome = await rig.plugin.submit(order(product_id="NOPE"))
        assert isinstance(outcome, Rejected)
        assert outcome.reason is RejectReason.PRODUCT_UNAVAILABLE


async def test_resubmitting_an_attempt_key_is_unknown_and_takes_nothing(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(balance=Decimal("1000")))
        assert isinstance(await rig.plugin.submit(order()), Delivered)
        assert await rig.plugin.submit(order()) == Unknown("duplicate order number")
        assert len(await rig.ledger()) == 1
        assert rig.sim.balance == Decimal("1000") - TOPUP_PRICE


async def test_duplicate_beats_out_of_stock(start: Start) -> None:
    """The first copy took the last unit; its resubmission must not read as
    "out of stock", or the router would fail over and deliver twice."""
    with trio.fail_after(10):
        rig = await start(make_supplier(stock=1))
        assert isinstance(await rig.plugin.submit(card_order()), Delivered)
        assert await rig.plugin.submit(card_order()) == Unknown("duplicate order number")


async def test_pending_is_delivered_on_query_once_its_time_has_come(start: Start) -> None:
    with trio.fail_after(10):
        clock = ManualClock()
        rig = await start(make_supplier(pending_rate=1.0, pending_s=30), clock=clock)
        submitted = await rig.plugin.submit(card_order(quantity=2))
        assert submitted == Pending(supplier_ref="acme-00000001")
        clock.now = 29.9
        assert isinstance(await rig.plugin.query(card_order(quantity=2)), Pending)
        [entry] = await rig.ledger()
        assert entry["status"] == "processing" and entry["delivered_at"] is None
        clock.now = 30.0
        outcome = await rig.plugin.query(card_order(quantity=2))
        assert isinstance(outcome, Delivered)
        assert len(outcome.deliverables.cards) == 2
        [entry] = await rig.ledger()
        assert entry["status"] == "success" and entry["delivered_at"] == 30.0


async def test_pending_completes_on_the_real_clock(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(pending_rate=1.0, pending_s=0.2))
        assert isinstance(await rig.plugin.submit(order()), Pending)
        await trio.sleep(0.25)
        outcome = await rig.plugin.query(order())
        assert isinstance(outcome, Delivered) and outcome.deliverables.receipt


async def test_system_error_is_unknown_but_the_order_was_taken(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(unknown_rate=1.0))
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Unknown)
        [entry] = await rig.ledger()
        assert entry["status"] == "success"
        assert isinstance(await rig.plugin.query(order()), Delivered)


async def test_timeout_raises_a_transport_error_and_the_order_was_taken(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(timeout_rate=1.0, timeout_s=0.3))
        with pytest.raises(httpx.ReadTimeout) as caught:
            await rig.plugin.submit(order())
        assert not isinstance(caught.value, SupplierUnreachable)
        [entry] = await rig.ledger()
        assert entry["merchant_order_no"] == "att-1" and entry["status"] == "success"
        assert isinstance(await rig.plugin.query(order()), Delivered)


async def test_failure_is_failed_and_refunded(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(fail_rate=1.0, balance=Decimal("500"), stock=5))
        outcome = await rig.plugin.submit(card_order(quantity=2))
        assert isinstance(outcome, Failed) and outcome.reason == "failed"
        assert isinstance(await rig.plugin.query(card_order(quantity=2)), Failed)
        assert rig.sim.balance == Decimal("500")
        assert rig.sim.stock[CARD_PID] == 5
        [entry] = await rig.ledger()
        assert entry["status"] == "failed" and entry["delivered_at"] is None


async def test_a_wrong_key_is_rejected_for_auth_and_takes_nothing(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(), plugin_supplier=make_supplier(api_key="wrong-key"))
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.AUTH
        assert await rig.ledger() == []
        # a refused query says nothing about the order: never a rejection
        assert isinstance(await rig.plugin.query(order()), Unknown)
        with pytest.raises(SimReplyError):
            await rig.plugin.balance()


async def test_a_stale_timestamp_is_refused(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier(), wall_clock=lambda: time.time() + 3600)
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.AUTH


async def test_a_closed_port_is_unreachable(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        endpoint = f"http://127.0.0.1:{closed_port()}"
        plugin = SimPlugin(SupplierContext(supplier=make_supplier(), endpoint=endpoint, http=http))
        with pytest.raises(SupplierUnreachable):
            await plugin.submit(order())


async def test_query_of_an_unknown_key_is_not_found(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        assert isinstance(await rig.plugin.query(order("never-sent")), NotFound)


async def test_maintenance_is_rejected(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        rig.sim.maintenance = True
        outcome = await rig.plugin.submit(order())
        assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.MAINTENANCE


async def test_rate_limit_carries_retry_after(start: Start) -> None:
    with trio.fail_after(10):
        clock = ManualClock()
        rig = await start(make_supplier(), clock=clock, rate_limit_per_s=1.0)
        assert isinstance(await rig.plugin.submit(order("a")), Delivered)
        outcome = await rig.plugin.submit(order("b"))
        assert isinstance(outcome, RateLimited)
        assert outcome.retry_after == pytest.approx(1.0)
        clock.now = 1.0
        assert isinstance(await rig.plugin.submit(order("b")), Delivered)


async def test_balance_is_configured_balance_minus_spending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: Start
) -> None:
    monkeypatch.setenv("SIM_TEST_API_KEY", API_KEY)
    path = tmp_path / "beta.yaml"
    path.write_text(
        "plugin: sim\n"
        "credentials: {api_key: '${SIM_TEST_API_KEY}'}\n"
        "limits: {timeout_s: 5}\n"
        "offers:\n"
        f"  {TOPUP}: {{product_id: {TOPUP_PID}, price: 99.20}}\n"
        f"  {CARD}: {{product_id: {CARD_PID}, price: 48.50}}\n"
        "simulate: {latency_ms: [0, 2], balance: 1000, seed: 3}\n",
        encoding="utf-8",
    )
    problems: list[Problem] = []
    supplier = read_supplier(path, problems, None)
    assert problems == [] and supplier is not None
    with trio.fail_after(10):
        rig = await start(supplier)
        assert await rig.plugin.balance() == Decimal("1000")
        assert isinstance(await rig.plugin.submit(order("a")), Delivered)
        assert isinstance(await rig.plugin.submit(card_order("b", quantity=2)), Delivered)
        assert isinstance(await rig.plugin.submit(order("c", account="invalid")), Invalid)
        assert await rig.plugin.balance() == Decimal("803.80")


async def test_bad_requests_get_json_errors_and_change_nothing(start: Start) -> None:
    with trio.fail_after(10):
        rig = await start(make_supplier())
        response = await rig.post("/order", b'{"merchant_order_no": ')
        assert response.status_code == 400
        assert response.json()["code"] == protocol.Code.BAD_REQUEST
        response = await rig.post("/order", b"[1, 2]")
        assert response.status_code == 400 and response.json()["code"] == 1000
        bad_shape = dumps_json({"merchant_order_no": "x", "product_id": TOPUP_PID, "quantity": 0})
        response = await rig.post("/order", bad_shape)
        assert response.status_code == 400 and "quantity" in response.json()["message"]
        response = await rig.post("/order", b"{not json", signed=False)
        assert response.status_code == 401 and response.json()["code"] == 1001
        response = await rig.http.get(rig.url + "/order")
        assert response.status_code == 405 and response.json()["code"] == 1000
        response = await rig.http.post(rig.url + "/nope", content=b"\xff\xfe")
        assert response.status_code == 404 and response.json()["code"] == 1000
        assert await rig.ledger() == []
        assert await rig.plugin.balance() == Decimal(100000)


async def test_secrets_stay_out_of_reprs_and_errors(start: Start, http: httpx.AsyncClient) -> None:
    seen: list[str] = []
    with trio.fail_after(10):
        rig = await start(make_supplier(timeout_rate=1.0, timeout_s=0.2))
        seen += [repr(rig.plugin), str(rig.plugin), repr(rig.plugin._context), repr(rig.sim)]
        seen.append(repr(vars(rig.plugin)))
        with pytest.raises(httpx.TimeoutException) as timeout:
            await rig.plugin.submit(order())
        seen += [repr(timeout.value), str(timeout.value)]
        wrong = await start(make_supplier(), plugin_supplier=make_supplier(api_key="wrong-key"))
        seen.append(repr(await wrong.plugin.submit(order())))
        with pytest.raises(SimReplyError) as reply_error:
            await wrong.plugin.balance()
        seen += [repr(reply_error.value), str(reply_error.value)]
        endpoint = f"http://127.0.0.1:{closed_port()}"
        plugin = SimPlugin(SupplierContext(supplier=make_supplier(), endpoint=endpoint, http=http))
        with pytest.raises(SupplierUnreachable) as unreachable:
            await plugin.submit(order())
        seen += [repr(unreachable.value), str(unreachable.value), repr(plugin)]
    for text in seen:
        assert API_KEY not in text
        assert "wrong-key" not in text


# ------------------------------------------------ mapping of canned replies


Canned = Callable[..., SimPlugin]


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    """A plugin whose every request gets one fixed reply."""
    clients: list[httpx.AsyncClient] = []

    def make(status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> SimPlugin:
        content = body if isinstance(body, bytes) else dumps_json(body)

        def reply(request: httpx.Request) -> httpx.Response:
            assert request.headers[protocol.HEADER_MERCHANT] == "acme"
            return httpx.Response(status, content=content, headers=headers)

        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(reply)))
        context = SupplierContext(supplier=make_supplier(), endpoint="http://sim.test/", http=clients[-1])
        return SimPlugin(context)

    yield make
    for client in clients:
        await client.aclose()


def good_order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_no": "S1",
        "merchant_order_no": "att-1",
        "product_id": TOPUP_PID,
        "quantity": 1,
        "status": "success",
        "unit_price": "99.20",
        "cards": [],
        "receipt": "SN1",
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"code": 0, "message": "ok", "order": good_order()}),
        (502, b"<html>bad gateway</html>"),
        (200, b"not json"),
        (200, {"message": "no code"}),
        (200, {"code": "0"}),
        (200, {"code": True}),
        (302, {"code": 0, "order": good_order()}),
        (200, {"code": 0}),
        (200, {"code": 0, "order": good_order(status="done")}),
        (200, {"code": 0, "order": good_order(unit_price="free")}),
        (200, {"code": 0, "order": good_order(merchant_order_no="att-2")}),
        (200, {"code": 0, "order": good_order(quantity=2)}),
        (200, {"code": 0, "order": good_order(receipt=None)}),
        (200, {"code": 0, "order": good_order(cards=[{"number": 1}])}),
        (200, {"code": 1007, "order": good_order()}),
        (200, {"code": 5000}),
        (200, {"code": 9999}),
        (200, {"code": 2001}),
    ],
)
async def test_surprising_submit_replies_are_unknown(
    canned: Canned, status: int, body: bytes | dict[str, Any]
) -> None:
    with trio.fail_after(5):
        plugin = canned(status, body)
        assert isinstance(await plugin.submit(order()), Unknown)


async def test_a_card_order_with_the_wrong_card_count_is_unknown(canned: Canned) -> None:
    with trio.fail_after(5):
        card = {"number": "1", "password": "p", "expires": None}
        body = {"code": 0, "order": good_order(product_id=CARD_PID, quantity=2, cards=[card])}
        outcome = await canned(200, body).submit(card_order(quantity=2))
        assert isinstance(outcome, Unknown)


@pytest.mark.parametrize("code", [1001, 1002, 1003, 1004, 1005, 1006, 1008, 5000])
async def test_a_refusal_on_query_is_unknown(canned: Canned, code: int) -> None:
    with trio.fail_after(5):
        assert isinstance(await canned(200, {"code": code}).query(order()), Unknown)


async def test_retry_after_falls_back_to_the_header(canned: Canned) -> None:
    with trio.fail_after(5):
        plugin = canned(429, {"code": 1429}, headers={"Retry-After": "7"})
        assert await plugin.submit(order()) == RateLimited(7.0)


# --------------------------------------------------------------- contract


def test_sim_plugin_honours_the_plugin_contract() -> None:
    assert validate_plugin(SimPlugin, "sim", "test") is SimPlugin
    assert load_plugins(None)["sim"] is SimPlugin
    assert SimPlugin.required_credentials == frozenset({"api_key"})
    assert not SimPlugin.schedule.resubmit_safe


def test_signatures_cover_timestamp_and_body() -> None:
    headers = protocol.signed_headers("acme", API_KEY, b"{}", 1_700_000_000.9)
    assert headers[protocol.HEADER_TIMESTAMP] == "1700000000"
    sign = headers[protocol.HEADER_SIGN]
    assert protocol.verify(API_KEY, "1700000000", b"{}", sign)
    assert not protocol.verify(API_KEY, "1700000001", b"{}", sign)
    assert not protocol.verify(API_KEY, "1700000000", b"{} ", sign)
    assert not protocol.verify("other", "1700000000", b"{}", sign)
    assert not protocol.verify(API_KEY, "1700000000", b"{}", "é" * 64)
