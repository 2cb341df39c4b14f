"""The simulated upstream for the ``sim`` protocol.

``SimSupplier`` is an HTTP handler (served by ``kamen_router.http.HttpServer``)
that behaves like one supplier account: it sells the supplier's offers at
their configured prices, keeps a prepaid balance and per-product stock,
checks signatures, sends signed callbacks, and misbehaves on purpose as its
``Simulate`` block says. Its background work (completing pending orders,
sending callbacks) runs in ``SimSupplier.run``, which must be running in a
nursery while it serves: ``serve_simulator`` does both.

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
fate (at most one; see ``Simulate``):

- ``fail_rate``: failed at once (balance and stock refunded);
- ``timeout_rate``: delivered; the reply is held longer than the client waits;
- ``unknown_rate``: delivered; answered HTTP 500 with code 5000;
- ``pending_rate``: ``processing`` until ``pending_s`` later;
- ``reset_rate``: delivered; the connection is reset with no reply;
- ``error_after_accept_rate``: delivered; answered HTTP 502 or 503 with an
  HTML body;
- ``duplicate_reply_rate``: delivered; answered 1007 "duplicate order
  number" as if it had been submitted before;
- none of them: delivered at once.

Other draws, from their own seeded stream, combine with any fate:
``not_found_rate`` makes queries answer 2001 for ``not_found_s`` after
acceptance (the ledger and resubmissions still see the order: the simulator
never takes one merchant order number twice); ``callback_before_reply_rate``
completes the order at once and holds the submit reply until its final
callback has been delivered; ``callback_reorder_rate`` sends a stale
``processing`` callback after the final one.

A pending order completes on time in the background (``trio.sleep`` until its
``ready_at`` on the injected clock, so ``MockClock`` runs work) and also
whenever it is looked at after its time, so a query is always consistent.

Callbacks (``kamen_router.sim.protocol`` describes them): when an order with
a ``notify_url`` reaches its final state and its submit reply has gone out
(or, for ``callback_before_reply_rate``, before it goes out), the simulator
sends ``1 + callback_duplicates`` copies of the final callback, each after
its own draw from ``callback_delay_s`` and concurrently; a copy not answered
``ok`` is retried after each wait in ``callback_retry_s`` in turn, then given
up. Every reply but the ledger's is delayed by a uniform draw from
``latency_ms``.

``GET /ledger`` (unsigned) lists what the simulator really accepted and
delivered, with its callback counts, so tests (in this process or another)
can check invariants such as "no order delivered by two suppliers" against
the suppliers themselves rather than the router's view.
"""

from __future__ import annotations

import datetime
import enum
import logging
import random
import string
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from ..config import Simulate, SupplierConfig
from ..errors import ConfigError, Problem
from ..http import (
    BadRequest,
    DropConnection,
    HttpServer,
    Request,
    Response,
    bound_port,
    open_tcp_listener,
)
from ..money import dumps_json, format_money, parse_money
from .protocol import (
    CALLBACK_ACK,
    CALLBACK_TIMEOUT_S,
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
    CallbackJson,
    CardJson,
    Code,
    LedgerEntry,
    LedgerReply,
    OrderJson,
    Status,
    signed_headers,
    verify,
)

log = logging.getLogger("kamen_router.sim")

Clock = Callable[[], float]

#: the longest a "timeout" reply is held back
MAX_TIMEOUT_HOLD_S = 3600.0

_GATEWAY_PAGE = b"<html><head><title>%d</title></head><body><h1>%d %s</h1></body></html>\n"


class _Fate(enum.Enum):
    SUCCESS = "success"
    FAIL = "fail"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"
    PENDING = "pending"
    RESET = "reset"
    ERROR_AFTER_ACCEPT = "error_after_accept"
    DUPLICATE_REPLY = "duplicate_reply"


class _Malformed(Exception):
    """The request body does not have the protocol's shape (code 1000)."""


