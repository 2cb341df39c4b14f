"""The simulated upstream for the ``sim`` protocol.

``SimSupplier`` is an HTTP handler (served by ``kamen_router.http.HttpServer``)
that behaves like one supplier account: it sells the supplier's offers at
their configured prices, keeps a prepaid balance and per-product stock,
checks signatures, and misbehaves on purpose as its ``Simulate`` block says.

An order is checked in this order, and the first failing check answers:

1. signature, merchant and timestamp (1001), then the request's shape (1000);
2. the rate limit, when one is set (1429);
3. the merchant order number: a known one answers 1007 with the existing
   order. This comes before every business check on purpose: a resubmitted
   attempt that the simulator already took must never be answered "out of
   stock" or "insufficient balance" (its own first copy may have used the
   last unit), or the router would fail over and deliver twice;
4. maintenance (1008), product (1002), account (1006), price ceiling (1005),
   stock (1003), balance (1004).

An order that passes is accepted: the balance and stock are charged and the
order enters the ledger. One draw from ``random.Random(seed)`` then picks its
fate: ``fail_rate`` fails it (balance and stock refunded), ``timeout_rate``
delivers it but holds the reply longer than the client waits,
``unknown_rate`` delivers it but answers HTTP 500 / 5000, ``pending_rate``
leaves it ``processing`` until ``pending_s`` later; otherwise it succeeds at
once. A pending order completes lazily, when it is next looked at, against
the injected clock, so tests can move time without sleeping. Every reply but
the ledger's is delayed by a uniform draw from ``latency_ms``.

``GET /ledger`` (unsigned) lists what the simulator really accepted and
delivered, so tests can check invariants such as "no order delivered by two
suppliers" against the suppliers themselves rather than the router's view.
The simulator sends no callbacks: the router learns results by querying.
"""

from __future__ import annotations

import datetime
import enum
import random
import string
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import trio

from ..config import Simulate, SupplierConfig
from ..errors import ConfigError, Problem
from ..http import BadRequest, HttpServer, Request, Response, bound_port, open_tcp_listener
from ..money import format_money, parse_money
from .protocol import (
    HEADER_MERCHANT,
    HEADER_SIGN,
    HEADER_TIMESTAMP,
    MAX_QUANTITY,
    MAX_SKEW_S,
    PATH_BALANCE,
    PATH_CATALOG,
    PATH_LEDGER,
    PATH_ORDER,
    PATH_QUERY,
    CardJson,
    Code,
    LedgerEntry,
    LedgerReply,
    OrderJson,
    Status,
    verify,
)

Clock = Callable[[], float]

#: the longest a "timeout" reply is held back
MAX_TIMEOUT_HOLD_S = 3600.0


class _Fate(enum.Enum):
    SUCCESS = "success"
    FAIL = "fail"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"
    PENDING = "pending"


class _Malformed(Exception):
    """The request body does not have the protocol's shape (code 1000)."""


@attrs.frozen
class _OrderIn:
    merchant_order_no: str
    product_id: str
    quantity: int
    account: str | None = attrs.field(repr=False)
    max_unit_price: Decimal | None


@attrs.define(eq=False)
class _Order:
    order_no: str
    merchant_order_no: str
    product_id: str
    quantity: int
    account: str | None = attrs.field(repr=False)
    unit_price: Decimal
    status: Status
    accepted_at: float
    #: when a processing order completes, on the simulator's clock
    ready_at: float | None
    delivered_at: float | None
    # generated at acceptance, shown only once the order has succeeded
    cards: list[CardJson] = attrs.field(repr=False)
    receipt: str | None

    def to_json(self) -> OrderJson:
        done = self.status is Status.SUCCESS
        return {
            "order_no": self.order_no,
            "merchant_order_no": self.merchant_order_no,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "status": self.status.value,
            "unit_price": format_money(self.unit_price),
            "cards": list(self.cards) if done else [],
            "receipt": self.receipt if done else None,
        }

    def to_ledger(self) -> LedgerEntry:
        return {
            "merchant_order_no": self.merchant_order_no,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "account_masked": "***" + self.account[-4:] if self.account else None,
            "unit_price": format_money(self.unit_price),
            "status": self.status.value,
            "accepted_at": self.accepted_at,
            "delivered_at": self.delivered_at,
        }


