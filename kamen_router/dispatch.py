"""The dispatcher: takes orders in, drives each one through its attempts to a
settled state, and journals every transition before the action it enables.

One trio task per open order. The rules that keep money safe live in
``orders.Order`` (which refuses a second live attempt); this module adds the
I/O: the journal, the plugins, retries of requests that never left, the
query loop that follows PENDING and UNKNOWN attempts, and the waiters of the
order API.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tenacity
import trio

from .config import Limits, RouterConfig
from .errors import KamenRouterError, SupplierUnreachable
from .journal import Journal
from .logs import event
from .metrics import Metrics
from .money import format_money
from .naps import Naps
from .orders import Attempt, AttemptState, Order, OrderRequest, State, TransitionError
from .outcome import (
    Deliverables,
    Failed,
    Kind,
    NotFound,
    Outcome,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from .plugin import Callback, CatalogItem, Plugin, SubmitRequest
from .routing import Choice, Ranking, Router
from .upstream import LIMITS as UPSTREAM_LIMITS

log = logging.getLogger("kamen_router.orders")

CALLBACK_RESULTS = (
    "accepted",
    "duplicate",
    "incomplete",
    "stale",
    "unknown_attempt",
    "wrong_supplier",
    "mismatch",
    "contradiction",
)
#: settled orders kept in memory for fast repeat answers
RECENT_CAPACITY = 10_000
#: recovered orders whose tasks start in one scheduler pass
RECOVERY_BATCH = 500
#: open orders read from the journal at a time while recovering
RECOVERY_LOAD = 2_000
#: longest a plugin call may take whatever its own timeout says; beyond it
#: the reply is treated as UNKNOWN
HARD_TIMEOUT_FACTOR = 2.0


class OrderConflict(KamenRouterError):
    """Raised when an order id is submitted again with a different body."""

    def __init__(self, existing: Order) -> None:
        super().__init__(f"order {existing.order_id} exists with a different body")
        self.existing = existing


class Overloaded(KamenRouterError):
    """Raised when the daemon holds ``orders.max_open`` open orders already."""


class NotReady(KamenRouterError):
    """Raised when an order arrives before recovery has finished."""


class ShuttingDown(NotReady):
    """Raised when an order arrives after shutdown began."""


def _fits(order: Order, outcome: Outcome, supplier_ref: str | None = None) -> bool:
    """Whether delivered goods match the order: one card per unit for a card
    product (no account), a receipt or cards for a top-up (the supplier's
    order number stands in for a receipt, as ``Order.record`` does)."""
    goods = getattr(outcome, "deliverables", None)
    if goods is None:
        return False
    if order.request.account is None:
        return len(goods.cards) == order.request.quantity
    return bool(goods.receipt or goods.cards or supplier_ref)


async def _behind_woken() -> None:
    """Let the tasks woken with the caller (at a commit's hand-back, both
    runnable in the scheduler's next batch, in either order) run before the
    caller goes on: after a checkpoint, the caller runs in the batch after
    that."""
    await trio.lowlevel.cancel_shielded_checkpoint()


def _describe(exc: BaseException) -> str:
    """An error as a log line: its type and message (never a request, whose
    URL or body may carry credentials)."""
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _query_slots(limits: Limits) -> int:
    """Queries a supplier may have in flight: ``limits.max_in_flight``, and
    at most half the connections of its client (``upstream.LIMITS``), so
    that the submits of new orders always find a connection free however
    many pending orders are due for a query."""
    return max(1, min(limits.max_in_flight, (UPSTREAM_LIMITS.max_connections or 2) // 2))


def mask(account: str | None) -> str:
    """An account as logs show it: only its last four characters."""
    if not account:
        return "-"
    return "*" * max(0, min(len(account) - 4, 8)) + account[-4:]


class Dispatcher:
    def __init__(
        self,
        config: RouterConfig,
        clients: Mapping[str, Plugin],
        journal: Journal,
        metrics: Metrics,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clients = dict(clients)
        self.journal = journal
        self.metrics = metrics
        self.wall = wall
        self._open: dict[str, Order] = {}
        #: open orders in the journal not read yet, by id and by the keys of
        #: their attempts: whatever concerns one of them waits for
        #: ``_recovered`` (see ``serve``)
        self._unread: set[str] = set()
        self._unread_attempts: set[str] = set()
        self._recovered = trio.Event()
        self._recent: OrderedDict[str, Order] = OrderedDict()
        #: the attempts of the orders in ``_recent``, by attempt key (a
        #: callback often comes after its order settled)
        self._recent_attempts: dict[str, Order] = {}
        self._intake: dict[str, trio.Event] = {}
        self._changed: dict[str, trio.Event] = {}
        #: saves in flight, by order id: its state in memory is not on disk yet
        self._saving: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        #: when a drained supplier whose balance cannot be read was first seen so
        self._drained_since: dict[str, float] = {}
        #: suppliers whose balance/catalog refresh task runs
        self._refreshing: set[str] = set()
        #: set at shutdown: no new orders, no new attempts
        self.draining = False
        self.submits_in_flight = 0
        self._submits_done = trio.Event()
        #: base URL suppliers send callbacks to (None: no callback listener)
        self.callback_base: str | None = None
        #: attempt key -> open order, for callbacks
        self._by_attempt: dict[str, Order] = {}
        #: followers asleep until their next query, keyed by attempt key; a
        #: callback that settles or advances the attempt wakes its follower
        self._naps = Naps()
        #: supplier -> slots for status queries (see ``_query``)
        self._query_slots: dict[str, trio.CapacityLimiter] = {}
        self.ready = False
        #: monotonic clock for routing decisions and statistics
        self.clock: Callable[[], float] = trio.current_time
        self.router = Router(
            config.suppliers,
            policy=config.routing.policy,
            scoring=config.routing.scoring,
            rng=random.Random(),
        )
        self.router.available = set(self.clients)

    # ------------------------------------------------------------- lifecycle

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover every open order from the journal and hold the order
        tasks until cancelled.

        Reports started (ready) once every open order is known by id and by
        its attempts' keys, and the oldest are read: a start with 100,000
        open orders would otherwise wait seconds for all of them to be read
        and decoded. The rest are read in batches meanwhile; new orders go
        through at once. Nothing else touches an order until it is read: a
        repeat of its id, a status request, a callback for one of its
        attempts or a resolution waits for the reading to finish
        (``_wait_read``), so there is only ever one copy of an open order,
        the one its task drives. The orders' tasks start once every order is
        read (a live attempt is queried first, as always)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._naps.run)
            ids, attempt_keys = await self.journal.open_keys()
            self._unread, self._unread_attempts = set(ids), attempt_keys
            # the oldest before ready: a journal the key cannot open fails
            # the start rather than a running daemon
            first = await self._read_recovered(ids[:RECOVERY_LOAD])
            if len(ids) > RECOVERY_LOAD:
                log.info("recovering %d open orders from the journal", len(ids))
            self.ready = True
            for name in self.clients:
                self._refreshing.add(name)
                nursery.start_soon(self._refresh, name)
            task_status.started()
            # every order read before any task starts: a hundred thousand
            # tasks querying their suppliers would slow the reading down
            # tenfold, and whatever waits for an unread order waits longer
            recovered = first
            for start in range(RECOVERY_LOAD, len(ids), RECOVERY_LOAD):
                recovered += await self._read_recovered(ids[start : start + RECOVERY_LOAD])
            self._unread_attempts.clear()
            self._recovered.set()
            if ids:
                log.info("recovered %d open orders from the journal", len(ids))
            await self._start_recovered(nursery, recovered)
            await trio.sleep_forever()

    async def _read_recovered(self, ids: list[str]) -> list[Order]:
        """Read open orders ``ids`` from the journal and hold them as open."""
        if not ids:
            return []  # (an empty journal: no trip to the reader thread)
        recovered = await self.journal.load_many(ids)
        for order in recovered:
            self._open[order.order_id] = order
            self._index(order)
            self._unread_attempts.difference_update(a.key for a in order.attempts)
        self._unread.difference_update(ids)
        self.metrics.open_orders.set(self.open_count)
        return recovered

    async def _wait_read(self, order_id: str | None = None, attempt_key: str | None = None) -> None:
        """Wait for the recovery if the order (or the attempt) is one of
        the open orders not read from the journal yet."""
        if order_id in self._unread or attempt_key in self._unread_attempts:
            await self._recovered.wait()

    async def _start_recovered(self, nursery: trio.Nursery, recovered: list[Order]) -> None:
        """Start a task for each recovered order, a batch per scheduler
        pass: thousands of tasks started in one pass would hold up
        everything else (new orders, the readiness report) until each had
        run its first step. A recovered order settled meanwhile (a
        callback) still gets its task, which finds nothing left to do."""
        for start in range(0, len(recovered), RECOVERY_BATCH):
            for order in recovered[start : start + RECOVERY_BATCH]:
                nursery.start_soon(self._drive, order)
            await trio.lowlevel.checkpoint()

    @property
    def open_count(self) -> int:
        """Open orders, those still being recovered included."""
        return len(self._open) + len(self._unread)

    async def wait_submits_done(self) -> None:
        """Return once no submit is on the wire (used by shutdown)."""
        while self.submits_in_flight:
            await self._submits_done.wait()

    def reconfigure(self, config: RouterConfig, clients: Mapping[str, Plugin]) -> None:
        """Swap in a reloaded configuration. ``clients`` holds plugin clients
        for added and changed suppliers; clients of removed suppliers stay, so
        their live attempts still reconcile, but routing no longer sees them."""
        for name, supplier in config.suppliers.items():
            before = self.config.suppliers.get(name)
            for sku, offer in supplier.offers.items():
                previous = None if before is None else before.offers.get(sku)
                if previous is not None and previous.price != offer.price:
                    # the operator changed the price: it holds from the next
                    # decision until the supplier's catalog says otherwise
                    stale = self.router.board.offer(name, sku)
                    stale.catalog_price = None
                    stale.charged_price = stale.charged_at = None
        self.config = config
        self.clients.update(clients)
        self.router.configure(config.suppliers, config.routing.policy, config.routing.scoring)
        self.router.available = {name for name in config.suppliers if name in self.clients}
        for name, slots in self._query_slots.items():
            if name in config.suppliers:
                slots.total_tokens = _query_slots(config.suppliers[name].limits)
        self.metrics.register_suppliers(list(config.suppliers))
        if self._nursery is not None:
            for name in config.suppliers:
                if name not in self._refreshing and name in self.clients:
                    self._refreshing.add(name)
                    self._nursery.start_soon(self._refresh, name)

    # ------------------------------------------------------- supplier state

    async def _refresh(self, name: str) -> None:
        """Keep one supplier's balance (and catalog, where its plugin has
        one) fresh, on ``routing.refresh`` intervals, for as long as the
        daemon runs. Failures are logged and retried at the next interval."""
        self._refreshing.add(name)
        try:
            await self._refresh_loop(name)
        finally:
            self._refreshing.discard(name)

    async def _refresh_loop(self, name: str) -> None:
        next_balance = next_catalog = self.clock()
        while True:
            routing = self.config.routing
            supplier = self.config.suppliers.get(name)
            if supplier is None:
                return  # removed by a reload
            # re-read each time: a reload may have replaced the client
            plugin = self.clients[name]
            catalog = getattr(plugin, "catalog", None)
            budget = supplier.limits.timeout_s * HARD_TIMEOUT_FACTOR + 1
            now = self.clock()
            if now >= next_balance:
                next_balance = now + routing.balance_refresh_s
                balance = None
                try:
                    with trio.fail_after(budget):
                        balance = await plugin.balance()
                except Exception as exc:
                    log.warning("balance of %s: %s", name, _describe(exc))
                if balance is not None:
                    self.router.board.set_balance(name, balance, self.clock())
                else:
                    self._expire_drained(name, now, routing.balance_refresh_s)
            if catalog is not None and now >= next_catalog:
                next_catalog = now + routing.catalog_refresh_s
                try:
                    with trio.fail_after(budget):
                        items = await catalog()
                except Exception as exc:
                    log.warning("catalog of %s: %s", name, _describe(exc))
                else:
                    self._apply_catalog(name, items)
            wake = min(next_balance, next_catalog) if catalog is not None else next_balance
            await trio.sleep(max(0.0, wake - self.clock()))

    def _expire_drained(self, name: str, now: float, after_s: float) -> None:
        """A supplier whose balance cannot be read (its protocol has no
        balance call, or the call fails) would stay drained for ever after an
        insufficient_balance refusal; after one refresh interval it is tried
        again, and a new refusal drains it again."""
        state = self.router.board.supplier(name)
        if state.drained_need is None:
            self._drained_since.pop(name, None)
            return
        since = self._drained_since.setdefault(name, now)
        if now - since >= after_s:
            state.drained_need = None
            self._drained_since.pop(name, None)
            log.info("%s: balance unknown; trying it again after an insufficient-balance refusal", name)

    def _apply_catalog(self, name: str, items: Iterable[CatalogItem]) -> None:
        supplier = self.config.suppliers.get(name)
        if supplier is None:
            return
        by_product = {item.product_id: item for item in items}
        now = self.clock()
        for sku, offer in supplier.offers.items():
            item = by_product.get(offer.product_id)
            if item is None:
                # the supplier no longer lists it: off shelf
                self.router.board.set_catalog_entry(name, sku, price=None, available=False, now=now)
                continue
            if item.price is not None and item.price != offer.price:
                log.info("catalog of %s: %s costs %s (configured %s)", name, sku, item.price, offer.price)
            self.router.board.set_catalog_entry(
                name, sku, price=item.price, available=item.available, now=now
            )
            if item.available is False and item.stock == 0:
                self.router.board.offer(name, sku).out_reason = "out_of_stock"

    def suppliers_snapshot(self, *, with_offers: bool = True) -> list[dict[str, Any]]:
        """Every configured supplier's live state, as ``GET /v1/suppliers``
        shows it."""
        now = self.clock()
        board = self.router.board
        cfg = board.config
        out = []
        for name, supplier in self.config.suppliers.items():
            state = board.supplier(name)
            ejection = state.stats.ejection
            limiter = self.router.limiters.get(name)
            offers = {}
            # metrics read this at every scrape, on the event loop: per-offer
            # detail (suppliers x skus) only for GET /v1/suppliers
            for sku, offer in supplier.offers.items() if with_offers else ():
                off = board.offer(name, sku)
                health, _scope = board.health(name, sku, now)
                offers[sku] = {
                    "product_id": offer.product_id,
                    "configured_price": format_money(offer.price),
                    "catalog_price": None if off.catalog_price is None else format_money(off.catalog_price),
                    "routing_price": format_money(board.price(name, sku, offer.price, now)[0]),
                    "success": round(board.success(name, sku, now), 4),
                    "health": health.value,
                    "out": off.out_reason if off.out_until > now else None,
                }
            out.append(
                {
                    "name": name,
                    "plugin": supplier.plugin,
                    "enabled": supplier.enabled,
                    "health": ejection.health(now).value,
                    "ejected_for_s": round(max(0.0, ejection.until - now), 1),
                    "ejections": ejection.ejections,
                    "consecutive_failures": ejection.consecutive_failures,
                    "success": round(state.stats.success(now, cfg), 4),
                    "latency_ms": None
                    if state.stats.latency_s is None
                    else round(state.stats.latency_s * 1000, 1),
                    "attempts": state.stats.attempts,
                    "in_flight": 0 if limiter is None else limiter.in_flight,
                    "max_in_flight": supplier.limits.max_in_flight,
                    "rate_per_s": supplier.limits.rate_per_s,
                    "balance": None if state.balance is None else format_money(state.balance),
                    "drained": state.drained_need is not None,
                    "rate_limited_for_s": round(max(0.0, state.paused_until - now), 1),
                    "offers": offers,
                }
            )
        return out

    # ---------------------------------------------------------------- intake

    def _cached(self, order_id: str) -> Order | None:
        order = self._open.get(order_id)
        if order is None:
            order = self._recent.get(order_id)
            if order is not None:
                self._recent.move_to_end(order_id)
        return order

    async def submit(self, request: OrderRequest, *, route_now: bool = False) -> tuple[Order, bool]:
        """Take an order in. Returns (order, created). The same id with the
        same body returns the existing order; with another body raises
        ``OrderConflict``.

        With ``route_now`` (the caller waits for the outcome, so nobody sees
        the order in ``received``) a supplier is chosen before the intake
        commit when one is free, and the order and its first attempt share
        that commit: the attempt is still on disk before its request leaves,
        one commit sooner."""
        if self.draining:
            raise ShuttingDown("the daemon is shutting down")
        if not self.ready or self._nursery is None:
            raise NotReady("the daemon is still recovering")
        await self._wait_read(request.order_id)
        while (pending := self._intake.get(request.order_id)) is not None:
            await pending.wait()  # a concurrent POST of the same id is being journaled
        existing = self._cached(request.order_id)
        if existing is None and self.open_count >= self.config.orders.max_open:
            # a stored order is answered with itself even when no new order
            # may come in; otherwise the journal is not read up front: the
            # intake commit finds a stored order (INSERT OR IGNORE) anyway
            existing = await self.journal.load(request.order_id)
            if existing is not None:
                self._remember(existing)
            elif (pending := self._intake.get(request.order_id)) is not None:
                await pending.wait()
                existing = self._cached(request.order_id)
        if existing is not None:
            if existing.request.identity() != request.identity():
                raise OrderConflict(existing)
            return existing, False
        if self.open_count >= self.config.orders.max_open:
            raise Overloaded(f"{self.open_count} orders are open")
        order = Order.receive(request, self.wall())
        first = self._first_attempt(order) if route_now else None
        done = self._intake[request.order_id] = trio.Event()
        nursery = self._nursery
        started: list[BaseException | None] = []

        def admit(stored: Order | None, error: BaseException | None) -> None:
            # At the commit, before this task resumes: a caller that waits
            # for the outcome has the order's own task start in the same
            # scheduler round as this one, whichever of the two runs first
            # (the caller answers only with what is on disk: see
            # ``settled_on_disk``). Any other caller is answered first, with
            # the order as received, and starts the task itself.
            if error is None and stored is None and route_now:
                try:
                    nursery.start_soon(self._drive, order, first)
                except RuntimeError as exc:  # a nursery closed by a shutdown
                    started.append(exc)
                    return
                started.append(None)
                self._admit(order, first)

        try:
            stored = await self.journal.create(order, admit)
        except BaseException:
            if first is not None:
                self.router.release(first[0].supplier)
            raise
        finally:
            del self._intake[request.order_id]
            done.set()
        if stored is not None:  # the id is in the journal already
            if first is not None:
                self.router.release(first[0].supplier)
            self._remember(stored)
            if stored.request.identity() != request.identity():
                raise OrderConflict(stored)
            return stored, False
        if not route_now:
            nursery.start_soon(self._drive, order, first)
            self._admit(order, first)
        elif started != [None]:
            # journaled but not started (the daemon is stopping): the next
            # start drives it
            if first is not None:
                self.router.release(first[0].supplier)
            raise (
                started[0]
                if started and started[0] is not None
                else RuntimeError("the order was not started")
            )
        return order, True

    def _admit(self, order: Order, first: tuple[Choice, Attempt] | None) -> None:
        """A new order, journaled and its task started, is open."""
        self._open[order.order_id] = order
        if first is not None:
            self._index(order)
        self.metrics.orders_received.inc()
        self.metrics.open_orders.set(self.open_count)

    def _first_attempt(self, order: Order) -> tuple[Choice, Attempt] | None:
        """Start a new order's first attempt at once, when a supplier can take
        it now (its limits taken); None leaves the routing to the order's task."""
        choice = self._pick(order, self.clock())
        if not isinstance(choice, Choice):
            return None
        try:
            attempt = order.start_attempt(choice.supplier, choice.product_id, choice.unit_price, self.wall())
        except TransitionError:
            # refused before anything changed: the order's task meets it
            # again and hands the order to a human, as for any order
            self.router.release(choice.supplier)
            return None
        return choice, attempt

    async def get(self, order_id: str) -> Order | None:
        await self._wait_read(order_id)
        order = self._cached(order_id)
        if order is None:
            order = await self.journal.load(order_id)
            if order is not None:
                self._remember(order)
        return order

    async def wait(self, order: Order, timeout_s: float) -> Order:
        """Wait up to ``timeout_s`` for the order to settle; return it as it is."""
        with trio.move_on_after(timeout_s):
            while not self.settled_on_disk(order) and order.order_id in self._open:
                event = self._changed.setdefault(order.order_id, trio.Event())
                await event.wait()
        return self._cached(order.order_id) or order

    def route(self, sku: str, order: Order | None = None) -> Ranking:
        """The explained ranking for ``sku`` now (for one order, or for a
        unit with no ceiling)."""
        if order is None:
            return self.router.rank(sku, self.clock())
        r = order.request
        return self.router.rank(
            sku, self.clock(), max_price=r.max_price, tried=order.tried(), quantity=r.quantity
        )

    def _remember(self, order: Order) -> None:
        if order.settled:
            self._recent[order.order_id] = order
            self._recent.move_to_end(order.order_id)
            for attempt in order.attempts:
                self._recent_attempts[attempt.key] = order
            while len(self._recent) > RECENT_CAPACITY:
                _, old = self._recent.popitem(last=False)
                for attempt in old.attempts:
                    if self._recent_attempts.get(attempt.key) is old:
                        del self._recent_attempts[attempt.key]

    async def _save(self, order: Order) -> bool:
        """Journal the order and wake its waiters; True if there were any.
        They are woken at the commit, to run alongside this task. Until the
        commit, the order's state in memory is not on disk
        (``settled_on_disk``)."""
        order_id = order.order_id
        self._saving[order_id] = self._saving.get(order_id, 0) + 1
        woken = handed_back = False

        def wake(_: None, error: BaseException | None) -> None:
            nonlocal woken, handed_back
            handed_back = True
            self._saved(order_id)
            if error is None and (event := self._changed.pop(order_id, None)) is not None:
                event.set()
                woken = True

        try:
            await self.journal.save(order, wake)
        finally:
            if not handed_back:  # refused before it was queued
                self._saved(order_id)
        return woken

    def _saved(self, order_id: str) -> None:
        left = self._saving.pop(order_id) - 1
        if left:
            self._saving[order_id] = left

    def settled_on_disk(self, order: Order) -> bool:
        """The order is settled, and that is committed: what a reply may
        call final. (Its own task settles it in memory first, then saves.)"""
        return order.settled and order.order_id not in self._saving

    # --------------------------------------------------------------- driving

    async def _drive(self, order: Order, first: tuple[Choice, Attempt] | None = None) -> None:
        try:
            if first is not None:
                # started at intake and journaled with the order: submit it
                live = await self._run_attempt(order, *first)
                first = None  # (the choice is not kept while the attempt is followed)
                if live is not None:
                    await self._follow(order, live)
            elif (live := order.live_attempt) is not None:
                # recovered with an attempt that may have been taken:
                # reconcile it by query before anything else
                await self._follow(order, live)
            while not order.settled and not self.draining:
                # followed from here, not from within: an order pending for
                # minutes holds one coroutine frame fewer
                live = await self._next_attempt(order)
                if live is not None:
                    await self._follow(order, live)
        except Exception:
            log.exception("order %s: internal error; handing it to a human", order.order_id)
            with trio.CancelScope(shield=True):
                try:
                    order.need_attention(
                        "internal_error", "the router hit an internal error; see the log", self.wall()
                    )
                    await self._save(order)
                except Exception:
                    log.exception("order %s: could not journal the attention state", order.order_id)
        finally:
            if order.settled:
                self._open.pop(order.order_id, None)
                for attempt in order.attempts:
                    self._by_attempt.pop(attempt.key, None)
                    self._naps.forget(attempt.key)
                self._remember(order)
                self.metrics.child(self.metrics.orders, order.state.value).inc()
                self.metrics.open_orders.set(self.open_count)
            event = self._changed.pop(order.order_id, None)
            if event is not None:
                event.set()

    async def _next_attempt(self, order: Order) -> Attempt | None:
        """Route the order and submit a new attempt; returns it if it is
        PENDING or UNKNOWN, for the caller to follow."""
        now = self.wall()
        if order.state is State.RECEIVED:
            order.start_routing(now)
        if now >= order.deadline_at:
            order.fail("deadline_exceeded", "no supplier delivered before the order's deadline", now)
            await self._save(order)
            return None
        choice = await self._choose(order)
        if not isinstance(choice, Choice):
            now = self.wall()
            if order.attempts:
                last = order.attempts[-1]
                order.fail(
                    "suppliers_exhausted",
                    f"every supplier was tried; the last said {last.reason or last.outcome}",
                    now,
                )
            elif choice is None:
                order.fail("deadline_exceeded", "every supplier was at its limits until the deadline", now)
            else:
                why = (
                    ", ".join(f"{e.supplier}: {e.reason}" for e in choice.excluded)
                    or "no supplier offers this sku"
                )
                order.fail("no_supplier", f"no supplier can take this order ({why})", now)
            await self._save(order)
            return None
        return await self._run_attempt(order, choice)

    async def _run_attempt(
        self, order: Order, choice: Choice, attempt: Attempt | None = None
    ) -> Attempt | None:
        """Submit an attempt at the chosen supplier (whose limits are taken);
        ``attempt`` is one already journaled. Returns the attempt if it is
        PENDING or UNKNOWN: the caller follows it (``_follow``)."""
        try:
            if attempt is None:
                attempt = order.start_attempt(
                    choice.supplier, choice.product_id, choice.unit_price, self.wall()
                )
                self._index(order)
                # the attempt, with its key, is on disk before the request leaves
                await self._save(order)
            await self._submit_attempt(order, attempt, holding_slot=True)
        finally:
            self.router.release(choice.supplier)
        return attempt if attempt.state in (AttemptState.PENDING, AttemptState.UNKNOWN) else None

    async def _choose(self, order: Order) -> Choice | Ranking | None:
        """A supplier with its limits taken, or the ranking that says why
        nobody can take the order, or None if every candidate stayed at its
        limits until the order's deadline."""
        while True:
            now = self.clock()
            choice = self._pick(order, now)
            if isinstance(choice, Choice) or not choice.candidates:
                return choice
            # every candidate is at its rate or in-flight limit: wait briefly
            if self.wall() >= order.deadline_at:
                return None
            await trio.sleep(min(self.router.wait_hint(choice, now), 0.05))

    def _pick(self, order: Order, now: float) -> Choice | Ranking:
        r = order.request
        choice = self.router.choose(
            r.sku, now, max_price=r.max_price, tried=order.tried(), quantity=r.quantity
        )
        if isinstance(choice, Choice) and choice.why != "best":
            log.debug("order %s: %s -> %s", order.order_id, choice.why, choice.supplier)
        return choice

    def _request(self, order: Order, attempt: Attempt) -> SubmitRequest:
        r = order.request
        return SubmitRequest(
            attempt_key=attempt.key,
            order_id=r.order_id,
            sku=r.sku,
            product_id=attempt.product_id,
            quantity=r.quantity,
            unit_price=attempt.unit_price,
            max_price=r.max_price,
            account=r.account,
            fields=r.fields,
            callback_url=None
            if self.callback_base is None
            else f"{self.callback_base}/callbacks/{attempt.supplier}",
            started_at=attempt.started_at,
        )

    async def _call(self, order: Order, attempt: Attempt, operation: str) -> tuple[Outcome, float]:
        """One submit or query, with unsent requests retried; never raises
        for a supplier's fault. Returns the outcome and the last try's
        latency in seconds, for ``_note``."""
        plugin = self.clients[attempt.supplier]
        request = self._request(order, attempt)
        routing = self.config.routing
        timeout = (
            self.config.suppliers[attempt.supplier].limits.timeout_s
            if attempt.supplier in self.config.suppliers
            else 10.0
        )
        method = plugin.submit if operation == "submit" else plugin.query
        metrics = self.metrics
        in_flight = metrics.child(metrics.in_flight, attempt.supplier)
        # the bound is per try: back-off between unsent tries must not turn
        # "never sent" into "no reply in time"
        bound = timeout * HARD_TIMEOUT_FACTOR + 1
        latency = 0.0

        async def once() -> Outcome:
            nonlocal latency
            with trio.fail_after(bound):
                in_flight.inc()
                start = time.perf_counter()
                try:
                    return await method(request)
                finally:
                    latency = time.perf_counter() - start
                    in_flight.dec()

        outcome: Outcome
        try:
            try:
                outcome = await once()
            except SupplierUnreachable:
                # nothing was sent: try again after a back-off. The first
                # try goes without tenacity's machinery, which nearly every
                # call would pay for and only this one uses; the rest carry
                # on its exponential back-off (backoff, then 2x, 4x, ...).
                if routing.submit_retries < 2:
                    raise
                await trio.sleep(min(routing.retry_backoff_s, 10))
                async for try_ in tenacity.AsyncRetrying(
                    retry=tenacity.retry_if_exception_type(SupplierUnreachable),
                    stop=tenacity.stop_after_attempt(routing.submit_retries - 1),
                    wait=tenacity.wait_exponential(multiplier=routing.retry_backoff_s * 2, max=10),
                    sleep=trio.sleep,
                    reraise=True,
                ):
                    with try_:
                        outcome = await once()
        except SupplierUnreachable as exc:
            outcome = Rejected(RejectReason.UNREACHABLE, str(exc))
        except trio.TooSlowError:
            outcome = Unknown("no reply in time")
        except Exception as exc:
            # the request may have reached the supplier: never guess
            outcome = Unknown(f"{exc.__class__.__name__}")
        return outcome, latency

    def _note(self, order: Order, attempt: Attempt, operation: str, outcome: Outcome, latency: float) -> None:
        """What one call teaches: the supplier's score, the metrics and the
        log line (``latency`` in seconds)."""
        metrics = self.metrics
        # a query that cannot say what became of the attempt teaches nothing
        # new: the submit already counted the trouble, and a stuck attempt
        # queried a hundred times must not count as a hundred failures
        if operation == "submit" or outcome.kind in (Kind.DELIVERED, Kind.FAILED, Kind.PENDING):
            self.router.board.observe(
                attempt.supplier,
                order.request.sku,
                outcome,
                self.clock(),
                latency_s=latency,
                cost=attempt.unit_price * order.request.quantity,
            )
        metrics.child(metrics.supplier_latency, attempt.supplier, operation).observe(latency)
        metrics.child(metrics.attempts, attempt.supplier, operation, outcome.kind.value).inc()
        event(
            log,
            operation,
            logging.INFO if outcome.kind is not Kind.UNKNOWN else logging.WARNING,
            order_id=order.order_id,
            supplier=attempt.supplier,
            attempt_key=attempt.key,
            account=mask(order.request.account),
            outcome=outcome.kind.value,
            reason=getattr(outcome, "reason", None) or "-",
            latency_ms=round(latency * 1000, 1),
        )

    async def _query(self, order: Order, attempt: Attempt) -> Outcome:
        """Ask the supplier what became of ``attempt``, holding one of the
        supplier's query slots (``_query_slots``), apart from its submits.
        After a restart with many open orders, or with thousands pending,
        many are due at once; the slots keep that from flooding the supplier
        and its connections while new orders go on being submitted."""
        slots = self._query_slots.get(attempt.supplier)
        if slots is None:
            supplier = self.config.suppliers.get(attempt.supplier)
            total = _query_slots(Limits() if supplier is None else supplier.limits)
            slots = self._query_slots[attempt.supplier] = trio.CapacityLimiter(total)
        async with slots:
            if not attempt.live:
                return Unknown("settled while waiting to query")
            outcome, latency = await self._call(order, attempt, "query")
        self._note(order, attempt, "query", outcome, latency)
        return outcome

    def _index(self, order: Order) -> None:
        for attempt in order.attempts:
            if attempt.live:
                self._by_attempt[attempt.key] = order
                # a callback may come before the attempt's first nap
                self._naps.expect(attempt.key)

    def _nudge(self, attempt_key: str) -> None:
        self._naps.nudge(attempt_key)

    # -------------------------------------------------------------- callbacks

    async def apply_callback(self, supplier: str, callback: Callback) -> str:
        """Apply a verified callback. Returns what became of it, one of
        ``CALLBACK_RESULTS``; only ``accepted`` changed anything."""
        now = self.wall()
        if (
            callback.sent_at is not None
            and abs(now - callback.sent_at) > self.config.callbacks.replay_window_s
        ):
            return "stale"
        await self._wait_read(attempt_key=callback.attempt_key)
        order = self._by_attempt.get(callback.attempt_key)
        if order is None:
            order = self._cached_by_attempt(callback.attempt_key) or await self.journal.load_by_attempt(
                callback.attempt_key
            )
        if order is None:
            return "unknown_attempt"
        attempt = next(a for a in order.attempts if a.key == callback.attempt_key)
        if attempt.supplier != supplier:
            return "wrong_supplier"
        if callback.quantity is not None and callback.quantity != order.request.quantity:
            return "mismatch"
        if callback.unit_price is not None and (
            callback.unit_price > attempt.unit_price
            or (order.request.max_price is not None and callback.unit_price > order.request.max_price)
        ):
            return "mismatch"
        kind = callback.outcome.kind
        if not attempt.live:
            if kind is Kind.PENDING or attempt.outcome is kind:
                return "duplicate"  # a repeat, or a stale progress notice
            # the supplier contradicts what the journal holds: a human must look
            log.error(
                "order %s: callback from %s says %s for attempt %s, which the journal holds as %s",
                order.order_id,
                supplier,
                kind.value,
                attempt.key,
                attempt.state.value,
            )
            self.metrics.contradictions.labels(supplier=supplier).inc()
            if order.state is State.FAILED and kind is Kind.DELIVERED:
                order.escalate(
                    "callback_contradicts", f"{supplier} reported a delivery after the order failed", now
                )
                await self._save(order)
            return "contradiction"
        if order.settled:
            return "duplicate"
        if kind is Kind.DELIVERED and not _fits(
            order, callback.outcome, attempt.supplier_ref or callback.supplier_ref
        ):
            # a delivery whose goods do not match the order: ask the
            # supplier directly instead of handing incomplete goods over
            self._nudge(attempt.key)
            return "incomplete"
        if kind in (Kind.DELIVERED, Kind.FAILED):
            order.record(attempt, callback.outcome, now)
            self.router.board.observe(supplier, order.request.sku, callback.outcome, self.clock())
            self._after_outcome(order, attempt, callback.outcome)
        elif kind is Kind.PENDING and attempt.state is not AttemptState.PENDING:
            order.record(attempt, callback.outcome, now)
        else:
            # news about a live attempt that does not settle it ("something
            # changed, go and look"): query now rather than at the next turn
            self._nudge(attempt.key)
            return "duplicate"
        await self._save(order)
        self._nudge(attempt.key)
        return "accepted"

    def _cached_by_attempt(self, attempt_key: str) -> Order | None:
        return self._recent_attempts.get(attempt_key)

    # ---------------------------------------------------------------- attention

    async def resolve(
        self,
        order_id: str,
        *,
        by: str,
        deliverables: Deliverables | None = None,
        failed_reason: str | None = None,
    ) -> Order | None:
        """A human settles an order in attention; journaled with who and when."""
        order = await self.get(order_id)
        if order is None:
            return None
        order.resolve(by=by, now=self.wall(), deliverables=deliverables, failed_reason=failed_reason)
        await self._save(order)
        self.metrics.resolved.labels(state=order.state.value).inc()
        log.info("order %s: resolved as %s by %s", order_id, order.state.value, by)
        return order

    async def orders_in(self, state: State, limit: int = 1000) -> list[Order]:
        return await self.journal.orders_in(state, limit)

    async def _submit_attempt(self, order: Order, attempt: Attempt, *, holding_slot: bool) -> None:
        """Submit until the supplier gives an answer other than RATE_LIMITED
        (within ``routing.max_rate_limit_wait_s``); ``holding_slot`` says the
        caller already took this supplier's limits for the first try."""
        limit_wait = self.config.routing.max_rate_limit_wait_s
        for tries in range(5):
            if tries and not await self._take_limits(attempt.supplier, order):
                break
            self.submits_in_flight += 1
            try:
                outcome, latency = await self._call(order, attempt, "submit")
            finally:
                self.submits_in_flight -= 1
                if self.submits_in_flight == 0:
                    self._submits_done.set()
                    self._submits_done = trio.Event()
                if tries:
                    self.router.release(attempt.supplier)
            if not attempt.live or isinstance(outcome, RateLimited):
                self._note(order, attempt, "submit", outcome, latency)
            if not attempt.live:
                # a callback settled the attempt while its submit was on the wire
                log.info("order %s: submit reply after a callback settled %s", order.order_id, attempt.key)
                return
            if isinstance(outcome, RateLimited):
                wait = outcome.retry_after if outcome.retry_after is not None else 1.0
                if tries < 4 and wait <= limit_wait and self.wall() + wait < order.deadline_at:
                    await trio.sleep(wait)
                    continue  # same supplier, same attempt key
                break
            answer = outcome
            if isinstance(outcome, NotFound):  # not a submit answer: a plugin fault
                outcome = Unknown("submit answered not-found")
            order.record(attempt, outcome, self.wall(), latency * 1000)
            self._after_outcome(order, attempt, outcome)
            try:
                if await self._save(order):
                    # whoever waits on the order (a POST with wait_s) has
                    # its answer sent before the score, metrics and log line
                    # of the call are taken care of
                    await _behind_woken()
            finally:
                self._note(order, attempt, "submit", answer, latency)
            return
        # rate limited throughout: the supplier did not take it
        order.end_attempt(attempt, AttemptState.REJECTED, "rate_limited", self.wall())
        await self._save(order)

    async def _take_limits(self, supplier: str, order: Order) -> bool:
        limiter = self.router.limiters.get(supplier)
        if limiter is None:
            return False
        while limiter.try_take(self.clock()) is None:
            if self.wall() >= order.deadline_at:
                return False
            await trio.sleep(min(max(limiter.wait_hint(self.clock()), 0.005), 0.05))
        return True

    def _after_outcome(self, order: Order, attempt: Attempt, outcome: Outcome) -> None:
        if outcome.kind is Kind.DELIVERED and order.unit_price is not None:
            self.router.board.spend(attempt.supplier, order.unit_price * order.request.quantity)
            self._check_ceiling(order)

    def _check_ceiling(self, order: Order) -> None:
        ceiling = order.request.max_price
        if ceiling is not None and order.unit_price is not None and order.unit_price > ceiling:
            log.error(
                "order %s: supplier %s charged %s per unit, above the ceiling %s",
                order.order_id,
                order.supplier,
                order.unit_price,
                ceiling,
            )

    async def _follow(self, order: Order, attempt: Attempt) -> None:
        """Query a PENDING or UNKNOWN attempt on its plugin's schedule until
        the answer is definitive. Never fails over on its own: only
        DELIVERED, FAILED or a NOT_FOUND that outlasted the grace end it."""
        plugin = self.clients.get(attempt.supplier)
        if plugin is None:
            order.need_attention(
                "supplier_removed",
                f"attempt {attempt.key} is live at {attempt.supplier}, which is no longer configured",
                self.wall(),
            )
            await self._save(order)
            return
        schedule = plugin.schedule
        limit = self.config.orders.reconcile_limit_s
        # a supplier that calls back settles a PENDING attempt itself (and
        # its callback wakes this task): queries are only the safety net
        calls_back = self.callback_base is not None and hasattr(plugin, "parse_callback")
        delay = schedule.first_query_s
        queries = 0
        not_found_since: float | None = None
        while attempt.live:
            now = self.wall()
            if now - attempt.started_at >= limit:
                order.need_attention(
                    "reconcile_limit",
                    f"attempt {attempt.key} at {attempt.supplier} was still {attempt.state}"
                    f" after {limit:g} s",
                    now,
                )
                await self._save(order)
                return
            wait = delay
            if calls_back and attempt.state is AttemptState.PENDING:
                wait = max(delay, self.config.orders.callback_wait_s)
            # until the next query is due, or a callback arrives (``_nudge``)
            await self._naps.nap(attempt.key, min(wait, max(0.0, attempt.started_at + limit - now)))
            if not attempt.live:
                return  # a callback answered first
            # the first query after first_query_s, the next after interval_s,
            # then growing by backoff
            delay = (
                schedule.interval_s
                if queries == 0
                else min(delay * schedule.backoff, schedule.max_interval_s)
            )
            queries += 1
            outcome = await self._query(order, attempt)
            if not attempt.live:
                return
            now = self.wall()
            if outcome.kind in (Kind.DELIVERED, Kind.FAILED):
                order.record(attempt, outcome, now)
                self._after_outcome(order, attempt, outcome)
                await self._save(order)
            elif outcome.kind is Kind.PENDING:
                not_found_since = None
                if attempt.state is not AttemptState.PENDING:
                    order.record(attempt, outcome, now)
                    await self._save(order)
            elif outcome.kind is Kind.NOT_FOUND:
                not_found_since = now if not_found_since is None else not_found_since
                if now - max(not_found_since, attempt.started_at) >= schedule.not_found_grace_s:
                    order.end_attempt(attempt, AttemptState.FAILED, "not_found", now)
                    # the supplier lost or never took an order it was sent
                    self.router.board.observe(
                        attempt.supplier, order.request.sku, Failed("not_found"), self.clock()
                    )
                    await self._save(order)
            elif outcome.kind is Kind.RATE_LIMITED:
                retry_after = getattr(outcome, "retry_after", None)
                delay = max(delay, min(retry_after or 0.0, schedule.max_interval_s))
            else:
                # UNKNOWN, or an answer a query cannot give (REJECTED,
                # INVALID): the attempt's fate is still open
                not_found_since = None
                if outcome.kind is not Kind.UNKNOWN:
                    log.warning("order %s: query answered %s; still following", order.order_id, outcome.kind)


__all__ = ["Dispatcher", "NotReady", "OrderConflict", "Overloaded", "TransitionError", "mask"]
