"""``Router.choose`` scores only the candidates its pick depends on; these
tests hold it to the pick of the full ranking (``Router.rank`` followed by
``Router._choose_ranked``, the reference): the same supplier, the same
reason, the same candidate to the last bit, the same random draws and the
same answer when nobody can take the order, through every change of state a
router sees.

Two routers with the same configuration and seed live through the same
random history (outcomes of every kind, ejections and probes, pauses,
balances, catalog prices and stock, charged prices, limits, reloads, time
jumps); one decides with ``choose``, the other with the reference.

The fast path refills only the limiters it looks at. Times are multiples of
1/64 s and rates whole numbers, so buckets refilled at different moments
hold the same amounts to the bit. A bucket keeps what it has earned up to
the latest time it was refilled at, so when time steps back, one refilled
later holds more than one that was not (as with ``rank``, which refills
every candidate's): the daemon's clock never steps back, and the history
that does compares the picks with limits that never bind, not the tokens."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from kamen_router.config import Limits, Offer, SupplierConfig
from kamen_router.outcome import (
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    Outcome,
    Pending,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.routing import Candidate, Choice, Policy, Ranking, Router
from kamen_router.scoring import ScoringConfig

SKUS = ("mobile-cmcc-100", "steam-50", "psn-20")
#: near one another, so that ties, exploration and the price band all matter
PRICES = ("9.50", "9.98", "9.99", "10.00", "10.00", "10.01", "10.02", "10.05", "10.20", "10.60", "11.00")
TICK = 1 / 64


def make_supplier(
    name: str, rng: random.Random, skus: tuple[str, ...] = SKUS, *, limited: bool = True
) -> SupplierConfig:
    offered = [sku for sku in skus if rng.random() < 0.8] or [skus[0]]
    rate, in_flight = float(rng.choice([1, 2, 3, 1000])), rng.choice([1, 2, 4, 1000])
    return SupplierConfig(
        name=name,
        file=Path(f"suppliers.d/{name}.yaml"),
        plugin="sim",
        enabled=rng.random() < 0.9,
        endpoint=None,
        credentials={},
        limits=Limits(rate_per_s=rate, max_in_flight=in_flight) if limited else Limits(1e9, 10**9),
        offers={sku: Offer(sku, f"{name}-{sku}", Decimal(rng.choice(PRICES))) for sku in offered},
    )


def make_policy(rng: random.Random) -> Policy:
    return Policy(
        failure_cost=rng.choice([0.0, 0.05, 0.5]),
        latency_cost_per_s=rng.choice([0.0, 0.002, 0.05]),
        tie_band=rng.choice([0.0, 0.002, 0.01]),
        explore_share=rng.choice([0.0, 0.02, 0.3, 1.0]),
        panic=rng.random() < 0.8,
    )


def reference(router: Router, sku: str, now: float, **order: Any) -> Choice | Ranking:
    return router._choose_ranked(router.rank(sku, now, **order), now)


def outcome(rng: random.Random, bad: bool, price: Decimal) -> Outcome:
    roll = rng.random()
    faults: list[Outcome] = [Failed(), Unknown("timeout"), Rejected(RejectReason.UNREACHABLE)]
    if roll < (0.5 if bad else 0.05):
        return rng.choice(faults)
    if roll < 0.7:
        unit_cost = rng.choice([None, None, price, price + Decimal("0.30"), price - Decimal("0.10")])
        return Delivered(unit_cost=unit_cost)
    others: list[Outcome] = [
        Rejected(RejectReason.OUT_OF_STOCK),
        Rejected(RejectReason.PRODUCT_UNAVAILABLE),
        Rejected(RejectReason.INSUFFICIENT_BALANCE),
        Rejected(RejectReason.MAINTENANCE),
        Rejected(RejectReason.PRICE_ABOVE_CEILING),
        RateLimited(retry_after=rng.choice([None, 0.5, 2.0])),
        Invalid(InvalidReason.INVALID_ACCOUNT),
        Pending(),
        Delivered(),
    ]
    return rng.choice(others)


@attrs.define
class Twins:
    """Two routers fed the same history: ``fast`` decides with ``choose``,
    ``slow`` with the full ranking."""

    fast: Router
    slow: Router
    suppliers: dict[str, SupplierConfig]
    now: float = 0.0
    #: (supplier, sku, unit price) of attempts holding an in-flight slot
    holding: list[tuple[str, str, Decimal]] = attrs.Factory(list)
    seen: Counter[str] = attrs.Factory(Counter)
    #: compare the tokens the candidates show (not when time steps back)
    tokens: bool = True

    @property
    def both(self) -> tuple[Router, Router]:
        return self.fast, self.slow

    def decide(self, sku: str, **order: Any) -> None:
        fast = self.fast.choose(sku, self.now, **order)
        slow = reference(self.slow, sku, self.now, **order)
        context = f"at {self.now} for {sku} {order}"
        assert type(fast) is type(slow), context
        if isinstance(fast, Choice):
            assert isinstance(slow, Choice)
            assert (self._shown(fast.candidate), fast.why) == (self._shown(slow.candidate), slow.why), context
            self.seen[fast.why] += 1
            self.holding.append((fast.candidate.supplier, sku, fast.candidate.unit_price))
        else:
            assert isinstance(slow, Ranking)
            shown = [self._shown(c) for c in fast.candidates]
            assert shown == [self._shown(c) for c in slow.candidates], context
            assert (fast.sku, fast.excluded, fast.panic) == (slow.sku, slow.excluded, slow.panic), context
            self.seen["wait" if fast.candidates else "nobody"] += 1
        assert self.fast.rng.getstate() == self.slow.rng.getstate(), context

    def _shown(self, candidate: Candidate) -> Candidate:
        return candidate if self.tokens else attrs.evolve(candidate, tokens=0.0)

    def settle(self, rng: random.Random, bad: set[str]) -> None:
        name, sku, price = self.holding.pop(rng.randrange(len(self.holding)))
        result = outcome(rng, name in bad, price)
        latency = rng.uniform(0.01, 3.0)
        cost = price * rng.choice([1, 2])
        for router in self.both:
            router.board.observe(name, sku, result, self.now, latency_s=latency, cost=cost)
            router.release(name)

    def reload(self, rng: random.Random) -> None:
        """A configuration reload: a supplier changed, added or dropped,
        and sometimes new weights."""
        suppliers = dict(self.suppliers)
        name = rng.choice(sorted(suppliers))
        roll = rng.random()
        if roll < 0.4:
            suppliers[name] = attrs.evolve(suppliers[name], enabled=not suppliers[name].enabled)
        elif roll < 0.7:
            offers = {
                sku: attrs.evolve(offer, price=Decimal(rng.choice(PRICES)))
                for sku, offer in suppliers[name].offers.items()
            }
            suppliers[name] = attrs.evolve(suppliers[name], offers=offers)
        elif roll < 0.85 and len(suppliers) > 2:
            del suppliers[name]
        else:
            fresh = f"n{len(self.suppliers):03d}"
            suppliers[fresh] = make_supplier(fresh, rng, limited=self.tokens)
        policy = make_policy(rng) if rng.random() < 0.5 else None
        self.suppliers = suppliers
        forget = rng.random() < 0.5
        for router in self.both:
            router.configure(suppliers, policy)
            if forget:
                router.board.forget(set(suppliers))
        self.holding = [h for h in self.holding if h[0] in suppliers]


def live(seed: int, suppliers: int, steps: int, *, back_in_time: bool = False) -> Twins:
    rng = random.Random(seed)
    configs = {
        f"s{i:03d}": make_supplier(f"s{i:03d}", rng, limited=not back_in_time) for i in range(suppliers)
    }
    policy = make_policy(rng)
    scoring = ScoringConfig(eject_base_s=rng.choice([1.0, 5.0, 15.0]), half_life_s=rng.choice([30.0, 300.0]))
    twins = Twins(
        fast=Router(configs, policy=policy, scoring=scoring, rng=random.Random(seed)),
        slow=Router(configs, policy=policy, scoring=scoring, rng=random.Random(seed)),
        suppliers=configs,
        tokens=not back_in_time,
    )
    bad = set(rng.sample(sorted(configs), max(1, suppliers // 3)))
    for _ in range(steps):
        names = sorted(twins.suppliers)
        roll = rng.random()
        if roll < 0.45:
            sku = rng.choice(SKUS)
            order: dict[str, Any] = {}
            if rng.random() < 0.3:
                order["max_price"] = Decimal(rng.choice(PRICES))
            if rng.random() < 0.3:
                order["tried"] = set(rng.sample(names, rng.randint(1, min(3, len(names)))))
            if rng.random() < 0.2:
                order["quantity"] = rng.randint(2, 5)
            twins.decide(sku, **order)
        elif roll < 0.75:
            if twins.holding:
                twins.settle(rng, bad)
        elif roll < 0.85:
            twins.now += TICK * rng.choice([1, 8, 64, 64 * 5, 64 * 30, 64 * 400])
            if back_in_time and rng.random() < 0.2:
                twins.now -= TICK * rng.choice([1, 64, 64 * 30])
        elif roll < 0.89:
            name, sku = rng.choice(names), rng.choice(SKUS)
            price = rng.choice([None, Decimal(rng.choice(PRICES))])
            available = rng.choice([True, True, False, None])
            for router in twins.both:
                router.board.set_catalog_entry(name, sku, price=price, available=available, now=twins.now)
        elif roll < 0.93:
            name = rng.choice(names)
            balance = Decimal(rng.choice(["0.00", "15.00", "25.00", "1000.00"]))
            refresh = rng.random() < 0.7
            for router in twins.both:
                if refresh:
                    router.board.set_balance(name, balance, twins.now)
                else:
                    router.board.spend(name, Decimal("10.00"))
        elif roll < 0.95:
            clients = None if rng.random() < 0.5 else set(rng.sample(names, max(1, len(names) - 2)))
            for router in twins.both:
                router.available = clients
        elif roll < 0.96:
            twins.reload(rng)
        elif roll < 0.98:
            # a burst: many orders at one instant find everyone at a limit
            sku = rng.choice(SKUS)
            for _ in range(rng.randint(3, 12)):
                twins.decide(sku)
        else:
            # a run of failures ejects a supplier (or its offer)
            name, sku = rng.choice(names), rng.choice(SKUS)
            for router in twins.both:
                for _ in range(router.board.config.eject_after_failures):
                    router.board.observe(name, sku, Failed(), twins.now)
    return twins


@pytest.mark.parametrize("seed", range(12))
def test_choose_picks_as_the_full_ranking_does_through_a_random_history(seed: int) -> None:
    twins = live(seed, suppliers=4 + seed % 3 * 8, steps=3000)
    # the history reached every way a decision can end
    assert {"best", "overflow", "wait", "nobody"} <= set(twins.seen), twins.seen


@pytest.mark.parametrize("seed", range(4))
def test_choose_picks_as_the_full_ranking_does_when_time_steps_back(seed: int) -> None:
    twins = live(seed, suppliers=10, steps=3000, back_in_time=True)
    assert {"best", "nobody"} <= set(twins.seen), twins.seen


def test_the_histories_reach_ties_exploration_and_panic() -> None:
    seen: Counter[str] = Counter()
    for seed in range(12):
        seen += live(seed, suppliers=4 + seed % 3 * 8, steps=3000).seen
    assert {"best", "tie", "explore", "overflow", "panic", "wait", "nobody"} <= set(seen), seen


def test_choose_picks_as_the_full_ranking_does_among_many_suppliers() -> None:
    twins = live(99, suppliers=150, steps=4000)
    assert {"best", "tie", "overflow", "wait"} <= set(twins.seen), twins.seen


def test_a_negative_latency_sample_sends_choose_down_the_full_ranking() -> None:
    rng = random.Random(5)
    configs = {f"s{i}": make_supplier(f"s{i}", rng, skus=SKUS[:1]) for i in range(6)}
    twins = Twins(
        fast=Router(configs, rng=random.Random(1)),
        slow=Router(configs, rng=random.Random(1)),
        suppliers=configs,
    )
    for i, name in enumerate(sorted(configs)):
        for router in twins.both:
            router.board.observe(name, SKUS[0], Delivered(), 0.0, latency_s=-5.0 if i == 3 else 0.5)
    assert twins.fast.board.negative_latency
    for _ in range(50):
        twins.decide(SKUS[0])
        twins.now += TICK
        while twins.holding:
            twins.settle(rng, set())


def test_equal_scores_are_ordered_by_price_then_name_as_in_the_ranking() -> None:
    # With no failure or latency cost a score is the price. "z" asks 10.00
    # but was charged 10.05 on its last delivery; "b" asks 10.05: they score
    # alike, ask alike, and "b" comes first by name although "z" is the
    # cheaper by base price (the order the fast path visits offers in).
    configs = {
        name: attrs.evolve(
            make_supplier(name, random.Random(0), limited=False),
            enabled=True,
            offers={SKUS[0]: Offer(SKUS[0], name, Decimal(price))},
        )
        for name, price in (("z", "10.00"), ("b", "10.05"))
    }
    policy = Policy(failure_cost=0.0, latency_cost_per_s=0.0, tie_band=0.0, explore_share=0.0)
    twins = Twins(
        fast=Router(configs, policy=policy, rng=random.Random(3)),
        slow=Router(configs, policy=policy, rng=random.Random(3)),
        suppliers=configs,
    )
    for router in twins.both:
        router.board.observe("z", SKUS[0], Delivered(unit_cost=Decimal("10.05")), 0.0)
    assert [c.supplier for c in twins.slow.rank(SKUS[0], 0.0).candidates] == ["b", "z"]
    for _ in range(40):
        twins.decide(SKUS[0])
        twins.now += TICK
        while twins.holding:
            name, _sku, _price = twins.holding.pop()
            for router in twins.both:
                router.release(name)
    assert twins.seen["tie"] > 0 and twins.seen["tie"] + twins.seen["best"] == 40