@attrs.define
class _Bucket:
    """A token bucket: ``rate`` requests a second, bursts of up to ``rate``."""

    rate: float
    tokens: float
    at: float | None = None

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is free."""
        burst = max(1.0, self.rate)
        if self.at is not None:
            self.tokens = min(burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@attrs.frozen
class _Answer:
    status: int
    body: Mapping[str, Any]
    #: extra time to hold the reply back (the "timeout" fate)
    hold_s: float = 0.0


def _answer(status: int, code: Code, message: str, **extra: Any) -> _Answer:
    return _Answer(status, {"code": int(code), "message": message, **extra})


class SimSupplier:
    """One simulated supplier account speaking the ``sim`` protocol.

    ``SimSupplier(supplier, simulate)`` is the factory the daemon calls
    (``SimPlugin.simulator``); ``simulate`` defaults to ``supplier.simulate``.
    ``clock`` drives pending completion, rate limiting and ledger times;
    ``wall_clock`` (unix seconds) checks request timestamps.
    ``rate_limit_per_s`` turns on a token bucket that answers 1429;
    ``timeout_hold_s`` is how long a "timeout" reply is held back (by default
    well past the supplier's ``limits.timeout_s``, which is what its plugin
    waits, yet short enough that a long run does not pin a socket for an
    hour per timeout). Tests may set ``maintenance`` to answer 1008.
    """

    def __init__(
        self,
        supplier: SupplierConfig,
        simulate: Simulate | None = None,
        *,
        clock: Clock = trio.current_time,
        wall_clock: Clock = time.time,
        rate_limit_per_s: float | None = None,
        timeout_hold_s: float | None = None,
    ) -> None:
        key = supplier.credentials.get("api_key")
        if key is None:
            raise ConfigError(
                [Problem(str(supplier.file), "credentials.api_key", "is required by plugin 'sim'")]
            )
        self.supplier = supplier
        self.simulate = simulate or supplier.simulate or Simulate()
        self._api_key = key
        self._clock = clock
        self._wall_clock = wall_clock
        self.maintenance = False
        #: product ids a test has taken off shelf (answered 1002, shown in the catalog)
        self.off_shelf: set[str] = set()
        self.balance: Decimal = self.simulate.balance
        # product id -> price; two skus on one product id keep the first price
        self.prices: dict[str, Decimal] = {}
        for offer in supplier.offers.values():
            self.prices.setdefault(offer.product_id, offer.price)
        self.stock: dict[str, int | None] = dict.fromkeys(self.prices, self.simulate.stock)
        seed = self.simulate.seed
        # separate streams, so that how long replies take never changes which
        # orders fail: a seeded run draws the same fates under any latency
        self._fate_rng = random.Random(seed)
        self._latency_rng = random.Random(None if seed is None else f"{seed}/latency")
        self._goods_rng = random.Random(None if seed is None else f"{seed}/goods")
        self._orders: dict[str, _Order] = {}
        self._serial = 0
        self._bucket = _Bucket(rate_limit_per_s, max(1.0, rate_limit_per_s)) if rate_limit_per_s else None
        if timeout_hold_s is None:
            timeout_hold_s = min(MAX_TIMEOUT_HOLD_S, max(60.0, 4 * supplier.limits.timeout_s))
        self.timeout_hold_s = timeout_hold_s
        self._endpoints: dict[str, Callable[[Mapping[str, Any]], _Answer]] = {
            PATH_ORDER: self._order,
            PATH_QUERY: self._query,
            PATH_BALANCE: self._balance,
            PATH_CATALOG: self._catalog,
        }

    def __repr__(self) -> str:
        return f"SimSupplier({self.supplier.name!r}, orders={len(self._orders)})"

    # ------------------------------------------------------------ inspection

    def ledger(self) -> list[LedgerEntry]:
        """Every order the simulator accepted, oldest first."""
        orders = list(self._orders.values())
        for order in orders:
            self._settle(order)
        return [order.to_ledger() for order in orders]

    def ledger_reply(self) -> LedgerReply:
        return {"supplier": self.supplier.name, "orders": self.ledger()}

    # ------------------------------------------------------------------ HTTP

    async def __call__(self, request: Request) -> Response:
        if request.path == PATH_LEDGER:
            if request.method != "GET":
                return _reply(_answer(405, Code.BAD_REQUEST, "use GET /ledger"))
            return Response.json(200, self.ledger_reply())
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return _reply(_answer(404, Code.BAD_REQUEST, "no such endpoint"))
        if request.method != "POST":
            return _reply(_answer(405, Code.BAD_REQUEST, f"use POST {request.path}"))
        answer = self._answer(request, endpoint)
        # everything above ran without a checkpoint, so each request's checks
        # and ledger write are atomic; only the reply is late
        lo, hi = self.simulate.latency_ms
        await trio.sleep(self._latency_rng.uniform(lo, hi) / 1000.0)
        if answer.hold_s:
            await trio.sleep(answer.hold_s)
        return _reply(answer)

    def _answer(self, request: Request, endpoint: Callable[[Mapping[str, Any]], _Answer]) -> _Answer:
        if not self._authentic(request):
            return _answer(401, Code.BAD_SIGNATURE, "bad signature, merchant or timestamp")
        try:
            body = request.json()
        except BadRequest as exc:
            return _answer(exc.status, Code.BAD_REQUEST, exc.message)
        if not isinstance(body, dict):
            return _answer(400, Code.BAD_REQUEST, "the body must be a JSON object")
        try:
            return endpoint(body)
        except _Malformed as exc:
            return _answer(400, Code.BAD_REQUEST, str(exc))

    def _authentic(self, request: Request) -> bool:
        headers = request.headers
        merchant = headers.get(HEADER_MERCHANT.lower())
        timestamp = headers.get(HEADER_TIMESTAMP.lower(), "")
        signature = headers.get(HEADER_SIGN.lower())
        if merchant != self.supplier.name or signature is None:
            return False
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return False
        if abs(self._wall_clock() - int(timestamp)) > MAX_SKEW_S:
            return False
        return verify(self._api_key.reveal(), timestamp, request.body, signature)

    # ------------------------------------------------------------- endpoints

    def _order(self, body: Mapping[str, Any]) -> _Answer:
        req = _parse_order(body)
        if self._bucket is not None:
            wait = self._bucket.take(self._clock())
            if wait > 0:
                return _answer(429, Code.RATE_LIMITED, "too many requests", retry_after=round(wait, 3))
        existing = self._orders.get(req.merchant_order_no)
        if existing is not None:
            self._settle(existing)
            return _answer(
                200,
                Code.DUPLICATE_ORDER,
                "duplicate merchant order number",
                order=existing.to_json(),
            )
        if self.maintenance:
            return _answer(200, Code.MAINTENANCE, "down for maintenance")
        price = self.prices.get(req.product_id)
        if price is None or req.product_id in self.off_shelf:
            return _answer(200, Code.PRODUCT_UNAVAILABLE, "unknown product or off the shelf")
        if req.account and any(word in req.account.lower() for word in ("invalid", "blacklist")):
            return _answer(200, Code.INVALID_ACCOUNT, "invalid or blacklisted account")
        if req.max_unit_price is not None and price > req.max_unit_price:
            return _answer(200, Code.PRICE_ABOVE_CEILING, "the price is above max_unit_price")
        stock = self.stock[req.product_id]
        if stock is not None and stock < req.quantity:
            return _answer(200, Code.OUT_OF_STOCK, "out of stock")
        total = price * req.quantity
        if self.balance < total:
            return _answer(200, Code.INSUFFICIENT_BALANCE, "insufficient balance")
        return self._accept(req, price)

    def _accept(self, req: _OrderIn, price: Decimal) -> _Answer:
        fate = self._draw_fate()
        now = self._clock()
        self._serial += 1
        cards, receipt = self._goods(req)
        order = _Order(
            order_no=f"{self.supplier.name}-{self._serial:08d}",
            merchant_order_no=req.merchant_order_no,
            product_id=req.product_id,
            quantity=req.quantity,
            account=req.account,
            unit_price=price,
            status=Status.SUCCESS,
            accepted_at=now,
            ready_at=None,
            delivered_at=now,
            cards=cards,
            receipt=receipt,
        )
        if fate is _Fate.FAIL:
            order.status = Status.FAILED
            order.delivered_at = None
        else:
            self._charge(order, +1)
            if fate is _Fate.PENDING:
                order.status = Status.PROCESSING
                order.ready_at = now + self.simulate.pending_s
                order.delivered_at = None
        self._orders[order.merchant_order_no] = order
        if fate is _Fate.UNKNOWN:
            # taken and delivered, but the caller cannot know it
            return _answer(500, Code.SYSTEM_ERROR, "system error, result unconfirmed; query to confirm")
        hold = self.timeout_hold_s if fate is _Fate.TIMEOUT else 0.0
        return _Answer(200, {"code": int(Code.OK), "message": "ok", "order": order.to_json()}, hold)

    def _query(self, body: Mapping[str, Any]) -> _Answer:
        merchant_order_no = body.get("merchant_order_no")
        if not isinstance(merchant_order_no, str) or not merchant_order_no:
            raise _Malformed("merchant_order_no must be a non-empty string")
        order = self._orders.get(merchant_order_no)
        if order is None:
            return _answer(200, Code.ORDER_NOT_FOUND, "order not found")
        self._settle(order)
        return _answer(200, Code.OK, "ok", order=order.to_json())

    def _balance(self, body: Mapping[str, Any]) -> _Answer:
        return _answer(200, Code.OK, "ok", balance=format_money(self.balance))

    def _catalog(self, body: Mapping[str, Any]) -> _Answer:
        products = [
            {
                "product_id": product_id,
                "price": format_money(price),
                "on_shelf": product_id not in self.off_shelf,
                "stock": self.stock.get(product_id),
            }
            for product_id, price in self.prices.items()
        ]
        return _answer(200, Code.OK, "ok", products=products)

    # --------------------------------------------------------------- helpers

    def _charge(self, order: _Order, sign: int) -> None:
        """Take (sign +1) or give back (-1) an order's money and stock."""
        self.balance -= sign * order.unit_price * order.quantity
        stock = self.stock[order.product_id]
        if stock is not None:
            self.stock[order.product_id] = stock - sign * order.quantity

    def _settle(self, order: _Order) -> None:
        """Complete a processing order whose time has come."""
        if (
            order.status is Status.PROCESSING
            and order.ready_at is not None
            and self._clock() >= order.ready_at
        ):
            order.status = Status.SUCCESS
            order.delivered_at = order.ready_at

    def _draw_fate(self) -> _Fate:
        sim = self.simulate
        draw = self._fate_rng.random()
        for fate, rate in (
            (_Fate.FAIL, sim.fail_rate),
            (_Fate.TIMEOUT, sim.timeout_rate),
            (_Fate.UNKNOWN, sim.unknown_rate),
            (_Fate.PENDING, sim.pending_rate),
        ):
            if draw < rate:
                return fate
            draw -= rate
        return _Fate.SUCCESS

    def _goods(self, req: _OrderIn) -> tuple[list[CardJson], str | None]:
        rng = self._goods_rng
        if req.account:  # a top-up: the operator's serial number
            return [], "SN" + "".join(rng.choices(string.digits, k=18))
        expires = (datetime.date.today() + datetime.timedelta(days=3 * 365)).isoformat()
        cards: list[CardJson] = [
            {
                "number": "".join(rng.choices(string.digits, k=16)),
                "password": "".join(rng.choices(string.ascii_uppercase + string.digits, k=12)),
                "expires": expires,
            }
            for _ in range(req.quantity)
        ]
        return cards, None


