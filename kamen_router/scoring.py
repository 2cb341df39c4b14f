"""Per-supplier and per-offer statistics, and ejection. Pure: every method
takes ``now`` (seconds on any monotonic clock); nothing here sleeps or
does I/O, so tests and the routing benchmark drive it in virtual time.

What counts, and against whom (see ``Scoreboard.observe``):

==========================  ===================  ==========================
outcome                     supplier             offer (supplier, sku)
==========================  ===================  ==========================
DELIVERED                   success              success
FAILED                      failure              failure
UNKNOWN (timeout, 5xx, …)   failure              -
REJECTED unreachable,       failure              -
maintenance, auth
REJECTED out_of_stock,      -                    failure; out until a
product_unavailable                              catalog refresh or a
                                                 cool-down brings it back
REJECTED insufficient_      drained until a      -
balance                     balance refresh
                            shows money
REJECTED price_above_       -                    -
ceiling
INVALID                     -                    -
RATE_LIMITED                paused for           -
                            retry_after
==========================  ===================  ==========================

Success is estimated from exponentially time-decayed counts with a prior
(a Beta posterior mean); an offer's record is read with its supplier's
estimate as the prior. Latency is an exponentially weighted mean of the
time the supplier takes to answer (timeouts are failures, not latency).

The expected unit price is the catalog's (else the configured one), raised
at once when a delivery is charged more: a rise costs money on every order
until it is known, while a lower charge may be an order taken before the
rise, so cuts wait for the catalog.

Each reading comes in two forms: by name (``success(supplier, sku, now)``)
and from the state objects themselves (``success_of(sup, off, now)``), which
the router's fast path holds on to. The named form is the other one after
two dictionary look-ups, so both give the same figures to the last bit.
``epoch`` counts the changes that invalidate held state objects or an
ordering by base price (see ``routing.Router``).
"""

from __future__ import annotations

import enum
import math
from decimal import Decimal

import attrs

from .outcome import Kind, Outcome, RejectReason


@attrs.frozen
class ScoringConfig:
    #: prior success probability and its weight, in observations
    prior_success: float = 0.97
    prior_weight: float = 30.0
    #: observations lose half their weight after this long
    half_life_s: float = 300.0
    #: weight of a new latency sample in the running mean
    latency_alpha: float = 0.2
    #: latency assumed before any sample
    prior_latency_s: float = 0.5
    #: consecutive failures that eject a supplier or an offer
    eject_after_failures: int = 5
    #: also eject when the success estimate falls below this ...
    eject_below_success: float = 0.5
    #: ... with at least this much (decayed) evidence
    eject_min_evidence: float = 5.0
    #: first cool-down, doubling on each repeat up to the cap
    eject_base_s: float = 15.0
    eject_max_s: float = 600.0
    #: healthy time after which the repeat count starts over
    eject_forget_s: float = 1800.0
    #: how long an out-of-stock offer stays out when no catalog says otherwise
    offer_out_s: float = 300.0
    #: how long a price rise seen in a delivery's charge holds without a
    #: newer catalog entry or a new charge at that price
    charged_price_ttl_s: float = 900.0


@attrs.define
class Decayed:
    """Exponentially time-decayed success and failure counts."""

    successes: float = 0.0
    failures: float = 0.0
    at: float | None = None

    def _decay(self, now: float, half_life: float) -> None:
        if self.at is not None and now > self.at:
            factor = math.pow(0.5, (now - self.at) / half_life)
            self.successes *= factor
            self.failures *= factor
        self.at = now if self.at is None else max(self.at, now)

    def add(self, success: bool, now: float, half_life: float) -> None:
        self._decay(now, half_life)
        if success:
            self.successes += 1.0
        else:
            self.failures += 1.0

    def estimate(self, now: float, cfg: ScoringConfig) -> tuple[float, float]:
        """(success probability, evidence weight) at ``now``."""
        s, f = self.successes, self.failures
        if self.at is not None and now > self.at:
            factor = math.pow(0.5, (now - self.at) / cfg.half_life_s)
            s, f = s * factor, f * factor
        a = cfg.prior_success * cfg.prior_weight
        return (s + a) / (s + f + cfg.prior_weight), s + f


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    EJECTED = "ejected"
    #: cool-down over: one probe may go, and its result decides
    PROBING = "probing"


