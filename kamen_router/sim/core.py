"""A simulated supplier account, independent of any protocol.

``SupplierAccount`` is what every protocol simulator is built on (the HTTP
side is ``kamen_router.sim.base.ProtocolSimulator``). It owns the money and
the goods: products (price, stock, on shelf), the prepaid balance, the
orders it took (the ledger), pending completion on an injected clock, the
seeded draws of fates and faults, the not-found window, rate limiting,
maintenance, and when and how often callbacks go out. What the account does
not know is any wire format: a protocol layer parses a request into an
``OrderIn``, asks ``place`` / ``query`` / ``catalog`` / ``balance``, and
renders the answer in its own terms. Callbacks are rendered, signed and
recognised as acknowledged by the protocol layer too (``CallbackRenderer``).

``place`` checks an order in this order; the first failing check answers
(``Refused`` with a ``Refusal``):

1. ``authentic=False`` (the layer's signature check failed): ``AUTH``;
2. the rate limit, when one is set: ``RATE_LIMITED`` with ``retry_after``;
3. the merchant order number: a known one is ``DUPLICATE`` and carries the
   existing order. This comes before every business check on purpose: a
   resubmitted attempt the account already took must never be answered
   "out of stock" or "insufficient balance" (its own first copy may have
   used the last unit), or the router would fail over and deliver twice;
4. ``MAINTENANCE``, ``UNKNOWN_PRODUCT``, ``OFF_SHELF``, ``INVALID_ACCOUNT``,
   ``PRICE_ABOVE_CEILING``, ``OUT_OF_STOCK``, ``INSUFFICIENT_BALANCE``.

An order that passes is accepted (``Placed``): balance and stock are
charged, the order enters the ledger, and one draw from
``random.Random(seed)`` picks its fate (see ``Simulate``): failed at once
(refunded), processing until ``pending_s`` later, or delivered at once with
a ``Fault`` the layer applies to its reply (timeout, system error, reset,
gateway error, duplicate reply). Other draws, each from its own seeded
stream, combine with any fate (``Plan``): the not-found window, callback
delays and copies, a stale ``processing`` callback after the final one, and
the final callback delivered before the submit reply.

A pending order completes on time in the background (``run``: ``trio.sleep``
until its ``ready_at``, so ``MockClock`` runs work) and whenever it is looked
at after its time, so a query is always consistent. Callbacks go only to
orders with a ``notify_url``, after the submit reply has gone out (unless
the plan says before): ``1 + callback_duplicates`` copies, each after its own
delay, each retried after every wait in ``callback_retry_s`` until
acknowledged.
"""

from __future__ import annotations

import datetime
import enum
import logging
import random
import string
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import attrs
import httpx
import trio

from ..config import Simulate, SupplierConfig
from .records import (
    CallbackRenderer,
    CatalogEntry,
    Fault,
    LedgerEntry,
    LedgerReply,
    OrderIn,
    OutgoingCallback,
    Placed,
    PlaceResult,
    Plan,
    Product,
    Refusal,
    Refused,
    SimCard,
    SimOrder,
    Status,
)

log = logging.getLogger("kamen_router.sim")

Clock = Callable[[], float]

#: the longest a "timeout" reply is held back
MAX_TIMEOUT_HOLD_S = 3600.0
#: how long the account waits for a callback's answer
CALLBACK_TIMEOUT_S = 10.0
#: an 11-digit account every simulator treats as blacklisted, for protocols
#: whose plugins accept only mobile numbers
BLACKLISTED_ACCOUNT = "13999999999"
_INVALID_MARKERS = ("invalid", "blacklist")


def is_invalid_account(account: str) -> bool:
    """The default rule for an invalid or blacklisted account: it contains
    ``invalid`` or ``blacklist`` (any case), or is ``BLACKLISTED_ACCOUNT``."""
    low = account.lower()
    return account == BLACKLISTED_ACCOUNT or any(marker in low for marker in _INVALID_MARKERS)


class _Fate(enum.Enum):
    SUCCESS = "success"
    FAIL = "fail"
    PENDING = "pending"


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


# ----------------------------------------------------------------- account