@attrs.frozen
class _OrderIn:
    merchant_order_no: str
    product_id: str
    quantity: int
    account: str | None = attrs.field(repr=False)
    max_unit_price: Decimal | None
    notify_url: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class _Plan:
    """The draws that combine with any fate, made when the order is accepted."""

    #: queries answer 2001 until this time on the simulator's clock
    not_found_until: float | None = None
    #: one delay per copy of the final callback
    callback_delays: tuple[float, ...] = (0.0,)
    #: a stale ``processing`` callback follows the final ones
    reorder: bool = False
    #: the first final callback is delivered before the submit reply
    before_reply: bool = False
    #: the status of an ``error_after_accept`` reply
    gateway_status: int = 502


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
    notify_url: str | None = attrs.field(default=None, repr=False)
    plan: _Plan = attrs.Factory(_Plan)
    submits: int = 1
    callbacks_sent: int = 0
    callbacks_acked: int = 0
    #: set once the submit reply is due (its latency has passed), so that
    #: callbacks do not overtake it unless the plan says so
    replied: trio.Event = attrs.Factory(trio.Event)

    @property
    def final(self) -> bool:
        return self.status is not Status.PROCESSING

    def to_json(self, status: Status | None = None) -> OrderJson:
        status = status or self.status
        done = status is Status.SUCCESS
        return {
            "order_no": self.order_no,
            "merchant_order_no": self.merchant_order_no,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "status": status.value,
            "unit_price": format_money(self.unit_price),
            "cards": list(self.cards) if done else [],
            "receipt": self.receipt if done else None,
        }

    def to_ledger(self) -> LedgerEntry:
        return {
            "merchant_order_no": self.merchant_order_no,
            "order_no": self.order_no,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "account_masked": "***" + self.account[-4:] if self.account else None,
            "unit_price": format_money(self.unit_price),
            "status": self.status.value,
            "accepted_at": self.accepted_at,
            "delivered_at": self.delivered_at,
            "submits": self.submits,
            "callbacks_sent": self.callbacks_sent,
            "callbacks_acked": self.callbacks_acked,
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
    #: the order this request placed, when it placed one
    placed: _Order | None = None
    #: drop the connection instead of answering (the "reset" fate)
    reset: bool = False
    #: answer this HTML page instead of ``body`` (the "error_after_accept" fate)
    page: bytes | None = None


def _answer(status: int, code: Code, message: str, **extra: Any) -> _Answer:
    return _Answer(status, {"code": int(code), "message": message, **extra})


class SimSupplier:
    """One simulated supplier account speaking the ``sim`` protocol.

    ``SimSupplier(supplier, simulate)`` is the factory the daemon calls
    (``SimPlugin.simulator``); ``simulate`` defaults to ``supplier.simulate``.
    The instance is the HTTP handler; ``await nursery.start(sim.run)`` runs
    its background work (pending completion, callbacks) and must be started
    before it serves. Without ``run``, pending orders still complete when
    looked at, but no callback is ever sent.

    ``clock`` drives pending completion, rate limiting, the not-found window
    and ledger times (background waits use ``trio.sleep``, so the clock
    should be trio's, the default, for them to fire on time);
    ``wall_clock`` (unix seconds) checks request timestamps and stamps
    callbacks. ``rate_limit_per_s`` turns on a token bucket that answers
    1429; ``timeout_hold_s`` is how long a "timeout" reply is held back (by
    default well past the supplier's ``limits.timeout_s``, which is what its
    plugin waits, yet short enough that a long run does not pin a socket for
    an hour per timeout). Tests may set ``maintenance`` to answer 1008.
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
        # orders fail: a seeded run draws the same fates under any latency,
        # and turning a combining fault on changes no order's fate
        self._fate_rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else f"{seed}/faults")
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
        # set while ``run`` is running
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self._warned_not_running = False

    def __repr__(self) -> str:
        return f"SimSupplier({self.supplier.name!r}, orders={len(self._orders)})"

    # ------------------------------------------------------------ background

    async def run(
        self,
        *,
        http: httpx.AsyncClient | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the simulator's background work until cancelled: completing
        pending orders on time and sending callbacks. Start it with
        ``await nursery.start(sim.run)`` before serving requests. ``http`` is
        the client callbacks go out on (by default its own, with
        ``trust_env=False``)."""
        if self._nursery is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._warned_not_running = True
        async with _client(http) as client, trio.open_nursery() as nursery:
            self._http, self._nursery = client, nursery
            try:
                # orders taken before run started
                for order in list(self._orders.values()):
                    if order.final:
                        if order.callbacks_sent == 0:
                            self._notify(order)
                    else:
                        nursery.start_soon(self._complete_on_time, order)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
        self._http = None

    async def _complete_on_time(self, order: _Order) -> None:
        assert order.ready_at is not None
        while not order.final:
            await trio.sleep(max(0.0, order.ready_at - self._clock()))
            self._settle(order)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> bool:
        if self._nursery is None:
            # (once run has stopped, the simulator is shutting down: say nothing)
            if not self._warned_not_running:
                self._warned_not_running = True
                log.warning(
                    "simulator %s: run() is not running; pending orders complete only when "
                    "queried and no callbacks are sent",
                    self.supplier.name,
                )
            return False
        self._nursery.start_soon(fn, *args)
        return True

    # ------------------------------------------------------------- callbacks

    def _notify(self, order: _Order) -> None:
        """Send the callbacks for an order that just reached its final state."""
        if order.notify_url is not None:
            self._spawn(self._send_callbacks, order)

    async def _send_callbacks(self, order: _Order) -> None:
        # the final callback follows the submit reply, unless the plan says
        # it goes first (then the handler has delivered its first copy)
        await order.replied.wait()
        final = order.to_json()
        delays = order.plan.callback_delays
        async with trio.open_nursery() as copies:
            for i, delay in enumerate(delays):
                if i == 0 and order.plan.before_reply:
                    continue
                copies.start_soon(self._deliver_after, order, final, delay)
        if order.plan.reorder:
            await self._deliver(order, order.to_json(Status.PROCESSING))

    async def _deliver_after(self, order: _Order, body: CallbackJson, delay: float) -> None:
        await trio.sleep(delay)
        await self._deliver(order, body)

    async def _deliver(self, order: _Order, body: CallbackJson) -> bool:
        """POST one callback until it is answered ``ok`` or its retries run
        out; whether it was acknowledged."""
        http, url = self._http, order.notify_url
        if http is None or url is None:
            return False
        data = dumps_json(body)
        for wait in (0.0, *self.simulate.callback_retry_s):
            await trio.sleep(wait)
            headers = signed_headers(self.supplier.name, self._api_key.reveal(), data, self._wall_clock())
            order.callbacks_sent += 1
            try:
                response = await http.post(url, content=data, headers=headers, timeout=CALLBACK_TIMEOUT_S)
            except Exception as exc:  # any failure to deliver is retried, never fatal
                log.debug("simulator %s: callback not delivered: %s", self.supplier.name, type(exc).__name__)
                continue
            if response.status_code == 200 and response.content.strip() == CALLBACK_ACK:
                order.callbacks_acked += 1
                return True
        log.debug("simulator %s: callback given up after retries", self.supplier.name)
        return False

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
        placed = answer.placed
        try:
            if placed is not None and placed.plan.before_reply:
                await self._deliver(placed, placed.to_json())
            lo, hi = self.simulate.latency_ms
            await trio.sleep(self._latency_rng.uniform(lo, hi) / 1000.0)
        finally:
            if placed is not None:
                placed.replied.set()
        if answer.reset:
            raise DropConnection()
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
            existing.submits += 1
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
        plan = self._draw_plan(now, has_callback=req.notify_url is not None)
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
            notify_url=req.notify_url,
            plan=plan,
        )
        if fate is _Fate.FAIL:
            order.status = Status.FAILED
            order.delivered_at = None
        else:
            self._charge(order, +1)
            # an order whose callback goes before the reply completes at once
            if fate is _Fate.PENDING and not plan.before_reply:
                order.status = Status.PROCESSING
                order.ready_at = now + self.simulate.pending_s
                order.delivered_at = None
        self._orders[order.merchant_order_no] = order
        if order.final:
            self._notify(order)
        else:
            self._spawn(self._complete_on_time, order)
        if fate is _Fate.UNKNOWN:
            # taken and delivered, but the caller cannot know it
            return _Answer(
                500,
                {
                    "code": int(Code.SYSTEM_ERROR),
                    "message": "system error, result unconfirmed; query to confirm",
                },
                placed=order,
            )
        if fate is _Fate.RESET:
            return _Answer(200, {}, reset=True, placed=order)
        if fate is _Fate.ERROR_AFTER_ACCEPT:
            status = plan.gateway_status
            phrase = b"Bad Gateway" if status == 502 else b"Service Unavailable"
            return _Answer(status, {}, page=_GATEWAY_PAGE % (status, status, phrase), placed=order)
        if fate is _Fate.DUPLICATE_REPLY:
            body = {
                "code": int(Code.DUPLICATE_ORDER),
                "message": "duplicate merchant order number",
                "order": order.to_json(),
            }
            return _Answer(200, body, placed=order)
        hold = self.timeout_hold_s if fate is _Fate.TIMEOUT else 0.0
        return _Answer(
            200, {"code": int(Code.OK), "message": "ok", "order": order.to_json()}, hold, placed=order
        )

    def _query(self, body: Mapping[str, Any]) -> _Answer:
        merchant_order_no = body.get("merchant_order_no")
        if not isinstance(merchant_order_no, str) or not merchant_order_no:
            raise _Malformed("merchant_order_no must be a non-empty string")
        order = self._orders.get(merchant_order_no)
        if order is None or (
            order.plan.not_found_until is not None and self._clock() < order.plan.not_found_until
        ):
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
        if not order.final and order.ready_at is not None and self._clock() >= order.ready_at:
            order.status = Status.SUCCESS
            order.delivered_at = order.ready_at
            self._notify(order)

    def _draw_fate(self) -> _Fate:
        sim = self.simulate
        draw = self._fate_rng.random()
        # the original four first, so a seed draws the same fates as before
        for fate, rate in (
            (_Fate.FAIL, sim.fail_rate),
            (_Fate.TIMEOUT, sim.timeout_rate),
            (_Fate.UNKNOWN, sim.unknown_rate),
            (_Fate.PENDING, sim.pending_rate),
            (_Fate.RESET, sim.reset_rate),
            (_Fate.ERROR_AFTER_ACCEPT, sim.error_after_accept_rate),
            (_Fate.DUPLICATE_REPLY, sim.duplicate_reply_rate),
        ):
            if draw < rate:
                return fate
            draw -= rate
        return _Fate.SUCCESS

    def _draw_plan(self, now: float, *, has_callback: bool) -> _Plan:
        """The combining faults for one order. Always the same number of
        draws, whatever the knobs say, so each order's plan depends only on
        the seed and how many orders came before it."""
        sim, rng = self.simulate, self._fault_rng
        not_found = rng.random() < sim.not_found_rate
        reorder = rng.random() < sim.callback_reorder_rate
        before_reply = rng.random() < sim.callback_before_reply_rate
        gateway_status = 502 if rng.random() < 0.5 else 503
        lo, hi = sim.callback_delay_s
        delays = tuple(rng.uniform(lo, hi) for _ in range(1 + sim.callback_duplicates))
        return _Plan(
            not_found_until=now + sim.not_found_s if not_found and sim.not_found_s > 0 else None,
            callback_delays=delays,
            reorder=reorder and has_callback,
            before_reply=before_reply and has_callback,
            gateway_status=gateway_status,
        )

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