# Every read of an enum member goes through a descriptor; health is read for
# many offers on every routing decision, so it uses these names instead.
_HEALTHY, _EJECTED, _PROBING = Health.HEALTHY, Health.EJECTED, Health.PROBING


@attrs.define
class Ejection:
    """Ejection state of a supplier or an offer."""

    consecutive_failures: int = 0
    ejections: int = 0
    until: float = 0.0
    probing: bool = False
    probe_in_flight: bool = False
    last_ejected_at: float | None = None

    def health(self, now: float) -> Health:
        if self.until > now:
            return _EJECTED
        if self.probing:
            return _PROBING
        return _HEALTHY

    def eject(self, now: float, cfg: ScoringConfig) -> None:
        if (
            self.last_ejected_at is not None
            and now - self.last_ejected_at > cfg.eject_forget_s + self.cooldown(cfg)
        ):
            self.ejections = 0
        self.ejections += 1
        self.until = now + self.cooldown(cfg)
        self.last_ejected_at = now
        self.probing = True
        self.probe_in_flight = False

    def cooldown(self, cfg: ScoringConfig) -> float:
        return float(min(cfg.eject_max_s, cfg.eject_base_s * 2.0 ** max(0, self.ejections - 1)))

    def record(self, success: bool, now: float, estimate: float, evidence: float, cfg: ScoringConfig) -> None:
        self.probe_in_flight = False
        if success:
            self.consecutive_failures = 0
            self.probing = False
            return
        self.consecutive_failures += 1
        if self.probing and self.until <= now:
            self.eject(now, cfg)  # the probe failed: out again at once, for longer
        elif self.until <= now and (
            self.consecutive_failures >= cfg.eject_after_failures
            or (evidence >= cfg.eject_min_evidence and estimate < cfg.eject_below_success)
        ):
            self.eject(now, cfg)


@attrs.define
class Stats:
    """What the router has learnt about one supplier or one offer."""

    counts: Decayed = attrs.Factory(Decayed)
    latency_s: float | None = None
    ejection: Ejection = attrs.Factory(Ejection)
    attempts: int = 0

    def observe(self, success: bool, now: float, cfg: ScoringConfig) -> None:
        self.attempts += 1
        self.counts.add(success, now, cfg.half_life_s)
        estimate, evidence = self.counts.estimate(now, cfg)
        self.ejection.record(success, now, estimate, evidence, cfg)

    def observe_latency(self, seconds: float, cfg: ScoringConfig) -> None:
        if self.latency_s is None:
            self.latency_s = seconds
        else:
            self.latency_s += cfg.latency_alpha * (seconds - self.latency_s)

    def success(self, now: float, cfg: ScoringConfig) -> float:
        return self.counts.estimate(now, cfg)[0]


@attrs.define
class SupplierState:
    """Live state of one supplier beyond its statistics."""

    stats: Stats = attrs.Factory(Stats)
    #: last known prepaid balance (None: never read)
    balance: Decimal | None = None
    balance_at: float | None = None
    #: set by an insufficient_balance rejection; cleared by a refresh that
    #: shows at least this much money
    drained_need: Decimal | None = None
    #: RATE_LIMITED: no new submits before this time
    paused_until: float = 0.0


@attrs.define
class OfferState:
    stats: Stats = attrs.Factory(Stats)
    #: out of stock or off shelf until a refresh (or this time) says otherwise
    out_until: float = 0.0
    out_reason: str | None = None
    #: price and availability from the supplier's catalog, when it has one
    catalog_price: Decimal | None = None
    catalog_available: bool | None = None
    catalog_at: float | None = None
    #: the highest unit price a delivery was charged since the last catalog
    #: entry, and when it was last charged
    charged_price: Decimal | None = None
    charged_at: float | None = None


_SUPPLIER_FAULTS = {RejectReason.UNREACHABLE, RejectReason.MAINTENANCE, RejectReason.AUTH}
_OFFER_FAULTS = {RejectReason.OUT_OF_STOCK, RejectReason.PRODUCT_UNAVAILABLE}