class SupplierAccount:
    """One simulated supplier account (see the module docstring).

    ``clock`` drives pending completion, rate limiting, the not-found window
    and ledger times (background waits use ``trio.sleep``, so it should be
    trio's, the default, for them to fire on time). ``renderer`` renders
    callbacks (None: no callbacks). ``timeout_hold_s`` defaults to well past
    the supplier's ``limits.timeout_s``, what its plugin waits. Tests and the
    conformance kit steer it through ``products``, ``balance``,
    ``maintenance`` and ``rate_limit_per_s``.
    """

    def __init__(
        self,
        supplier: SupplierConfig,
        simulate: Simulate | None = None,
        *,
        renderer: CallbackRenderer | None = None,
        clock: Clock = trio.current_time,
        rate_limit_per_s: float | None = None,
        timeout_hold_s: float | None = None,
        invalid_account: Callable[[str], bool] = is_invalid_account,
    ) -> None:
        self.supplier = supplier
        self.simulate = simulate or supplier.simulate or Simulate()
        self.renderer = renderer
        self.clock = clock
        self.invalid_account = invalid_account
        self.maintenance = False
        self.balance: Decimal = self.simulate.balance
        # two skus on one product id keep the first price
        self.products: dict[str, Product] = {}
        for offer in supplier.offers.values():
            self.products.setdefault(offer.product_id, Product(offer.price, self.simulate.stock))
        seed = self.simulate.seed
        # separate streams, so that how long replies take never changes which
        # orders fail: a seeded run draws the same fates under any latency,
        # and turning a combining fault on changes no order's fate
        self._fate_rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else f"{seed}/faults")
        self._latency_rng = random.Random(None if seed is None else f"{seed}/latency")
        self._goods_rng = random.Random(None if seed is None else f"{seed}/goods")
        self._orders: dict[str, SimOrder] = {}
        self._serial = 0
        self._bucket: _Bucket | None = None
        self.rate_limit_per_s = rate_limit_per_s
        if timeout_hold_s is None:
            timeout_hold_s = min(MAX_TIMEOUT_HOLD_S, max(60.0, 4 * supplier.limits.timeout_s))
        self.timeout_hold_s = timeout_hold_s
        # set while ``run`` is running
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self._warned_not_running = False

    def __repr__(self) -> str:
        return f"SupplierAccount({self.supplier.name!r}, orders={len(self._orders)})"

    @property
    def order_count(self) -> int:
        """How many orders the account took."""
        return len(self._orders)

    @property
    def rate_limit_per_s(self) -> float | None:
        return self._bucket.rate if self._bucket is not None else None

    @rate_limit_per_s.setter
    def rate_limit_per_s(self, rate: float | None) -> None:
        self._bucket = _Bucket(rate, max(1.0, rate)) if rate else None

    # ------------------------------------------------------------ operations
    # (each runs without a checkpoint: a request's checks and ledger write
    # are atomic)

    def place(self, order: OrderIn, *, authentic: bool = True) -> PlaceResult:
        """Take ``order`` or say why not (see the module docstring)."""
        if not authentic:
            return Refused(Refusal.AUTH)
        if self._bucket is not None:
            wait = self._bucket.take(self.clock())
            if wait > 0:
                return Refused(Refusal.RATE_LIMITED, retry_after=wait)
        existing = self._orders.get(order.merchant_order_no)
        if existing is not None:
            existing.submits += 1
            self._settle(existing)
            return Refused(Refusal.DUPLICATE, order=existing)
        if self.maintenance:
            return Refused(Refusal.MAINTENANCE)
        product = self.products.get(order.product_id)
        if product is None:
            return Refused(Refusal.UNKNOWN_PRODUCT)
        if not product.on_shelf:
            return Refused(Refusal.OFF_SHELF)
        if order.account and self.invalid_account(order.account):
            return Refused(Refusal.INVALID_ACCOUNT)
        total = product.price * order.quantity
        if (order.max_unit_price is not None and product.price > order.max_unit_price) or (
            order.max_total_price is not None and total > order.max_total_price
        ):
            return Refused(Refusal.PRICE_ABOVE_CEILING)
        if product.stock is not None and product.stock < order.quantity:
            return Refused(Refusal.OUT_OF_STOCK)
        if self.balance < total:
            return Refused(Refusal.INSUFFICIENT_BALANCE)
        return self._accept(order, product.price)

    def query(self, merchant_order_no: str) -> SimOrder | None:
        """The order under ``merchant_order_no`` as a query sees it: None
        when there is none, or while its not-found window lasts."""
        order = self._orders.get(merchant_order_no)
        if order is None or (
            order.plan.not_found_until is not None and self.clock() < order.plan.not_found_until
        ):
            return None
        self._settle(order)
        return order

    def find(self, merchant_order_no: str) -> SimOrder | None:
        """The order under ``merchant_order_no``, not-found window or not."""
        order = self._orders.get(merchant_order_no)
        if order is not None:
            self._settle(order)
        return order

    def catalog(self) -> list[CatalogEntry]:
        return [
            CatalogEntry(product_id, p.price, p.on_shelf, p.stock) for product_id, p in self.products.items()
        ]

    def ledger(self) -> list[LedgerEntry]:
        """Every order the account accepted, oldest first."""
        orders = list(self._orders.values())
        for order in orders:
            self._settle(order)
        return [order.to_ledger() for order in orders]

    def reply_delay(self) -> float:
        """Seconds to wait before a reply: a draw from ``latency_ms``."""
        lo, hi = self.simulate.latency_ms
        return self._latency_rng.uniform(lo, hi) / 1000.0

    # --------------------------------------------------------------- helpers

    def _accept(self, req: OrderIn, price: Decimal) -> Placed:
        fate, fault = self._draw_fate()
        now = self.clock()
        plan = self._draw_plan(now, has_callback=req.notify_url is not None)
        self._serial += 1
        cards, receipt = self._goods(req)
        order = SimOrder(
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
            fields=dict(req.fields),
            extra=dict(req.extra),
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
        return Placed(order, fault, self.timeout_hold_s if fault is Fault.TIMEOUT else 0.0)

    def _charge(self, order: SimOrder, sign: int) -> None:
        """Take (sign +1) or give back (-1) an order's money and stock."""
        self.balance -= sign * order.total
        product = self.products.get(order.product_id)
        if product is not None and product.stock is not None:
            product.stock -= sign * order.quantity

    def _settle(self, order: SimOrder) -> None:
        """Complete a processing order whose time has come."""
        if not order.final and order.ready_at is not None and self.clock() >= order.ready_at:
            order.status = Status.SUCCESS
            order.delivered_at = order.ready_at
            self._notify(order)

    def _draw_fate(self) -> tuple[_Fate, Fault]:
        sim = self.simulate
        draw = self._fate_rng.random()
        # the original four first, so a seed draws the same fates as before
        for fate, fault, rate in (
            (_Fate.FAIL, Fault.NONE, sim.fail_rate),
            (_Fate.SUCCESS, Fault.TIMEOUT, sim.timeout_rate),
            (_Fate.SUCCESS, Fault.SYSTEM_ERROR, sim.unknown_rate),
            (_Fate.PENDING, Fault.NONE, sim.pending_rate),
            (_Fate.SUCCESS, Fault.RESET, sim.reset_rate),
            (_Fate.SUCCESS, Fault.GATEWAY_ERROR, sim.error_after_accept_rate),
            (_Fate.SUCCESS, Fault.DUPLICATE_REPLY, sim.duplicate_reply_rate),
        ):
            if draw < rate:
                return fate, fault
            draw -= rate
        return _Fate.SUCCESS, Fault.NONE

    def _draw_plan(self, now: float, *, has_callback: bool) -> Plan:
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
        return Plan(
            not_found_until=now + sim.not_found_s if not_found and sim.not_found_s > 0 else None,
            callback_delays=delays,
            reorder=reorder and has_callback,
            before_reply=before_reply and has_callback,
            gateway_status=gateway_status,
        )

    def _goods(self, req: OrderIn) -> tuple[tuple[SimCard, ...], str | None]:
        rng = self._goods_rng
        if req.account:  # a top-up: the operator's serial number
            return (), "SN" + "".join(rng.choices(string.digits, k=18))
        expires = (datetime.date.today() + datetime.timedelta(days=3 * 365)).isoformat()
        cards = tuple(
            SimCard(
                "".join(rng.choices(string.digits, k=16)),
                "".join(rng.choices(string.ascii_uppercase + string.digits, k=12)),
                expires,
            )
            for _ in range(req.quantity)
        )
        return cards, None

    # ------------------------------------------------------------ background

    async def run(
        self,
        *,
        http: httpx.AsyncClient | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the background work until cancelled: completing pending orders
        on time and sending callbacks. ``http`` is the client callbacks go
        out on (by default its own, with ``trust_env=False``)."""
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

    async def _complete_on_time(self, order: SimOrder) -> None:
        assert order.ready_at is not None
        while not order.final:
            await trio.sleep(max(0.0, order.ready_at - self.clock()))
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

    def _notify(self, order: SimOrder) -> None:
        """Send the callbacks for an order that just reached its final state."""
        if order.notify_url is not None and self.renderer is not None:
            self._spawn(self._send_callbacks, order)

    async def _send_callbacks(self, order: SimOrder) -> None:
        # the final callback follows the submit reply, unless the plan says
        # it goes first (then the handler has delivered its first copy)
        await order.replied.wait()
        final = order.status
        async with trio.open_nursery() as copies:
            for i, delay in enumerate(order.plan.callback_delays):
                if i == 0 and order.plan.before_reply:
                    continue
                copies.start_soon(self._deliver_after, order, final, delay)
        if order.plan.reorder:
            await self.deliver(order, Status.PROCESSING)

    async def _deliver_after(self, order: SimOrder, status: Status, delay: float) -> None:
        await trio.sleep(delay)
        await self.deliver(order, status)

    async def deliver_before_reply(self, order: SimOrder) -> None:
        """Deliver the first final callback of an order whose plan says it
        overtakes the submit reply (the protocol shell calls this)."""
        await self.deliver(order, order.status)

    async def deliver(self, order: SimOrder, status: Status) -> bool:
        """Send one callback until it is acknowledged or its retries run
        out; whether it was acknowledged."""
        http, renderer = self._http, self.renderer
        if http is None or renderer is None or order.notify_url is None:
            return False
        for wait in (0.0, *self.simulate.callback_retry_s):
            await trio.sleep(wait)
            # rendered afresh for every try: signatures carry the time of sending
            outgoing = renderer.render_callback(order, status)
            if outgoing is None:
                return False
            order.callbacks_sent += 1
            request = http.build_request(
                outgoing.method,
                outgoing.url or order.notify_url,
                content=outgoing.content,
                headers=dict(outgoing.headers),
                timeout=CALLBACK_TIMEOUT_S,
            )
            request.stream = _Body(outgoing.content)
            try:
                response = await http.send(request)
            except Exception as exc:  # any failure to deliver is retried, never fatal
                log.debug("simulator %s: callback not delivered: %s", self.supplier.name, type(exc).__name__)
                continue
            if renderer.callback_acknowledged(response.status_code, response.content):
                order.callbacks_acked += 1
                return True
        log.debug("simulator %s: callback given up after retries", self.supplier.name)
        return False


class _Body(httpx.AsyncByteStream):
    """A request body read without an async generator. httpx reads
    ``content=bytes`` through one, and a callback cancelled half-way (the
    simulator shutting down) would leave it for the garbage collector, which
    trio warns about."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Chunks([self._data])


@attrs.define
class _Chunks:
    chunks: list[bytes]

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self.chunks:
            raise StopAsyncIteration
        return self.chunks.pop(0)


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


__all__ = [
    "BLACKLISTED_ACCOUNT",
    "CALLBACK_TIMEOUT_S",
    "CallbackRenderer",
    "CatalogEntry",
    "Fault",
    "LedgerEntry",
    "LedgerReply",
    "OrderIn",
    "OutgoingCallback",
    "PlaceResult",
    "Placed",
    "Plan",
    "Product",
    "Refusal",
    "Refused",
    "SimCard",
    "SimOrder",
    "Status",
    "SupplierAccount",
    "is_invalid_account",
]