def _client(http: httpx.AsyncClient | None) -> Any:
    """An async context giving ``http`` (left open) or a new client (closed after)."""
    if http is not None:
        return _Borrowed(http)
    return httpx.AsyncClient(trust_env=False)


@attrs.frozen
class _Borrowed:
    http: httpx.AsyncClient

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        return None


def _reply(answer: _Answer) -> Response:
    if answer.page is not None:
        return Response(answer.status, answer.page, "text/html; charset=utf-8")
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
    notify_url = _optional_str(body, "notify_url", 2048) or None
    if notify_url is not None:
        parts = urlsplit(notify_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Malformed("notify_url must be an http(s) URL, or null")
    return _OrderIn(merchant_order_no, product_id, quantity, account or None, ceiling, notify_url)


# ----------------------------------------------------------------- serving


async def serve_simulator(
    supplier: SupplierConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    handler: SimSupplier | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulator for ``supplier`` on ``host:port`` until cancelled,
    with its background work (``SimSupplier.run``) in the same nursery.

    ``task_status.started`` gets the base URL (``http://127.0.0.1:PORT``).
    ``handler`` is the ``SimSupplier`` to serve, for callers that want to
    inspect or steer it; by default one is built from ``supplier``.
    """
    sim = handler if handler is not None else SimSupplier(supplier)
    listener = await open_tcp_listener(host, port)
    url = _base_url(host, bound_port(listener))
    server = HttpServer(sim, name=f"sim:{supplier.name}")
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        await nursery.start(server.serve, [listener])
        task_status.started(url)


def _base_url(host: str, port: int) -> str:
    # a wildcard address is not somewhere a client can connect to
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
