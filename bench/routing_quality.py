#!/usr/bin/env python
"""Routing quality: kamen-router's real ``Router`` against the ways card
shops and well-known proxies choose an upstream, in virtual time.

A discrete-event simulation (a heap of events, a seeded RNG, no sleeping)
runs the same order stream through the same failover loop once per policy,
so the only difference between two rows of a scenario is which supplier
each policy picks. One simulated half hour takes a fraction of a second;
the whole table (7 scenarios x 6 policies x 10 replications) well under a
minute on two cores.

The failover loop (every policy, the same code, as ``dispatch.py`` does it)
---------------------------------------------------------------------------
* an order asks its policy for a supplier; REJECTED or FAILED fail over to
  the next, excluding suppliers this order already tried;
* UNKNOWN (a submit that timed out, a 502) never fails over: the attempt is
  queried on the plugin's schedule (first after 0.5 s, then x1.5 up to
  30 s) until DELIVERED or FAILED, or until NOT_FOUND has lasted the
  plugin's 60 s grace. This is a safety rule, not a policy choice, so a
  supplier that hangs holds every order sent to it for a while;
* RATE_LIMITED is retried at the same supplier after ``retry_after`` (up
  to five tries, at most 5 s each), then the order fails over;
* INVALID fails the order at once; such orders are counted apart and in no
  policy's figures;
* no new attempt starts after the order's deadline. A delivery that
  arrives later is still paid for but counts as undelivered.
* every reply, to a submit or to a query, is shown to the policy (the
  daemon feeds every reply to ``Router.board.observe``).

Policies
--------
``kamen-router``   the real ``kamen_router.routing.Router`` with its default
                   ``Policy`` and ``ScoringConfig``, driven like the daemon:
                   ``choose`` -> submit -> ``board.observe`` on every reply ->
                   ``release`` after the submit; ``board.spend`` on delivery;
                   ``board.set_balance`` every 60 s and ``set_catalog_entry``
                   every 300 s from each supplier that answers; an order
                   whose candidates are all at their limits waits and asks
                   again when the router's ``wait_hint`` says (waiting
                   orders ask in arrival order; the daemon's polls every
                   50 ms come in no order).
``static``         the priority list a shop configures by hand (cheapest
                   first at setup time), failing over on error; never
                   learns anything, never changes the list.
``cheapest``       LiteLLM's cost-based routing: the cheapest known price
                   (configured, then the catalog every 300 s), no health.
``litellm``        ``cheapest`` plus LiteLLM's cooldown: a supplier with more
                   than 50% failures in the current minute and at least 5
                   requests that minute is cooled for 5 s, then simply
                   returns. Every reply that is not a success counts as a
                   failure, RATE_LIMITED included (a 429 is an exception to
                   LiteLLM). An order whose candidates are all cooled waits
                   for the first to return.
``envoy``          ``cheapest`` plus Envoy's outlier detection with its
                   defaults: 5 consecutive errors (5xx and local-origin
                   errors: FAILED, UNKNOWN, unreachable, maintenance) eject
                   a host for 30 s times the number of ejections, at most
                   300 s; sweeps every 10 s return hosts whose time is up and
                   lower the multiplier of healthy ones; max_ejection_percent
                   10%, which lets one host out at a time.
``oracle``         knows every supplier's true state at each instant (up or
                   down, success probability, price, balance, free rate
                   tokens) and ranks by the router's own objective with the
                   true values. It does not know the future, so it is a
                   reference, not a bound.

Metrics (one row per scenario and policy)
-----------------------------------------
Each row sums ``--runs`` replications (default 10: seeds SEED..SEED+9, each
its own order stream and supplier draws, the same for every policy). One
undelivered order moves a single run's combined figure by about 0.27, more
than most differences in price, so single runs would mostly rank noise.

success     share of orders (invalid ones aside) delivered by their deadline
cost/unit   total paid to suppliers / units delivered by their deadline;
            a delivery after the deadline is paid for all the same
p95         95th percentile of arrival-to-delivery time of those deliveries
failed      attempts that did not deliver (REJECTED, FAILED, gave up on
            RATE_LIMITED, or UNKNOWN that never delivered)
combined    (total paid + penalty x undelivered orders) / delivered units,
            where penalty = ``--penalty-factor`` (default 10) x the mean
            configured unit price (985.75 here). Lower is better.

The world
---------
One sku (a 100-yuan mobile top-up), Poisson arrivals at 2 orders/s for
30 minutes (``--duration``) plus a drain, 30% of orders with a 60 s deadline
("instant" products) and 70% with the default 600 s, 10% with a price
ceiling of 99.00 (the dearest supplier is above it), 0.3% with an invalid
account. Four suppliers:

========  ======  =======  ======  =========  ===========================
supplier  price   success  rate/s  timeout s  character
========  ======  =======  ======  =========  ===========================
kuaika    97.80   0.97     10      10         cheapest, slowest
yunka     98.30   0.985    20      8          mid
jinka     98.80   0.99     30      8          mid
fulu      99.40   0.995    50      6          dearest, steadiest
========  ======  =======  ======  =========  ===========================

An accepted order is delivered at the submit reply (30%) or after 2-20 s of
processing (PENDING, then DELIVERED on a query). A failure is reported at
the submit reply (half) or as FAILED 10-60 s later. 1% of submit replies
are lost (UNKNOWN after the timeout; the supplier did take the order and a
query tells). The rate limit is a token bucket (burst = one second's worth)
enforced by the supplier with RATE_LIMITED(retry_after=1); the configured
limits equal the real ones. The prepaid balance is debited on acceptance and
refunded on failure; an order it cannot cover is REJECTED
insufficient_balance. A supplier that hangs (down) answers nothing until its
timeout; half the submits it swallowed reached it and are processed when it
comes back, the rest are NOT_FOUND. Outcomes are drawn per (order,
supplier) from the seed, so two policies that send an order to the same
supplier in the same state get the same result (common random numbers):
what differs between rows is what the policies chose, plus the luck of
orders that different choices sent to different suppliers.

Scenarios and their assumptions
-------------------------------
steady     nothing changes.
outage     the cheapest supplier hangs from minute 10 to minute 15 (every
           request times out), then works again.
degrade    the cheapest supplier's success falls linearly from 0.97 at
           minute 5 to 0.35 at minute 25 and stays there; its share of lost
           replies rises from 1% to 10% with it (a struggling supplier times
           out more).
price      45 s after the catalog refresh of minute 10 the cheapest raises
           its price to 99.20 (dearer than all but one); 45 s after that of
           minute 20 jinka cuts its price to 97.40 (now the cheapest).
           Catalogs show a change at their next refresh (every 5 minutes);
           what a delivery is charged shows it at once.
balance    the cheapest supplier's prepaid balance covers about 1,100 orders
           and runs out near minute 9; nobody tops it up during the run
           (a top-up is a bank transfer and an operator's hand).
flapping   the cheapest supplier hangs for 40 s out of every 160 s from
           minute 5 to minute 25.
burst      a flash sale at minute 10: 40 orders/s for 60 s, four times the
           cheapest supplier's rate limit, then back to 2/s.

Run ``python bench/routing_quality.py`` for a table and a chart
(``bench/out/routing_quality.png``, needs matplotlib), ``--json`` for the
rows as a JSON list, ``--scenario NAME`` / ``--policy NAME`` to run a part,
``--duration`` for longer or shorter streams, ``--runs`` and ``--seed`` for
other replications, ``--check`` to exit 1 when kamen-router is not the best
non-oracle policy in every scenario or its steady-state cost per delivered
unit is more than 3% above the oracle's.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import itertools
import json
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from kamen_router.config import Limits, Offer, SupplierConfig
from kamen_router.outcome import (
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    Kind,
    NotFound,
    Outcome,
    Pending,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.plugin import QuerySchedule
from kamen_router.routing import Choice, Policy, Router

SKU = "mobile-cmcc-100"
#: the plugin's query schedule (the reference sim plugin's values)
SCHEDULE = QuerySchedule(first_query_s=0.5, backoff=1.5, max_interval_s=30.0, not_found_grace_s=60.0)
#: dispatch.py: longest RATE_LIMITED wait honoured, and submits per attempt
MAX_RATE_LIMIT_WAIT_S = 5.0
RATE_LIMIT_TRIES = 5
#: dispatch.py retries a refused connection twice (0.2 s, 0.4 s) before giving up
UNREACHABLE_S = 0.6
BALANCE_REFRESH_S = 60.0
CATALOG_REFRESH_S = 300.0
#: after the last arrival, how long the simulation goes on settling orders
DRAIN_S = 900.0
#: replications per scenario and policy: one undelivered order moves the
#: combined figure of a single run by about a quarter of a yuan, more than
#: most cost differences, so rows sum several order streams
RUNS = 10
CENT = Decimal("0.01")
#: draws per order and supplier: at most six for a submit, one for queries
_DRAWS = 7

# ------------------------------------------------------------------ the world


@functools.cache
def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


@dataclass
class Spec:
    """One supplier's true behaviour (prices in yuan, times in seconds)."""

    name: str
    price: float
    success: float
    rate_per_s: float
    max_in_flight: int
    timeout_s: float
    latency_s: tuple[float, float]
    instant: float = 0.3
    process_s: tuple[float, float] = (2.0, 20.0)
    fail_fast: float = 0.5
    fail_s: tuple[float, float] = (10.0, 60.0)
    lost_reply: float = 0.01
    balance: float = 1e9
    #: (from_t, price)
    price_changes: list[tuple[float, float]] = field(default_factory=list)
    #: (t0, t1, success at t1, lost_reply at t1): a linear slide
    slide: tuple[float, float, float, float] | None = None
    #: (start, end): the supplier hangs
    outages: list[tuple[float, float]] = field(default_factory=list)
    reach_share: float = 0.5

    def price_at(self, t: float) -> Decimal:
        price = self.price
        for start, value in self.price_changes:
            if t >= start:
                price = value
        return _money(price)

    def _slide(self, t: float) -> float:
        if self.slide is None or t <= self.slide[0]:
            return 0.0
        t0, t1, _, _ = self.slide
        return min(1.0, (t - t0) / (t1 - t0))

    def success_at(self, t: float) -> float:
        if self.slide is None:
            return self.success
        return self.success + (self.slide[2] - self.success) * self._slide(t)

    def lost_at(self, t: float) -> float:
        if self.slide is None:
            return self.lost_reply
        return self.lost_reply + (self.slide[3] - self.lost_reply) * self._slide(t)

    def down_until(self, t: float) -> float | None:
        """End of the outage under way at ``t``, or None when up."""
        for start, end in self.outages:
            if start <= t < end:
                return end
        return None

    def config(self) -> SupplierConfig:
        return SupplierConfig(
            name=self.name,
            file=Path(f"suppliers.d/{self.name}.yaml"),
            plugin="sim",
            enabled=True,
            endpoint=None,
            credentials={},
            limits=Limits(
                rate_per_s=self.rate_per_s, max_in_flight=self.max_in_flight, timeout_s=self.timeout_s
            ),
            offers={SKU: Offer(sku=SKU, product_id=f"{self.name}-100", price=self.price_at(0.0))},
        )


