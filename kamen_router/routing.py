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

Two ways in. ``Router.rank`` is the full, explained ranking (``GET
/v1/route``, ``kamen-router explain``): every supplier offering the sku,
scored, with its terms or the reason it is out. ``Router.choose`` runs on
every attempt and makes the same pick that choosing from that ranking would
(``Router._choose_ranked``: same supplier, reason and random draws) while
scoring only the few candidates the pick depends on. It rests on one bound:
no score is below the offer's price, and no price below the offer's base
price (the catalog's, else the configured one). Each sku keeps its enabled
offers sorted by base price (``Router._index``); a decision walks them
cheapest first, checks each for exclusion and scores it exactly at ``now``,
and stops where the base price passes what the pick still needs to know
(``_Walk``). No score, health, pause, balance or limit is cached, so there
is nothing that can go stale with time or with an outcome; the kept order
changes only with the configuration or a catalog price, and is rebuilt then
(``Scoreboard.epoch``). The explained ranking of a choice is built when
first read (``Choice.ranking``).
"""

from __future__ import annotations

import enum
import functools
import heapq
import math
import random
from collections.abc import Callable, Collection, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

import attrs

from .money import format_money
from .scoring import Health, OfferState, Scoreboard, ScoringConfig, SupplierState

if TYPE_CHECKING:
    from .config import Offer, SupplierConfig

# Every read of an enum member goes through a descriptor; the fast path
# reads health for many offers per decision, so it uses these names.
_HEALTHY, _EJECTED, _PROBING = Health.HEALTHY, Health.EJECTED, Health.PROBING


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

    def try_take(self, now: float) -> tuple[float, int] | None:
        """Take a submit token and an in-flight slot if both are free: the
        tokens and slots in use just before (None: at a limit)."""
        if self.in_flight >= self.max_in_flight or self.refill(now) < 1.0:
            return None
        before = self.tokens, self.in_flight
        self.tokens -= 1.0
        self.in_flight += 1
        return before

    def wait_hint(self, now: float) -> float:
        """Seconds until a token is due (in-flight slots free on their own)."""
        tokens = self.refill(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s


@attrs.frozen
class Choice:
    """A supplier chosen for one order, its limits taken: what the order's
    attempt needs, and how the choice was made (``candidate``,
    ``ranking``), built only when read: the dispatcher needs neither."""

    supplier: str
    product_id: str
    unit_price: Decimal
    #: why this one and not the best: "best", "tie", "explore", "overflow", "panic"
    why: str
    #: the chosen candidate, or how to build it
    _candidate: Candidate | Callable[[], Candidate] = attrs.field(alias="candidate", eq=False, repr=False)
    #: the ranking, or how to build it: the fast path finds its pick without
    #: ranking every candidate, so the explanation is built only if read
    _ranking: Ranking | Callable[[], Ranking] = attrs.field(alias="ranking", eq=False, repr=False)

    @classmethod
    def of(cls, candidate: Candidate, why: str, ranking: Ranking | Callable[[], Ranking]) -> Choice:
        return cls(candidate.supplier, candidate.product_id, candidate.unit_price, why, candidate, ranking)

    @property
    def candidate(self) -> Candidate:
        """The chosen candidate with the terms of its score, its limits as
        they were just before the choice took them."""
        candidate = self._candidate
        if not isinstance(candidate, Candidate):
            candidate = candidate()
            object.__setattr__(self, "_candidate", candidate)
        return candidate

    @property
    def ranking(self) -> Ranking:
        """The explained ranking of the order's sku at the decision's
        ``now``. Unless the choice needed the full ranking anyway (panic),
        it is built when first read, from the state as it is then: the
        chosen supplier's submit token and in-flight slot already taken,
        its probe (if it is one) marked as out."""
        ranking = self._ranking
        if not isinstance(ranking, Ranking):
            ranking = ranking()
            object.__setattr__(self, "_ranking", ranking)
        return ranking


class _Offer:
    """One enabled supplier's offer of a sku, as the sku's index holds it:
    its base price (``key``) and the state objects its score is read from."""

    __slots__ = ("base", "key", "name", "off", "offer", "source", "sup")

    def __init__(self, name: str, offer: Offer, sup: SupplierState, off: OfferState) -> None:
        self.name = name
        self.offer = offer
        self.sup = sup
        self.off = off
        self.base = Scoreboard.base_price_of(off, offer.price)
        #: where the base price comes from ("config" or "catalog"; a
        #: change of catalog price moves ``Scoreboard.epoch``)
        self.source = "config" if off.catalog_price is None else "catalog"
        #: no score of this offer is below this until ``Scoreboard.epoch``
        #: moves (see ``Router.choose``)
        self.key = float(self.base)


class _SkuIndex:
    """The enabled offers of one sku, cheapest base price first, and the
    scoreboard (and its ``epoch``) they were read from."""

    __slots__ = ("board", "epoch", "offers")

    def __init__(self, offers: list[_Offer], board: Scoreboard) -> None:
        self.offers = offers
        self.board = board
        self.epoch = board.epoch


class _Scored(NamedTuple):
    """A candidate of the fast path, ordered as ``rank`` orders candidates:
    by score, then price, then name (names are unique, so the rest never
    takes part in a comparison)."""

    score: float
    price: Decimal
    name: str
    offer: _Offer
    health: Health
    source: str
    success: float
    latency: float


class _Walk:
    """The candidates of one decision in ``rank``'s order, scored only as
    far as that order has to be known.

    Offers are visited cheapest base price first; a visited offer that is a
    candidate is scored exactly at ``now`` and waits in ``pending`` (a heap).
    Since no score is below its offer's base price, once the next offer's
    base price is above the best pending score, nothing unvisited can come
    before that one."""

    __slots__ = (
        "available",
        "board",
        "i",
        "max_price",
        "now",
        "offers",
        "pending",
        "quantity",
        "router",
        "tried",
    )

    def __init__(
        self,
        router: Router,
        offers: list[_Offer],
        now: float,
        max_price: Decimal | None,
        tried: Collection[str],
        quantity: int,
    ) -> None:
        self.router = router
        self.board = router.board
        self.available = router.available
        self.offers = offers
        self.now = now
        self.max_price = max_price
        self.tried = tried
        self.quantity = quantity
        self.i = 0
        self.pending: list[_Scored] = []

    def visit_to(self, bound: float) -> None:
        """Visit every offer whose base price is at most ``bound``: every
        candidate that scores at most ``bound`` is then in ``pending``."""
        offers, i, n = self.offers, self.i, len(self.offers)
        while i < n and offers[i].key <= bound:
            self._visit(offers[i])
            i += 1
        self.i = i

    def pop(self) -> _Scored | None:
        """The next candidate in rank order (None: no more)."""
        offers, pending, i, n = self.offers, self.pending, self.i, len(self.offers)
        while i < n and (not pending or offers[i].key <= pending[0].score):
            self._visit(offers[i])
            i += 1
        self.i = i
        return heapq.heappop(pending) if pending else None

    def _visit(self, offer: _Offer) -> None:
        # the exclusions of ``rank``, less their reasons
        name, available = offer.name, self.available
        if name in self.tried or (available is not None and name not in available):
            return
        sup, off, now, board = offer.sup, offer.off, self.now, self.board
        if off.charged_price is None:
            # no charged raise: the price is the base one (``price_of``)
            price, source = offer.base, offer.source
        else:
            price, source = board.price_of(off, offer.offer.price, now)
        if self.max_price is not None and price > self.max_price:
            return
        if off.out_until > now or sup.drained_need is not None:
            return
        if sup.balance is not None and sup.balance < price * self.quantity:
            return
        health = board.health_of(sup, off, now)[0]
        if health is _EJECTED or (health is _PROBING and _probe_busy(sup, off)):
            return
        p = board.success_of(sup, off, now)
        latency = board.latency_of(sup, off)
        # float(Decimal) is slow; the base price's float is the key
        price_f = offer.key if price is offer.base else float(price)
        score = self.router._terms(p, latency, price_f)[2]
        # ``_make`` is ``tuple.__new__``: a third of the cost of ``_Scored(...)``
        heapq.heappush(self.pending, _Scored._make((score, price, name, offer, health, source, p, latency)))


@functools.lru_cache(maxsize=8)
def _decimal(share: float) -> Decimal:
    """``Decimal(share)``, which is slow to build, for the few shares of a
    policy."""
    return Decimal(share)


def _probe_busy(sup: SupplierState, off: OfferState) -> bool:
    """A probe of the supplier or of the offer is out: nothing else goes
    until its answer."""
    s, o = sup.stats.ejection, off.stats.ejection
    return (s.probing and s.probe_in_flight) or (o.probing and o.probe_in_flight)


class Router:
    """Ranks and chooses suppliers, learns from outcomes, enforces limits.

    ``rank`` scores every supplier that offers the sku; ``choose`` gives
    the same pick as choosing from that ranking would, but scores only the
    candidates the pick depends on (see ``choose``)."""

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
        #: sku -> the suppliers that offer it, in configuration order, as
        #: of the ``suppliers`` mapping in ``_offered_for`` (see ``_offering``)
        self._offered_by: dict[str, list[SupplierConfig]] = {}
        self._offered_for: Mapping[str, SupplierConfig] | None = None
        #: sku -> its offers in base-price order for ``choose``, built when
        #: first needed (see ``_index``)
        self._indexes: dict[str, _SkuIndex] = {}
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
        # start over (a reload may also have reset catalog prices), and now
        # rather than in the next decision
        self._offered_for = None
        self._offering("")

    def _offering(self, sku: str) -> list[SupplierConfig]:
        """The configured suppliers that offer ``sku``, enabled or not. A
        new ``suppliers`` mapping (``configure``) drops every sku's index."""
        if self._offered_for is not self.suppliers:
            offered_by: dict[str, list[SupplierConfig]] = {}
            for sup in self.suppliers.values():
                for offered in sup.offers:
                    offered_by.setdefault(offered, []).append(sup)
            self._offered_by = offered_by
            self._offered_for = self.suppliers
            self._indexes.clear()
        return self._offered_by.get(sku, [])

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
        for sup in self._offering(sku):
            offer = sup.offers[sku]
            off_state = board.offer(sup.name, sku)
            sup_state = board.supplier(sup.name)
            price, source = board.price_of(off_state, offer.price, now)
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
            health, scope = board.health_of(sup_state, off_state, now)
            limiter = self.limiters[sup.name]
            candidate = self._candidate(
                sup.name,
                offer,
                price,
                source,
                health,
                board.success_of(sup_state, off_state, now),
                board.latency_of(sup_state, off_state),
                sup_state.balance,
                max(0.0, sup_state.paused_until - now),
                limiter.refill(now),
                limiter.in_flight,
                limiter.max_in_flight,
            )
            if health is Health.EJECTED:
                excluded.append(Exclusion(sup.name, Excluded.EJECTED, f"{scope} ejected"))
                ejected.append(candidate)
            elif health is Health.PROBING and _probe_busy(sup_state, off_state):
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

    def _terms(self, p: float, latency: float, price: float) -> tuple[float, float, float]:
        """The failure and latency terms of a score, and the score: the one
        place both ``rank`` and ``choose`` compute them, so they agree to
        the last bit."""
        policy = self.policy
        failure_term = policy.failure_cost * (1 - p) / p
        latency_term = policy.latency_cost_per_s * latency / p
        return failure_term, latency_term, price * (1 + failure_term + latency_term)

    def _candidate(
        self,
        name: str,
        offer: Offer,
        price: Decimal,
        source: str,
        health: Health,
        p: float,
        latency: float,
        balance: Decimal | None,
        paused_s: float,
        tokens: float,
        in_flight: int,
        max_in_flight: int,
    ) -> Candidate:
        failure_term, latency_term, score = self._terms(p, latency, float(price))
        return Candidate(
            supplier=name,
            product_id=offer.product_id,
            unit_price=price,
            configured_price=offer.price,
            success=p,
            latency_s=latency,
            failure_term=failure_term,
            latency_term=latency_term,
            score=score,
            health=health,
            in_flight=in_flight,
            max_in_flight=max_in_flight,
            tokens=tokens,
            balance=balance,
            price_source=source,
            paused_s=paused_s,
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
        their limits and the caller may wait (``wait_hint``).

        The pick is the one ``rank`` followed by ``_choose_ranked`` makes
        (the same supplier, reason and random draws), without scoring every
        candidate. A pick depends only on the best candidate, those within
        the tie band of its score, the cheaper ones (for exploration) and,
        when those are at their limits, the next ones in order. No score is
        below its offer's price (every term of it is at least zero and the
        success estimate at most one), and no price below the offer's base
        price (the catalog's, else the configured one; a charged raise only
        adds). So offers are visited cheapest base price first and scored
        exactly at ``now``, as ``rank`` scores them, until the base price
        passes what the pick needs (``_Walk``); the rest cannot matter.

        Nothing time-dependent is cached: health, pauses, stock, balance,
        limits and scores are all read at ``now``. (Scores kept for a short
        while would save a little more, but success estimates decay with
        time and move with every outcome, so a kept score drifts from the
        one ``rank`` shows, and a pick at the edge of the tie band or of a
        rival's score could then differ.) Only the sku's offers in
        base-price order are kept (``_index``), and they change only with
        the configuration (``configure``) or a catalog price
        (``Scoreboard.epoch``). Panic, and a negative weight or latency that
        would break the bound, take the full ranking."""
        walk = self._walk(sku, now, max_price, tried, quantity)
        best = None if walk is None else walk.pop()
        if walk is None or best is None:
            # nobody to pick, or nobody but ejected suppliers (panic): the
            # answer is the full ranking anyway
            return self._choose_ranked(
                self.rank(sku, now, max_price=max_price, tried=tried, quantity=quantity), now
            )
        policy = self.policy
        band = policy.tie_band
        prior = self.board.config.prior_success
        slack = policy.failure_cost * (1 - prior) / prior
        ceiling = best.score * (1 + band + slack)
        price_band = best.price * _decimal(band)
        # A tie scores at most ``ceiling`` and asks at most the best's price
        # plus the band, so its base price is at most the lesser of the two;
        # a cheaper candidate's is below the best's price, which is below
        # both. Once every offer up to that bound is visited, all of them
        # are pending. (The bound is widened a hair so that float rounding
        # can only make it visit more.)
        walk.visit_to(min(ceiling, float(best.price + price_band) * (1 + 1e-9)))
        near = [
            c
            for c in walk.pending
            if abs(c.price - best.price) <= price_band and c.score <= ceiling and c.health is best.health
        ]
        ties = [best, *sorted(near)]
        pick, why = best, "best"
        if len(ties) > 1:
            pick = self.rng.choice(ties)
            why = "tie" if pick is not best else why
        elif self.rng.random() < policy.explore_share:
            cheaper = [c for c in walk.pending if c.price < best.price and c.health is _HEALTHY]
            if cheaper:
                pick, why = min(cheaper), "explore"
        for i, c in enumerate(_picked_first(walk, best, pick)):
            sup = c.offer.sup
            if sup.paused_until > now:
                continue
            limiter = self.limiters[c.name]
            taken = limiter.try_take(now)
            if taken is not None:
                if c.health is not _HEALTHY:
                    # (a healthy candidate's supplier and offer are not probing)
                    self._mark_probe(c.name, sku, now)
                offer = c.offer.offer
                # the candidate and the ranking are built when read
                candidate = functools.partial(
                    self._candidate,
                    c.name,
                    offer,
                    c.price,
                    c.source,
                    c.health,
                    c.success,
                    c.latency,
                    sup.balance,
                    0.0,
                    *taken,
                    limiter.max_in_flight,
                )
                explain = functools.partial(
                    self.rank, sku, now, max_price=max_price, tried=frozenset(tried), quantity=quantity
                )
                return Choice(
                    c.name, offer.product_id, c.price, why if i == 0 else "overflow", candidate, explain
                )
        return self.rank(sku, now, max_price=max_price, tried=tried, quantity=quantity)

    def _walk(
        self, sku: str, now: float, max_price: Decimal | None, tried: Collection[str], quantity: int
    ) -> _Walk | None:
        """The fast path's walk over ``sku``'s offers, or None where its
        bound (no score below the price) may not hold."""
        policy, board = self.policy, self.board
        if (
            policy.failure_cost < 0
            or policy.latency_cost_per_s < 0
            or board.config.prior_latency_s < 0
            or board.negative_latency
        ):
            return None
        return _Walk(self, self._index(sku), now, max_price, tried, quantity)

    def _index(self, sku: str) -> list[_Offer]:
        """The enabled offers of ``sku``, cheapest base price first.

        Kept per sku and rebuilt when the configuration (``configure``, or
        a new ``suppliers`` mapping), the scoreboard, or its ``epoch`` (a
        catalog price changed, states were dropped) changes since."""
        board = self.board
        offering = self._offering(sku)  # first: it drops stale indexes
        index = self._indexes.get(sku)
        if index is not None and index.epoch == board.epoch and index.board is board:
            return index.offers
        offers = [
            _Offer(sup.name, sup.offers[sku], board.supplier(sup.name), board.offer(sup.name, sku))
            for sup in offering
            if sup.enabled
        ]
        offers.sort(key=lambda o: (o.key, o.name))
        self._indexes[sku] = _SkuIndex(offers, board)
        return offers

    def _choose_ranked(self, ranking: Ranking, now: float) -> Choice | Ranking:
        """``choose`` from a full ranking: the reference the fast path
        follows, and the path of panic."""
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
            if limiter.try_take(now) is not None:
                self._mark_probe(candidate.supplier, ranking.sku, now)
                return Choice.of(candidate, why if i == 0 else "overflow", ranking)
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
            if abs(c.unit_price - best.unit_price) <= best.unit_price * _decimal(band)
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


def _picked_first(walk: _Walk, best: _Scored, pick: _Scored) -> Iterator[_Scored]:
    """The candidates in rank order with ``pick`` moved to the front."""
    yield pick
    if pick is not best:
        yield best
    while (c := walk.pop()) is not None:
        if c is not pick:
            yield c