def _reply(answer: _Answer) -> Response:
    response = Response.json(answer.status, answer.body)
    retry_after = answer.body.get("retry_after")
    if retry_after is not None:
        response = attrs.evolve(response, headers=(("retry-after", str(max(1, round(retry_after)))),))
    return response


def _optional_str(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Malformed(f"{key} must be a string of at most {limit} characters, or null")
    return value


def _required_str(body: Mapping[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise _Malformed(f"{key} must be a string of 1 to {limit} characters")
    return value


def _parse_order(body: Mapping[str, Any]) -> _OrderIn:
    merchant_order_no = _required_str(body, "merchant_order_no", 64)
    product_id = _required_str(body, "product_id", 64)
    quantity = body.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        raise _Malformed(f"quantity must be an integer from 1 to {MAX_QUANTITY}")
    account = _optional_str(body, "account", 128)
    fields = body.get("fields")
    if fields is not None and not (
        isinstance(fields, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    ):
        raise _Malformed("fields must map strings to strings")
    raw_ceiling = body.get("max_unit_price")
    ceiling = None if raw_ceiling is None else parse_money(raw_ceiling)
    if raw_ceiling is not None and ceiling is None:
        raise _Malformed("max_unit_price must be a non-negative amount, or null")
    _optional_str(body, "notify_url", 2048)  # accepted; this simulator sends no callbacks
    return _OrderIn(merchant_order_no, product_id, quantity, account or None, ceiling)


# ----------------------------------------------------------------- serving


async def serve_simulator(
    supplier: SupplierConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    handler: SimSupplier | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulator for ``supplier`` on ``host:port`` until cancelled.

    ``task_status.started`` gets the base URL (``http://127.0.0.1:PORT``).
    ``handler`` is the ``SimSupplier`` to serve, for callers that want to
    inspect or steer it; by default one is built from ``supplier``.
    """
    sim = handler if handler is not None else SimSupplier(supplier)
    listener = await open_tcp_listener(host, port)
    url = _base_url(host, bound_port(listener))
    server = HttpServer(sim, name=f"sim:{supplier.name}")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        task_status.started(url)


def _base_url(host: str, port: int) -> str:
    # a wildcard address is not somewhere a client can connect to
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
