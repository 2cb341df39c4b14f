"""Candidates, ranking and the choice of a supplier for one order. Pure: the
``Router`` holds statistics and limits but does no I/O and reads time only
from the ``now`` it is given, so the daemon, the tests and the routing
benchmark all drive the same code.

Ranking is by expected cost of a delivered unit::

    score = price * (1 + failure_cost * (1 - p) / p + latency_cost_per_s * latency / p)

where ``p`` is the success estimate of the offer and ``latency`` its running
mean; ``(1 - p) / p`` is the expected number of failed attempts before a
delivery. Candidates that ask the same price (within ``tie_band``) and
score alike share the load at random. A small ``explore_share`` of orders
goes to a healthy supplier that asks less than the best but ranks below it
on its estimates, so a cheap supplier that recovered is noticed; a dearer
runner-up is never explored, since that costs money on every order and
failover shows its health whenever it is needed. A RATE_LIMITED pause is a
limit like the token bucket: the supplier stays a candidate to wait for.
Every candidate carries the terms that placed it and every excluded
supplier the reason, so a decision can always be explained.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from .money import format_money
from .scoring import Health, Scoreboard, ScoringConfig

if TYPE_CHECKING:
    from .config import SupplierConfig


class Excluded(enum.StrEnum):
    DISABLED = "disabled"
    ABOVE_MAX_PRICE = "above_max_price"
    ALREADY_TRIED = "already_tried"
    EJECTED = "ejected"
    PROBE_IN_FLIGHT = "probe_in_flight"
    OUT_OF_STOCK = "out_of_stock"
    OFF_SHELF = "off_shelf"
    DRAINED = "drained"
    BALANCE_LOW = "balance_low"
    #: no longer given: a RATE_LIMITED pause keeps the supplier a candidate
    #: at its limit (``Candidate.paused_s``), so an order waits instead of
    #: failing for want of a supplier; kept for readers of older rankings
    PAUSED = "rate_limited"
    NO_CLIENT = "no_client"


@attrs.frozen
class Policy:
    """The routing weights of router.yaml's ``routing:`` section."""

    #: cost of one failed attempt, as a share of the unit price
    failure_cost: float = 0.05
    #: cost of one second of expected latency, as a share of the unit price
    latency_cost_per_s: float = 0.002
    #: candidates whose price and score are within this share of the best's
    #: share the load (see ``Router._ties``)
    tie_band: float = 0.002
    #: share of orders sent to a healthy supplier that asks less than the
    #: best but ranks below it, to notice when it is worth its price again
    explore_share: float = 0.02
    #: when every candidate is ejected, try the best of them anyway
    panic: bool = True


@attrs.frozen
class Candidate:
    supplier: str
    product_id: str
    unit_price: Decimal
    configured_price: Decimal
    success: float
    latency_s: float
    failure_term: float
    latency_term: float
    score: float
    health: Health
    in_flight: int
    max_in_flight: int
    tokens: float
    balance: Decimal | None
    #: where ``unit_price`` comes from: "config", "catalog" or "charged"
    #: (what the supplier charged for its last delivery)
    price_source: str = "config"
    #: seconds a RATE_LIMITED reply still holds this supplier back
    paused_s: float = 0.0

    @property
    def at_limit(self) -> bool:
        return self.in_flight >= self.max_in_flight or self.tokens < 1.0 or self.paused_s > 0

    def to_json(self) -> dict[str, object]:
        return {
            "supplier": self.supplier,
            "product_id": self.product_id,
            "unit_price": format_money(self.unit_price),
            "configured_price": format_money(self.configured_price),
            "success": round(self.success, 4),
            "latency_ms": round(self.latency_s * 1000, 1),
            "failure_term": round(self.failure_term, 4),
            "latency_term": round(self.latency_term, 4),
            "score": round(self.score, 4),
            "health": self.health.value,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "tokens": round(self.tokens, 2),
            "balance": None if self.balance is None else format_money(self.balance),
            "price_source": self.price_source,
            "paused_s": round(self.paused_s, 2),
        }


@attrs.frozen
class Exclusion:
    supplier: str
    reason: Excluded
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {"supplier": self.supplier, "reason": self.reason.value, "detail": self.detail or None}


@attrs.frozen
class Ranking:
    sku: str
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]
    #: every candidate is ejected and is being tried anyway
    panic: bool = False

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_json(self) -> dict[str, object]:
        return {
            "sku": self.sku,
            "panic": self.panic,
            "candidates": [c.to_json() for c in self.candidates],
            "excluded": [e.to_json() for e in self.excluded],
        }