def base_suppliers() -> dict[str, Spec]:
    specs = [
        Spec("kuaika", 97.80, 0.97, 10, 40, 10.0, (0.15, 0.6)),
        Spec("yunka", 98.30, 0.985, 20, 60, 8.0, (0.1, 0.4)),
        Spec("jinka", 98.80, 0.99, 30, 80, 8.0, (0.1, 0.3)),
        Spec("fulu", 99.40, 0.995, 50, 100, 6.0, (0.05, 0.25), lost_reply=0.005),
    ]
    return {s.name: s for s in specs}


@dataclass
class Scenario:
    name: str
    suppliers: dict[str, Spec]
    #: (from_t, orders per second)
    load: list[tuple[float, float]]
    duration_s: float


def scenarios(duration_s: float) -> dict[str, Scenario]:
    d = duration_s
    out: dict[str, Scenario] = {}

    def make(name: str, load: list[tuple[float, float]] | None = None, **changes: Any) -> Scenario:
        sups = base_suppliers()
        for key, value in changes.items():
            supplier, attr = key.split("__")
            setattr(sups[supplier], attr, value)
        sc = Scenario(name, sups, load or [(0.0, 2.0)], d)
        out[name] = sc
        return sc

    make("steady")
    make("outage", kuaika__outages=[(d / 3, d / 2)])
    make("degrade", kuaika__slide=(d / 6, d * 5 / 6, 0.35, 0.10))
    make(
        "price",
        kuaika__price_changes=[(d / 3 + 45.0, 99.20)],
        jinka__price_changes=[(d * 2 / 3 + 45.0, 97.40)],
    )
    make("balance", kuaika__balance=97.80 * 1100)
    flaps = []
    t = d / 6
    while t < d * 5 / 6:
        flaps.append((t + 120.0, t + 160.0))
        t += 160.0
    make("flapping", kuaika__outages=flaps)
    make("burst", load=[(0.0, 2.0), (d / 3, 40.0), (d / 3 + 60.0, 2.0)])
    return out