class Scoreboard:
    """Statistics and states for every supplier and offer the router knows."""

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self.suppliers: dict[str, SupplierState] = {}
        self.offers: dict[tuple[str, str], OfferState] = {}
        #: bumped when a catalog price changes (an offer's base price, below
        #: which its expected price never goes) or states are dropped;
        #: anything that keeps state objects or orders offers by base price
        #: must start over when it moves
        self.epoch = 0
        #: a latency sample below zero was seen (a clock stepped back): the
        #: router's fast path relies on every score being at least the
        #: price, so it stands aside
        self.negative_latency = False

    def supplier(self, name: str) -> SupplierState:
        state = self.suppliers.get(name)
        if state is None:
            state = self.suppliers[name] = SupplierState()
        return state

    def offer(self, supplier: str, sku: str) -> OfferState:
        key = (supplier, sku)
        state = self.offers.get(key)
        if state is None:
            state = self.offers[key] = OfferState()
        return state

    def forget(self, keep: set[str]) -> None:
        """Drop state of suppliers no longer configured."""
        for name in [n for n in self.suppliers if n not in keep]:
            del self.suppliers[name]
        for key in [k for k in self.offers if k[0] not in keep]:
            del self.offers[key]
        self.epoch += 1

    # --------------------------------------------------------------- learning

    def observe(
        self,
        supplier: str,
        sku: str,
        outcome: Outcome,
        now: float,
        *,
        latency_s: float | None = None,
        cost: Decimal | None = None,
    ) -> None:
        """Learn from one outcome the supplier caused. ``cost`` is what the
        refused order would have cost (for insufficient_balance)."""
        cfg = self.config
        sup = self.supplier(supplier)
        off = self.offer(supplier, sku)
        kind = outcome.kind
        # latency is how long the supplier takes to answer: a timeout or a
        # refused connection is no answer (it counts as a failure instead),
        # and one 10 s timeout would otherwise weigh like twenty answers
        answered = kind not in (Kind.INVALID, Kind.UNKNOWN) and not (
            kind is Kind.REJECTED and outcome.reason is RejectReason.UNREACHABLE
        )
        if latency_s is not None and answered:
            if latency_s < 0:
                self.negative_latency = True
            sup.stats.observe_latency(latency_s, cfg)
            off.stats.observe_latency(latency_s, cfg)
        if kind is Kind.DELIVERED:
            sup.stats.observe(True, now, cfg)
            off.stats.observe(True, now, cfg)
            off.out_until = 0.0
            off.out_reason = None
            unit_cost = getattr(outcome, "unit_cost", None)
            if unit_cost is not None:
                self._charged(off, unit_cost, now)
        elif kind is Kind.FAILED:
            sup.stats.observe(False, now, cfg)
            off.stats.observe(False, now, cfg)
        elif kind is Kind.UNKNOWN:
            sup.stats.observe(False, now, cfg)
        elif kind is Kind.REJECTED:
            reason = outcome.reason
            if reason in _SUPPLIER_FAULTS:
                sup.stats.observe(False, now, cfg)
            elif reason in _OFFER_FAULTS:
                off.stats.observe(False, now, cfg)
                off.out_until = now + cfg.offer_out_s
                off.out_reason = str(reason)
            elif reason is RejectReason.INSUFFICIENT_BALANCE:
                sup.drained_need = cost if cost is not None else Decimal("0.01")
        elif kind is Kind.RATE_LIMITED:
            retry_after = getattr(outcome, "retry_after", None) or 1.0
            sup.paused_until = max(sup.paused_until, now + retry_after)
        # INVALID, PENDING, NOT_FOUND: nothing the supplier should answer for

    def spend(self, supplier: str, amount: Decimal) -> None:
        """Lower the known balance by a delivery's cost until the next refresh."""
        sup = self.supplier(supplier)
        if sup.balance is not None:
            sup.balance -= amount

    def set_balance(self, supplier: str, balance: Decimal, now: float) -> None:
        sup = self.supplier(supplier)
        sup.balance = balance
        sup.balance_at = now
        if sup.drained_need is not None and balance >= sup.drained_need:
            sup.drained_need = None

    def set_catalog_entry(
        self, supplier: str, sku: str, *, price: Decimal | None, available: bool | None, now: float
    ) -> None:
        off = self.offer(supplier, sku)
        if price != off.catalog_price:
            self.epoch += 1
        off.catalog_price = price
        off.catalog_available = available
        off.catalog_at = now
        off.charged_price = off.charged_at = None
        if available:
            off.out_until = 0.0
            off.out_reason = None
        elif available is False:
            off.out_until = math.inf
            off.out_reason = "off_shelf"

    def _charged(self, off: OfferState, unit_cost: Decimal, now: float) -> None:
        # A price rise shows in what the supplier charges long before the
        # next catalog refresh, and it costs money on every order until it
        # is known. A lower charge may be stale (an order taken before the
        # rise and delivered after it), so cuts are learnt from catalogs,
        # or once the raise has not been charged for ``charged_price_ttl_s``.
        stale = off.charged_at is None or now - off.charged_at > self.config.charged_price_ttl_s
        if off.charged_price is None or stale or unit_cost >= off.charged_price:
            off.charged_price = unit_cost
            off.charged_at = now

    # ------------------------------------------------------------- reading

    def price(self, supplier: str, sku: str, configured: Decimal, now: float) -> tuple[Decimal, str]:
        """The unit price to expect and where it comes from: the catalog's
        (else the configured one), raised by a higher recent charge."""
        return self.price_of(self.offer(supplier, sku), configured, now)

    def price_of(self, off: OfferState, configured: Decimal, now: float) -> tuple[Decimal, str]:
        """``price`` from the offer's state. Never below ``base_price_of``."""
        base, source = (configured, "config") if off.catalog_price is None else (off.catalog_price, "catalog")
        charged = off.charged_price
        if (
            charged is not None
            and charged > base
            and off.charged_at is not None
            and now - off.charged_at <= self.config.charged_price_ttl_s
        ):
            return charged, "charged"
        return base, source

    @staticmethod
    def base_price_of(off: OfferState, configured: Decimal) -> Decimal:
        """The price an offer asks before any charged raise: the least
        ``price_of`` can give at any time, until the catalog price changes
        (which moves ``epoch``)."""
        return configured if off.catalog_price is None else off.catalog_price

    def health(self, supplier: str, sku: str, now: float) -> tuple[Health, str | None]:
        """The worse of the supplier's and the offer's health, and which."""
        return self.health_of(self.supplier(supplier), self.offer(supplier, sku), now)

    @staticmethod
    def health_of(sup: SupplierState, off: OfferState, now: float) -> tuple[Health, str | None]:
        """``health`` from the states: ``Ejection.health`` of each, read
        in place (the router reads it for several offers per decision)."""
        ejection = sup.stats.ejection
        if ejection.until > now:
            return _EJECTED, "supplier"
        if ejection.probing:
            return _PROBING, "supplier"
        ejection = off.stats.ejection
        if ejection.until > now:
            return _EJECTED, "offer"
        if ejection.probing:
            return _PROBING, "offer"
        return _HEALTHY, None

    def success(self, supplier: str, sku: str, now: float) -> float:
        """Chance an attempt at this offer delivers.

        The offer's own record is read with the supplier's estimate as its
        prior, so a new offer of a known supplier starts from the
        supplier's record and a well-observed offer follows its own. The
        lower of that and the supplier's estimate is taken: the supplier's
        record also holds what no offer does (timeouts, refused
        connections), and both records hold every delivery and failure, so
        a product of the two would count those twice."""
        return self.success_of(self.supplier(supplier), self.offer(supplier, sku), now)

    def success_of(self, sup: SupplierState, off: OfferState, now: float) -> float:
        """``success`` from the states. The supplier's estimate is
        ``Decayed.estimate``'s, step for step (so the same to the last
        bit), read in place: the router reads it for several offers per
        decision."""
        cfg = self.config
        half_life, weight = cfg.half_life_s, cfg.prior_weight
        counts = sup.stats.counts
        s, f, at = counts.successes, counts.failures, counts.at
        if at is not None and now > at:
            factor = math.pow(0.5, (now - at) / half_life)
            s, f = s * factor, f * factor
        p_sup = (s + cfg.prior_success * weight) / (s + f + weight)
        counts = off.stats.counts
        s, f, at = counts.successes, counts.failures, counts.at
        if at is not None and now > at:
            factor = math.pow(0.5, (now - at) / half_life)
            s, f = s * factor, f * factor
        p_off = (s + p_sup * weight) / (s + f + weight)
        return max(1e-3, min(1.0, p_sup, p_off))

    def latency(self, supplier: str, sku: str) -> float:
        return self.latency_of(self.supplier(supplier), self.offer(supplier, sku))

    def latency_of(self, sup: SupplierState, off: OfferState) -> float:
        """``latency`` from the states."""
        if off.stats.latency_s is not None:
            return off.stats.latency_s
        latency = sup.stats.latency_s
        return latency if latency is not None else self.config.prior_latency_s