@attrs.define
class Limiter:
    """A token bucket for submits and a cap on requests in flight."""

    rate_per_s: float
    max_in_flight: int
    tokens: float = 0.0
    at: float | None = None
    in_flight: int = 0

    @property
    def burst(self) -> float:
        return max(1.0, self.rate_per_s)

    def refill(self, now: float) -> float:
        if self.at is None:
            self.tokens = self.burst
        elif now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now if self.at is None else max(self.at, now)
        return self.tokens

    def can_submit(self, now: float) -> bool:
        return self.in_flight < self.max_in_flight and self.refill(now) >= 1.0

    def take_submit(self, now: float) -> None:
        if not self.can_submit(now):
            raise RuntimeError("limit exceeded")  # a bug in the caller, never input
        self.tokens -= 1.0
        self.in_flight += 1

    def wait_hint(self, now: float) -> float:
        """Seconds until a token is due (in-flight slots free on their own)."""
        tokens = self.refill(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s


@attrs.frozen
class Choice:
    candidate: Candidate
    #: why this one and not the best: "best", "tie", "explore", "overflow", "panic"
    why: str
    ranking: Ranking


class Router:
    """Ranks and chooses suppliers, learns from outcomes, enforces limits."""

    def __init__(
        self,
        suppliers: Mapping[str, SupplierConfig],
        *,
        policy: Policy | None = None,
        scoring: ScoringConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.board = Scoreboard(scoring)
        self.policy = policy or Policy()
        self.rng = rng or random.Random()
        self.limiters: dict[str, Limiter] = {}
        self.suppliers: Mapping[str, SupplierConfig] = {}
        self.available: Collection[str] | None = None
        self.configure(suppliers)

    def configure(
        self,
        suppliers: Mapping[str, SupplierConfig],
        policy: Policy | None = None,
        scoring: ScoringConfig | None = None,
    ) -> None:
        """Apply a (re)loaded configuration; learnt statistics are kept."""
        self.suppliers = suppliers
        if policy is not None:
            self.policy = policy
        if scoring is not None:
            self.board.config = scoring
        for name, sup in suppliers.items():
            limiter = self.limiters.get(name)
            if limiter is None:
                self.limiters[name] = Limiter(sup.limits.rate_per_s, sup.limits.max_in_flight)
            else:
                limiter.rate_per_s = sup.limits.rate_per_s
                limiter.max_in_flight = sup.limits.max_in_flight

    # ------------------------------------------------------------- ranking

    def rank(
        self,
        sku: str,
        now: float,
        *,
        max_price: Decimal | None = None,
        tried: Collection[str] = (),
        quantity: int = 1,
    ) -> Ranking:
        """Every supplier that offers ``sku``, as a candidate with the terms
        of its score or as an exclusion with its reason."""
        policy = self.policy
        board = self.board
        candidates: list[Candidate] = []
        excluded: list[Exclusion] = []
        ejected: list[Candidate] = []
        for sup in self.suppliers.values():
            offer = sup.offers.get(sku)
            if offer is None:
                continue
            off_state = board.offer(sup.name, sku)
            sup_state = board.supplier(sup.name)
            price, source = board.price(sup.name, sku, offer.price, now)
            reason: Excluded | None = None
            detail = ""
            if not sup.enabled:
                reason = Excluded.DISABLED
            elif self.available is not None and sup.name not in self.available:
                reason = Excluded.NO_CLIENT
            elif sup.name in tried:
                reason = Excluded.ALREADY_TRIED
            elif max_price is not None and price > max_price:
                reason, detail = (
                    Excluded.ABOVE_MAX_PRICE,
                    f"{format_money(price)} > {format_money(max_price)}",
                )
            elif off_state.out_until > now:
                reason = Excluded.OFF_SHELF if off_state.out_reason == "off_shelf" else Excluded.OUT_OF_STOCK
            elif sup_state.drained_need is not None:
                reason = Excluded.DRAINED
            elif sup_state.balance is not None and sup_state.balance < price * quantity:
                reason, detail = Excluded.BALANCE_LOW, f"balance {format_money(sup_state.balance)}"
            if reason is not None:
                excluded.append(Exclusion(sup.name, reason, detail))
                continue
            # a RATE_LIMITED pause is a limit like the others: the supplier
            # stays a candidate that the order may wait for
            health, scope = board.health(sup.name, sku, now)
            candidate = self._candidate(sup, sku, offer.product_id, price, offer.price, health, now, source)
            if health is Health.EJECTED:
                excluded.append(Exclusion(sup.name, Excluded.EJECTED, f"{scope} ejected"))
                ejected.append(candidate)
            elif health is Health.PROBING and self._probe_busy(sup.name, sku):
                excluded.append(Exclusion(sup.name, Excluded.PROBE_IN_FLIGHT, f"{scope} probing"))
            else:
                candidates.append(candidate)
        panic = False
        if not candidates and ejected and policy.panic:
            candidates, panic = ejected, True
            excluded = [e for e in excluded if e.reason is not Excluded.EJECTED]
        candidates.sort(key=lambda c: (c.score, c.unit_price, c.supplier))
        excluded.sort(key=lambda e: e.supplier)
        return Ranking(sku, tuple(candidates), tuple(excluded), panic)

    def _probe_busy(self, supplier: str, sku: str) -> bool:
        sup = self.board.supplier(supplier).stats.ejection
        off = self.board.offer(supplier, sku).stats.ejection
        return (sup.probing and sup.probe_in_flight) or (off.probing and off.probe_in_flight)

    def _candidate(
        self,
        sup: SupplierConfig,
        sku: str,
        product_id: str,
        price: Decimal,
        configured: Decimal,
        health: Health,
        now: float,
        source: str = "config",
    ) -> Candidate:
        policy = self.policy
        p = self.board.success(sup.name, sku, now)
        latency = self.board.latency(sup.name, sku)
        failure_term = policy.failure_cost * (1 - p) / p
        latency_term = policy.latency_cost_per_s * latency / p
        limiter = self.limiters[sup.name]
        return Candidate(
            supplier=sup.name,
            product_id=product_id,
            unit_price=price,
            configured_price=configured,
            success=p,
            latency_s=latency,
            failure_term=failure_term,
            latency_term=latency_term,
            score=float(price) * (1 + failure_term + latency_term),
            health=health,
            in_flight=limiter.in_flight,
            max_in_flight=limiter.max_in_flight,
            tokens=limiter.refill(now),
            balance=self.board.supplier(sup.name).balance,
            price_source=source,
            paused_s=max(0.0, self.board.supplier(sup.name).paused_until - now),
        )

    # -------------------------------------------------------------- choice

    def choose(
        self,
        sku: str,
        now: float,
        *,
        max_price: Decimal | None = None,
        tried: Collection[str] = (),
        quantity: int = 1,
    ) -> Choice | Ranking:
        """Pick a supplier and take its limits (a submit token and an
        in-flight slot; give the slot back with ``release``). Returns the
        ``Ranking`` instead when nobody can take the order now: empty
        candidates mean nobody can take it at all, otherwise all are at
        their limits and the caller may wait (``wait_hint``)."""
        ranking = self.rank(sku, now, max_price=max_price, tried=tried, quantity=quantity)
        if not ranking.candidates:
            return ranking
        order = list(ranking.candidates)
        why = "panic" if ranking.panic else "best"
        best = order[0]
        ties = self._ties(order) if not ranking.panic else [best]
        if len(ties) > 1:
            pick = self.rng.choice(ties)
            order.remove(pick)
            order.insert(0, pick)
            why = "tie" if pick is not best else why
        elif not ranking.panic and self.rng.random() < self.policy.explore_share:
            # Explore only a supplier that asks less than the best and ranks
            # below it on its estimates alone: if it has recovered, that is
            # money saved, and if not, the order fails over. A dearer
            # runner-up costs money every time, and failover shows its
            # health whenever it is needed anyway.
            cheaper = [c for c in order[1:] if c.unit_price < best.unit_price and c.health is Health.HEALTHY]
            if cheaper:
                order.remove(cheaper[0])
                order.insert(0, cheaper[0])
                why = "explore"
        for i, candidate in enumerate(order):
            if candidate.paused_s > 0:
                continue
            limiter = self.limiters[candidate.supplier]
            if limiter.can_submit(now):
                limiter.take_submit(now)
                self._mark_probe(candidate.supplier, sku, now)
                return Choice(candidate, why if i == 0 else "overflow", ranking)
        return ranking

    def _ties(self, order: list[Candidate]) -> list[Candidate]:
        """Candidates that share the load with the best: they ask the same
        price (within ``tie_band`` either way) and score within the band
        plus the failure term of a supplier nobody knows yet. Without that
        allowance whichever got the first deliveries would keep every order,
        and the other, never chosen, would never show it is as good. A
        supplier that has shown itself worse than an unknown one is no tie,
        and neither is a dearer one that scores close only because the
        cheaper one's estimate dipped."""
        best = order[0]
        band = self.policy.tie_band
        prior = self.board.config.prior_success
        slack = self.policy.failure_cost * (1 - prior) / prior
        return [
            c
            for c in order
            if abs(c.unit_price - best.unit_price) <= best.unit_price * Decimal(band)
            and c.score <= best.score * (1 + band + slack)
            and c.health is best.health
        ]

    def _mark_probe(self, supplier: str, sku: str, now: float) -> None:
        for ejection in (
            self.board.supplier(supplier).stats.ejection,
            self.board.offer(supplier, sku).stats.ejection,
        ):
            if ejection.health(now) is Health.PROBING:
                ejection.probe_in_flight = True

    def release(self, supplier: str) -> None:
        limiter = self.limiters.get(supplier)
        if limiter is not None and limiter.in_flight > 0:
            limiter.in_flight -= 1

    def wait_hint(self, ranking: Ranking, now: float) -> float:
        """How long until one of ``ranking``'s candidates may have capacity."""
        hints = [
            max(self.limiters[c.supplier].wait_hint(now), self.board.supplier(c.supplier).paused_until - now)
            for c in ranking.candidates
        ]
        return max(0.005, min(hints, default=0.05)) if hints else math.inf