@dataclass
class Record:
    """What a supplier knows of one order it took."""

    price: Decimal
    success: bool
    ready_at: float


#: the golden ratio's fraction: successive query delays of one attempt walk
#: its latency range by this step (a cheap, deterministic low-discrepancy walk)
_STEP = 0.6180339887498949


class Draws:
    """What chance decides for one order at one supplier, drawn up front
    from the seed, so that every policy that sends this order there meets
    the same luck. ``next()`` hands them out in a fixed order."""

    __slots__ = ("i", "u")

    def __init__(self, u: tuple[float, ...]) -> None:
        self.u = u
        self.i = 0

    def next(self) -> float:
        self.i += 1
        return self.u[self.i - 1]

    def uniform(self, lo_hi: tuple[float, float]) -> float:
        lo, hi = lo_hi
        return lo + (hi - lo) * self.next()


class Upstream:
    """A supplier as the router meets it: replies, delays, limits, money."""

    def __init__(self, spec: Spec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.balance = Decimal(str(spec.balance)).quantize(CENT)
        self.tokens = spec.rate_per_s
        self.tokens_at = 0.0
        self.records: dict[int, Record] = {}
        self.queries: dict[int, int] = {}

    def _refill(self, now: float) -> None:
        burst = max(1.0, self.spec.rate_per_s)
        if now > self.tokens_at:
            self.tokens = min(burst, self.tokens + (now - self.tokens_at) * self.spec.rate_per_s)
            self.tokens_at = now

    def has_token(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def token_due(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.spec.rate_per_s

    def submit(self, order: Order, now: float) -> tuple[float, Outcome]:
        spec = self.spec
        rng = Draws(order.draws[spec.name])
        latency = rng.uniform(spec.latency_s)
        recovery = spec.down_until(now)
        if recovery is not None:
            if rng.next() < spec.reach_share and not order.invalid:
                price = spec.price_at(now)
                success = rng.next() < spec.success_at(recovery)
                ready = recovery + rng.uniform(spec.process_s if success else spec.fail_s)
                self.records[order.id] = Record(price, success, ready)
                self.balance -= price
            return spec.timeout_s, Unknown("no reply in time")
        if order.invalid:
            return latency, Invalid(InvalidReason.INVALID_ACCOUNT)
        price = spec.price_at(now)
        if order.max_price is not None and price > order.max_price:
            return latency, Rejected(RejectReason.PRICE_ABOVE_CEILING)
        self._refill(now)
        if self.tokens < 1.0:
            return latency, RateLimited(retry_after=1.0)
        self.tokens -= 1.0
        if self.balance < price:
            return latency, Rejected(RejectReason.INSUFFICIENT_BALANCE)
        self.balance -= price
        success = rng.next() < spec.success_at(now)
        lost = rng.next() < spec.lost_at(now)
        if success:
            at_once = rng.next() < spec.instant
            ready = now + (latency if at_once else rng.uniform(spec.process_s))
            self.records[order.id] = Record(price, True, ready)
            if lost:
                return spec.timeout_s, Unknown("no reply in time")
            return latency, (Delivered(unit_cost=price) if at_once else Pending())
        at_once = rng.next() < spec.fail_fast
        ready = now + (latency if at_once else rng.uniform(spec.fail_s))
        self.records[order.id] = Record(price, False, ready)
        if at_once:
            self.balance += price
        if lost:
            return spec.timeout_s, Unknown("no reply in time")
        return latency, (Failed("failed") if at_once else Pending())

    def query(self, order: Order, now: float) -> tuple[float, Outcome]:
        spec = self.spec
        # per order and supplier, so that policies that query the same
        # attempt alike see the same delays
        n = self.queries[order.id] = self.queries.get(order.id, 0) + 1
        lo, hi = spec.latency_s
        latency = lo + (hi - lo) * ((order.draws[spec.name][-1] + n * _STEP) % 1.0)
        if spec.down_until(now) is not None:
            return spec.timeout_s, Unknown("no reply in time")
        rec = self.records.get(order.id)
        if rec is None:
            return latency, NotFound()
        if now + latency < rec.ready_at:
            return latency, Pending()
        if rec.success:
            return latency, Delivered(unit_cost=rec.price)
        if rec.ready_at > 0:  # refund once
            self.balance += rec.price
            rec.ready_at = -1.0
        return latency, Failed("failed")


# --------------------------------------------------------------- the orders


@dataclass(eq=False)
class Order:
    id: int
    arrive: float
    deadline: float
    max_price: Decimal | None
    invalid: bool
    #: per supplier, the chances this order meets there (see ``Draws``)
    draws: dict[str, tuple[float, ...]] = field(default_factory=dict)
    tried: set[str] = field(default_factory=set)
    done: bool = False
    waiting: bool = False


@dataclass
class Attempt:
    order: Order
    supplier: str
    price: Decimal
    started: float
    tries: int = 0
    delay: float = SCHEDULE.first_query_s
    not_found_since: float | None = None


def order_stream(sc: Scenario, seed: int) -> list[Order]:
    rng = random.Random(f"{seed}:{sc.name}:orders")
    names = sorted(sc.suppliers)
    orders: list[Order] = []
    load = [*sorted(sc.load), (sc.duration_s, 0.0)]
    for (start, rate), (end, _) in itertools.pairwise(load):
        t = start
        while rate > 0:
            t += rng.expovariate(rate)
            if t >= end:
                break
            deadline = 60.0 if rng.random() < 0.3 else 600.0
            ceiling = Decimal("99.00") if rng.random() < 0.1 else None
            invalid = rng.random() < 0.003
            draws = {name: tuple(rng.random() for _ in range(_DRAWS)) for name in names}
            orders.append(Order(len(orders), t, t + deadline, ceiling, invalid, draws))
    return orders


# ---------------------------------------------------------------- policies


@dataclass
class Pick:
    supplier: str
    price: Decimal


@dataclass
class Wait:
    seconds: float


Decision = Pick | Wait | None

_SUCCESS = (Kind.DELIVERED, Kind.PENDING)


class Base:
    """What every policy is told; subclasses keep what they use."""

    name = "base"
    oracle = False

    def __init__(self, sc: Scenario, world: dict[str, Upstream], seed: int) -> None:
        self.sc = sc
        self.world = world
        self.known = {n: s.price_at(0.0) for n, s in sc.suppliers.items()}

    def choose(self, order: Order, now: float) -> Decision:
        raise NotImplementedError

    def take_retry(self, supplier: str, now: float) -> float | None:
        """A slot for a RATE_LIMITED retry: None when taken, else seconds to wait."""
        return None

    def observe(self, supplier: str, outcome: Outcome, now: float, latency: float, cost: Decimal) -> None:
        pass

    def release(self, supplier: str) -> None:
        pass

    def delivered(self, supplier: str, price: Decimal) -> None:
        pass

    def balance_refresh(self, supplier: str, balance: Decimal, now: float) -> None:
        pass

    def catalog_refresh(self, supplier: str, price: Decimal, now: float) -> None:
        self.known[supplier] = price

    def _by_price(self, order: Order) -> list[str]:
        names = [
            n
            for n in sorted(self.known, key=lambda n: (self.known[n], n))
            if n not in order.tried and (order.max_price is None or self.known[n] <= order.max_price)
        ]
        return names


class Static(Base):
    name = "static"

    def __init__(self, sc: Scenario, world: dict[str, Upstream], seed: int) -> None:
        super().__init__(sc, world, seed)
        self.order = sorted(self.known, key=lambda n: (self.known[n], n))

    def catalog_refresh(self, supplier: str, price: Decimal, now: float) -> None:
        pass  # the list is the shop's, set by hand

    def choose(self, order: Order, now: float) -> Decision:
        for n in self.order:
            if n not in order.tried and (order.max_price is None or self.known[n] <= order.max_price):
                return Pick(n, self.known[n])
        return None


class Cheapest(Base):
    name = "cheapest"

    def choose(self, order: Order, now: float) -> Decision:
        names = self._by_price(order)
        return Pick(names[0], self.known[names[0]]) if names else None


class LiteLLM(Base):
    name = "litellm"
    COOLDOWN_S = 5.0
    THRESHOLD = 0.5
    MIN_REQUESTS = 5

    def __init__(self, sc: Scenario, world: dict[str, Upstream], seed: int) -> None:
        super().__init__(sc, world, seed)
        self.minute: dict[str, tuple[int, int, int]] = {}
        self.cooled_until: dict[str, float] = {}

    def observe(self, supplier: str, outcome: Outcome, now: float, latency: float, cost: Decimal) -> None:
        if outcome.kind is Kind.INVALID:
            return
        minute = int(now // 60)
        m, ok, bad = self.minute.get(supplier, (minute, 0, 0))
        if m != minute:
            ok = bad = 0
        if outcome.kind in _SUCCESS or outcome.kind is Kind.NOT_FOUND:
            ok += 1
        else:
            bad += 1
            total = ok + bad
            if total >= self.MIN_REQUESTS and bad / total > self.THRESHOLD:
                self.cooled_until[supplier] = now + self.COOLDOWN_S
        self.minute[supplier] = (minute, ok, bad)

    def choose(self, order: Order, now: float) -> Decision:
        names = self._by_price(order)
        ready = [n for n in names if self.cooled_until.get(n, 0.0) <= now]
        if ready:
            return Pick(ready[0], self.known[ready[0]])
        if names:
            return Wait(min(self.cooled_until[n] for n in names) - now)
        return None


class Envoy(Base):
    name = "envoy"
    CONSECUTIVE = 5
    BASE_S = 30.0
    MAX_S = 300.0
    INTERVAL_S = 10.0
    MAX_EJECTED = 1  # max_ejection_percent 10% of 4 hosts, at least one

    def __init__(self, sc: Scenario, world: dict[str, Upstream], seed: int) -> None:
        super().__init__(sc, world, seed)
        self.consecutive = dict.fromkeys(self.known, 0)
        self.multiplier = dict.fromkeys(self.known, 0)
        self.ejected_until: dict[str, float] = {}
        self.swept = 0.0

    def _sweep(self, now: float) -> None:
        while self.swept + self.INTERVAL_S <= now:
            self.swept += self.INTERVAL_S
            for n in self.known:
                until = self.ejected_until.get(n)
                if until is not None:
                    if self.swept >= until:
                        del self.ejected_until[n]
                elif self.multiplier[n] > 0:
                    self.multiplier[n] -= 1

    def observe(self, supplier: str, outcome: Outcome, now: float, latency: float, cost: Decimal) -> None:
        self._sweep(now)
        kind = outcome.kind
        error = kind in (Kind.FAILED, Kind.UNKNOWN) or (
            kind is Kind.REJECTED and outcome.reason in (RejectReason.UNREACHABLE, RejectReason.MAINTENANCE)
        )
        if not error:
            self.consecutive[supplier] = 0
            return
        self.consecutive[supplier] += 1
        if (
            self.consecutive[supplier] >= self.CONSECUTIVE
            and supplier not in self.ejected_until
            and len(self.ejected_until) < self.MAX_EJECTED
        ):
            self.multiplier[supplier] += 1
            self.ejected_until[supplier] = now + min(self.MAX_S, self.BASE_S * self.multiplier[supplier])
            self.consecutive[supplier] = 0

    def choose(self, order: Order, now: float) -> Decision:
        self._sweep(now)
        names = self._by_price(order)
        healthy = [n for n in names if n not in self.ejected_until]
        pick = healthy[0] if healthy else (names[0] if names else None)  # panic: all hosts
        return Pick(pick, self.known[pick]) if pick else None


class Oracle(Base):
    name = "oracle"
    oracle = True

    def __init__(self, sc: Scenario, world: dict[str, Upstream], seed: int) -> None:
        super().__init__(sc, world, seed)
        self.policy = Policy()

    def choose(self, order: Order, now: float) -> Decision:
        scored = []
        any_down = False
        for name, up in self.world.items():
            spec = up.spec
            price = spec.price_at(now)
            if name in order.tried or (order.max_price is not None and price > order.max_price):
                continue
            if spec.down_until(now) is not None:
                any_down = True
                continue
            if up.balance < price:
                continue
            p = max(1e-3, spec.success_at(now))
            latency = sum(spec.latency_s) / 2
            pol = self.policy
            score = float(price) * (1 + pol.failure_cost * (1 - p) / p + pol.latency_cost_per_s * latency / p)
            scored.append((score, name, price))
        scored.sort()
        for _, name, price in scored:
            if self.world[name].has_token(now):
                return Pick(name, price)
        if scored:
            return Wait(max(0.005, min(self.world[n].token_due(now) for _, n, _ in scored)))
        return Wait(1.0) if any_down else None


class Kamen(Base):
    """The real router, driven the way dispatch.py drives it."""

    name = "kamen-router"

    def __init__(self, sc: Scenario, world: dict[str, Upstream], seed: int) -> None:
        super().__init__(sc, world, seed)
        configs = {s.name: s.config() for s in sc.suppliers.values()}
        self.router = Router(configs, rng=random.Random(f"{seed}:router"))

    def choose(self, order: Order, now: float) -> Decision:
        choice = self.router.choose(SKU, now, max_price=order.max_price, tried=order.tried, quantity=1)
        if isinstance(choice, Choice):
            return Pick(choice.candidate.supplier, choice.candidate.unit_price)
        if choice.candidates:
            return Wait(self.router.wait_hint(choice, now))
        return None

    def take_retry(self, supplier: str, now: float) -> float | None:
        limiter = self.router.limiters[supplier]
        if limiter.can_submit(now):
            limiter.take_submit(now)
            return None
        return min(max(limiter.wait_hint(now), 0.005), 0.05)

    def observe(self, supplier: str, outcome: Outcome, now: float, latency: float, cost: Decimal) -> None:
        self.router.board.observe(supplier, SKU, outcome, now, latency_s=latency, cost=cost)

    def release(self, supplier: str) -> None:
        self.router.release(supplier)

    def delivered(self, supplier: str, price: Decimal) -> None:
        self.router.board.spend(supplier, price)

    def balance_refresh(self, supplier: str, balance: Decimal, now: float) -> None:
        self.router.board.set_balance(supplier, balance, now)

    def catalog_refresh(self, supplier: str, price: Decimal, now: float) -> None:
        self.router.board.set_catalog_entry(supplier, SKU, price=price, available=True, now=now)


POLICIES: dict[str, type[Base]] = {p.name: p for p in (Kamen, Static, Cheapest, LiteLLM, Envoy, Oracle)}


# ------------------------------------------------------------- simulation


@dataclass
class Tally:
    orders: int = 0
    invalid: int = 0
    delivered: int = 0
    late: int = 0
    paid: Decimal = Decimal(0)
    attempts: int = 0
    failed_attempts: int = 0
    unknown_replies: int = 0
    ttd: list[float] = field(default_factory=list)
    by_supplier: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(self, sc: Scenario, policy_name: str, seed: int) -> None:
        self.sc = sc
        self.world = {n: Upstream(s, seed) for n, s in sc.suppliers.items()}
        self.policy = POLICIES[policy_name](sc, self.world, seed)
        self.orders = order_stream(sc, seed)
        self.heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.now = 0.0
        self.tally = Tally()
        self.waiting: deque[Order] = deque()
        self.wake_at = math.inf

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, args))

    def run(self) -> Tally:
        for o in self.orders:
            self.at(o.arrive, self.route, o)
        t = 0.0
        while t <= self.sc.duration_s + DRAIN_S:
            self.at(t, self.refresh, t % CATALOG_REFRESH_S == 0)
            t += BALANCE_REFRESH_S
        end = self.sc.duration_s + DRAIN_S
        while self.heap:
            t, _, fn, args = heapq.heappop(self.heap)
            if t > end:
                break
            self.now = t
            fn(*args)
        for o in self.orders:
            if o.invalid:
                self.tally.invalid += 1
            else:
                self.tally.orders += 1
        return self.tally

    # --------------------------------------------------------- background

    def refresh(self, catalog: bool) -> None:
        for name, up in self.world.items():
            if up.spec.down_until(self.now) is not None:
                continue  # the refresh call fails like every other
            self.policy.balance_refresh(name, up.balance, self.now)
            if catalog:
                self.policy.catalog_refresh(name, up.spec.price_at(self.now), self.now)

    # ------------------------------------------------------------- orders

    def finish(self, order: Order) -> None:
        order.done = True
        order.waiting = False

    def route(self, order: Order) -> None:
        if order.done:
            return
        if self.now >= order.deadline:
            self.finish(order)
            return
        decision = self.policy.choose(order, self.now)
        if isinstance(decision, Pick):
            self.start(order, decision)
        elif isinstance(decision, Wait):
            if not order.waiting:
                order.waiting = True
                self.waiting.append(order)
            self.wake(self.now + decision.seconds)
        else:
            self.finish(order)

    def wake(self, t: float) -> None:
        if t < self.wake_at:
            self.wake_at = t
            self.at(t, self.on_wake, t)

    def on_wake(self, t: float) -> None:
        if t != self.wake_at:
            return
        self.wake_at = math.inf
        while self.waiting:
            order = self.waiting[0]
            if order.done or not order.waiting:
                self.waiting.popleft()
                continue
            if self.now >= order.deadline:
                self.waiting.popleft()
                self.finish(order)
                continue
            decision = self.policy.choose(order, self.now)
            if isinstance(decision, Wait):
                self.wake(self.now + max(decision.seconds, 0.005))
                return
            self.waiting.popleft()
            order.waiting = False
            if isinstance(decision, Pick):
                self.start(order, decision)
            else:
                self.finish(order)

    def start(self, order: Order, pick: Pick) -> None:
        self.tally.attempts += 1
        attempt = Attempt(order, pick.supplier, pick.price, self.now)
        self.submit(attempt)

    def submit(self, attempt: Attempt) -> None:
        delay, outcome = self.world[attempt.supplier].submit(attempt.order, self.now)
        self.at(self.now + delay, self.on_submit, attempt, outcome, delay)

    def _observe(self, attempt: Attempt, outcome: Outcome, latency: float) -> None:
        if outcome.kind is Kind.UNKNOWN:
            self.tally.unknown_replies += 1
        self.policy.observe(attempt.supplier, outcome, self.now, latency, attempt.price)

    def on_submit(self, attempt: Attempt, outcome: Outcome, latency: float) -> None:
        self._observe(attempt, outcome, latency)
        if attempt.tries:
            self.policy.release(attempt.supplier)
        order = attempt.order
        if isinstance(outcome, RateLimited):
            wait = outcome.retry_after if outcome.retry_after is not None else 1.0
            if (
                attempt.tries + 1 < RATE_LIMIT_TRIES
                and wait <= MAX_RATE_LIMIT_WAIT_S
                and self.now + wait < order.deadline
            ):
                attempt.tries += 1
                self.at(self.now + wait, self.retry, attempt)
                return
            self.end_submit(attempt)
            self.failover(attempt)
            return
        self.end_submit(attempt)
        self.settle(attempt, outcome)

    def retry(self, attempt: Attempt) -> None:
        if self.now >= attempt.order.deadline:
            self.end_submit(attempt)
            self.failover(attempt)
            return
        wait = self.policy.take_retry(attempt.supplier, self.now)
        if wait is not None:
            self.at(self.now + wait, self.retry, attempt)
            return
        self.submit(attempt)

    def end_submit(self, attempt: Attempt) -> None:
        """The submit loop is over: give back the slot taken by ``choose``."""
        self.policy.release(attempt.supplier)
        if self.waiting:
            self.wake(self.now)

    def settle(self, attempt: Attempt, outcome: Outcome) -> None:
        kind = outcome.kind
        if kind is Kind.DELIVERED:
            self.deliver(attempt, outcome)
        elif kind in (Kind.PENDING, Kind.UNKNOWN):
            self.at(self.now + attempt.delay, self.query, attempt)
        elif kind is Kind.INVALID:
            self.finish(attempt.order)
        else:
            self.failover(attempt)

    def failover(self, attempt: Attempt) -> None:
        self.tally.failed_attempts += 1
        attempt.order.tried.add(attempt.supplier)
        self.route(attempt.order)

    def deliver(self, attempt: Attempt, outcome: Outcome) -> None:
        order = attempt.order
        price = outcome.unit_cost if isinstance(outcome, Delivered) and outcome.unit_cost else attempt.price
        self.tally.paid += price
        self.tally.by_supplier[attempt.supplier] = self.tally.by_supplier.get(attempt.supplier, 0) + 1
        self.policy.delivered(attempt.supplier, price)
        if self.now <= order.deadline:
            self.tally.delivered += 1
            self.tally.ttd.append(self.now - order.arrive)
        else:
            self.tally.late += 1
        self.finish(order)

    def query(self, attempt: Attempt) -> None:
        attempt.delay = min(attempt.delay * SCHEDULE.backoff, SCHEDULE.max_interval_s)
        delay, outcome = self.world[attempt.supplier].query(attempt.order, self.now)
        self.at(self.now + delay, self.on_query, attempt, outcome, delay)

    def on_query(self, attempt: Attempt, outcome: Outcome, latency: float) -> None:
        self._observe(attempt, outcome, latency)
        kind = outcome.kind
        if kind is Kind.DELIVERED:
            self.deliver(attempt, outcome)
            return
        if kind is Kind.FAILED:
            self.failover(attempt)
            return
        if kind is Kind.NOT_FOUND:
            since = attempt.not_found_since = attempt.not_found_since or self.now
            if self.now - max(since, attempt.started) >= SCHEDULE.not_found_grace_s:
                self.failover(attempt)
                return
        else:
            attempt.not_found_since = None
        self.at(self.now + attempt.delay, self.query, attempt)


# ------------------------------------------------------------------ report


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def run_one(args: tuple[str, str, int, float]) -> dict[str, Any]:
    """One replication of one scenario under one policy: the raw tally."""
    scenario, policy, seed, duration = args
    sc = scenarios(duration)[scenario]
    t = Simulation(sc, policy, seed).run()
    prices = [s.price_at(0.0) for s in sc.suppliers.values()]
    return {
        "scenario": scenario,
        "policy": policy,
        "mean_price": str(sum(prices, Decimal(0)) / len(prices)),
        "orders": t.orders,
        "invalid": t.invalid,
        "delivered": t.delivered,
        "late": t.late,
        "paid": str(t.paid),
        "attempts": t.attempts,
        "failed_attempts": t.failed_attempts,
        "unknown_replies": t.unknown_replies,
        "ttd": t.ttd,
        "by_supplier": t.by_supplier,
    }


def summarize(tallies: list[dict[str, Any]], penalty_factor: float) -> dict[str, Any]:
    """One row from the replications of a scenario and policy."""
    first = tallies[0]
    orders = sum(t["orders"] for t in tallies)
    delivered = sum(t["delivered"] for t in tallies)
    paid = sum((Decimal(t["paid"]) for t in tallies), Decimal(0))
    penalty = Decimal(str(penalty_factor)) * Decimal(first["mean_price"])
    undelivered = orders - delivered
    units = max(delivered, 1)
    by_supplier: dict[str, int] = {}
    for t in tallies:
        for name, n in t["by_supplier"].items():
            by_supplier[name] = by_supplier.get(name, 0) + n
    p95 = percentile([x for t in tallies for x in t["ttd"]], 0.95)
    return {
        "scenario": first["scenario"],
        "policy": first["policy"],
        "oracle": POLICIES[first["policy"]].oracle,
        "runs": len(tallies),
        "orders": orders,
        "delivered": delivered,
        "undelivered": undelivered,
        "late_deliveries": sum(t["late"] for t in tallies),
        "invalid_orders": sum(t["invalid"] for t in tallies),
        "success_rate": round(delivered / max(orders, 1), 5),
        "cost_per_unit": round(float(paid / units), 4),
        "p95_delivery_s": None if p95 is None else round(p95, 2),
        "attempts": sum(t["attempts"] for t in tallies),
        "failed_attempts": sum(t["failed_attempts"] for t in tallies),
        "unknown_replies": sum(t["unknown_replies"] for t in tallies),
        "penalty_per_undelivered": round(float(penalty), 2),
        "combined": round(float((paid + penalty * undelivered) / units), 4),
        "deliveries_by_supplier": dict(sorted(by_supplier.items())),
    }


def acceptance(rows: list[dict[str, Any]]) -> list[str]:
    """Problems with the issue's acceptance criteria (empty: all hold)."""
    problems = []
    for name in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == name]
        kamen = next(r for r in mine if r["policy"] == Kamen.name)
        for r in mine:
            if not r["oracle"] and r["policy"] != Kamen.name and r["combined"] < kamen["combined"]:
                problems.append(
                    f"{name}: {r['policy']} combined {r['combined']} beats kamen-router's {kamen['combined']}"
                )
        oracle = next((r for r in mine if r["oracle"]), None)
        if (
            name == "steady"
            and oracle is not None
            and kamen["cost_per_unit"] > oracle["cost_per_unit"] * 1.03
        ):
            problems.append(f"steady: cost per unit {kamen['cost_per_unit']} > 1.03 x oracle's")
    return problems


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<9} {'policy':<13} {'success':>8} {'cost/unit':>9} {'p95 s':>6}"
        f" {'failed':>7} {'combined':>9}"
    )
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        if last is not None and r["scenario"] != last:
            lines.append("")
        last = r["scenario"]
        p95 = "-" if r["p95_delivery_s"] is None else f"{r['p95_delivery_s']:.1f}"
        best = min(x["combined"] for x in rows if x["scenario"] == r["scenario"] and not x["oracle"])
        mark = " *" if r["combined"] == best and not r["oracle"] else ""
        lines.append(
            f"{r['scenario']:<9} {r['policy']:<13} {r['success_rate'] * 100:7.2f}% {r['cost_per_unit']:9.3f}"
            f" {p95:>6} {r['failed_attempts']:7d} {r['combined']:9.3f}{mark}"
        )
    penalty = rows[0]["penalty_per_undelivered"] if rows else 0
    lines += [
        "",
        f"combined = (total paid + {penalty} x undelivered orders) / units delivered by their deadline",
        "          (penalty = penalty factor x mean configured price); lower is better;",
        "          * marks the best non-oracle policy of each scenario.",
    ]
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(dict.fromkeys(r["scenario"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    width = 0.8 / len(policies)
    for i, pol in enumerate(policies):
        xs, combined, success = [], [], []
        for j, name in enumerate(names):
            r = next((x for x in rows if x["scenario"] == name and x["policy"] == pol), None)
            o = next((x for x in rows if x["scenario"] == name and x["oracle"]), None)
            if r is None:
                continue
            xs.append(j + (i - len(policies) / 2 + 0.5) * width)
            base = o["combined"] if o else 1.0
            combined.append(r["combined"] / base)
            success.append(r["success_rate"] * 100)
        ax1.bar(xs, combined, width, label=pol)
        ax2.bar(xs, success, width, label=pol)
    ratios = [
        r["combined"] / next(o["combined"] for o in rows if o["scenario"] == r["scenario"] and o["oracle"])
        for r in rows
        if any(o["scenario"] == r["scenario"] and o["oracle"] for o in rows)
    ]
    if ratios:
        ax1.set_ylim(min(ratios) - 0.02, max(ratios) + 0.02)
    ax1.axhline(1.0, color="grey", linewidth=0.8)
    ax1.set_ylabel("combined figure / oracle's")
    ax1.legend(ncol=3, fontsize=8)
    ax1.set_title("Routing quality (lower is better)")
    ax2.set_ylabel("delivered by deadline, %")
    ax2.set_ylim(min(90.0, min(r["success_rate"] * 100 for r in rows) - 1), 100.5)
    ax2.set_xticks(range(len(names)), names)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument(
        "--runs", type=int, default=RUNS, help=f"replications, seeds SEED.. SEED+RUNS-1 (default {RUNS})"
    )
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of arrivals (default 1800)")
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--policy", action="append", help="run only this policy (repeatable)")
    parser.add_argument(
        "--penalty-factor", type=float, default=10.0, help="penalty per undelivered order, in mean prices"
    )
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--check", action="store_true", help="exit 1 unless the acceptance criteria hold")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args(list(argv) if argv is not None else None)
    known = scenarios(args.duration)
    names = args.scenario or list(known)
    for n in names:
        if n not in known:
            parser.error(f"unknown scenario {n!r} (known: {', '.join(known)})")
    pols = args.policy or list(POLICIES)
    for p in pols:
        if p not in POLICIES:
            parser.error(f"unknown policy {p!r} (known: {', '.join(POLICIES)})")
    jobs = [(n, p, args.seed + i, args.duration) for n in names for p in pols for i in range(args.runs)]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            tallies = list(pool.map(run_one, jobs, chunksize=4))
    else:
        tallies = [run_one(j) for j in jobs]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in tallies:
        groups.setdefault((t["scenario"], t["policy"]), []).append(t)
    rows = [summarize(g, args.penalty_factor) for g in groups.values()]
    elapsed = time.perf_counter() - started
    problems = acceptance(rows) if Kamen.name in pols else []
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        print(table(rows))
        print(
            f"\n{len(jobs)} simulations ({args.runs} per row, seeds {args.seed}..{args.seed + args.runs - 1})"
            f" in {elapsed:.1f} s"
        )
        png = chart(rows, args.out / "routing_quality.png")
        print(f"chart: {png}" if png else "chart: skipped (pip install matplotlib)")
        for p in problems:
            print(f"ACCEPTANCE: {p}")
        if not problems and Kamen.name in pols:
            print("acceptance: kamen-router has the best combined figure of the non-oracle policies")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
