"""The router: candidates, ranking, limits, ejection and probes, exploration
and panic. Pure and deterministic: time is a plain float, the RNG is
seeded, suppliers are built as config values directly."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from kamen_router.config import Limits, Offer, SupplierConfig
from kamen_router.outcome import (
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    Outcome,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.routing import Choice, Excluded, Limiter, Policy, Ranking, Router
from kamen_router.scoring import Health, OfferState, ScoringConfig, SupplierState

SKU = "mobile-cmcc-100"
OTHER = "steam-50"


def supplier(
    name: str,
    prices: dict[str, str],
    *,
    rate: float = 1000.0,
    in_flight: int = 1000,
    enabled: bool = True,
) -> SupplierConfig:
    return SupplierConfig(
        name=name,
        file=Path(f"suppliers.d/{name}.yaml"),
        plugin="sim",
        enabled=enabled,
        endpoint=None,
        credentials={},
        limits=Limits(rate_per_s=rate, max_in_flight=in_flight, timeout_s=5.0),
        offers={sku: Offer(sku, f"{name}-{sku}", Decimal(price)) for sku, price in prices.items()},
    )


def make_router(
    *suppliers: SupplierConfig, seed: int = 7, scoring: ScoringConfig | None = None, **policy: object
) -> Router:
    return Router(
        {s.name: s for s in suppliers},
        policy=Policy(**policy),  # type: ignore[arg-type]
        scoring=scoring,
        rng=random.Random(seed),
    )


def chosen(result: Choice | Ranking) -> str:
    assert isinstance(result, Choice), f"expected a choice, got {result}"
    return result.candidate.supplier


def attempt(router: Router, now: float, outcome: Callable[[str], Outcome], sku: str = SKU) -> str:
    """One order's first attempt as the daemon drives it: choose, submit,
    learn from the reply, give the slot back."""
    name = chosen(router.choose(sku, now))
    router.board.observe(name, sku, outcome(name), now, latency_s=0.2)
    router.release(name)
    return name


# -------------------------------------------------------- health and probes


def test_a_dead_supplier_stops_getting_orders_quickly_and_gets_them_back_after_recovery() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    cfg = router.board.config
    ejection = router.board.supplier("cheap").stats.ejection
    broken_until = 300.0
    out_until = None  # the cool-down under way when it recovers
    picks: list[tuple[float, str]] = []
    now = 0.0
    while now < 1500.0:
        broken = now < broken_until
        if not broken and out_until is None:
            out_until = ejection.until
        name = attempt(
            router, now, lambda n, broken=broken: Failed() if n == "cheap" and broken else Delivered()
        )
        picks.append((now, name))
        now += 0.5
    while_broken = [t for t, n in picks if n == "cheap" and t < broken_until]
    # the failures that eject it, then one probe per cool-down and no more
    n = cfg.eject_after_failures
    assert while_broken[:n] == [i * 0.5 for i in range(n)]
    probes = while_broken[n:]
    assert 1 <= len(probes) <= 5
    assert all(b - a >= cfg.eject_base_s for a, b in itertools.pairwise(probes))
    # the first probe after the recovery brings it back for good
    assert out_until is not None
    back = min(t for t, n in picks if n == "cheap" and t >= broken_until)
    assert back <= max(out_until, broken_until) + 0.5
    assert all(n == "cheap" for t, n in picks if t > back)


def test_a_supplier_whose_requests_time_out_is_ejected_like_one_that_fails() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    n = router.board.config.eject_after_failures
    names = [attempt(router, float(i), lambda _: Unknown("no reply in time")) for i in range(n)]
    assert names == ["cheap"] * n
    assert chosen(router.choose(SKU, float(n))) == "dear"


def test_the_probe_after_a_cooldown_is_a_single_order() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    cfg = router.board.config
    for _ in range(cfg.eject_after_failures):
        attempt(router, 0.0, lambda _: Failed())
    assert chosen(router.choose(SKU, 1.0)) == "dear"
    end = router.board.supplier("cheap").stats.ejection.until
    probe = router.choose(SKU, end)
    assert chosen(probe) == "cheap"
    assert isinstance(probe, Choice) and probe.candidate.health is Health.PROBING
    # while the probe is out, everyone else goes elsewhere
    for k in range(5):
        other = router.choose(SKU, end + k * 0.1)
        assert chosen(other) == "dear"
        assert isinstance(other, Choice)
        assert ("cheap", Excluded.PROBE_IN_FLIGHT) in {(e.supplier, e.reason) for e in other.ranking.excluded}
    router.board.observe("cheap", SKU, Delivered(), end + 1.0)
    router.release("cheap")
    assert chosen(router.choose(SKU, end + 1.0)) == "cheap"
    assert chosen(router.choose(SKU, end + 1.1)) == "cheap"


def test_a_failed_probe_ejects_again_at_once_for_longer() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    cfg = router.board.config
    ejection = router.board.supplier("cheap").stats.ejection
    for _ in range(cfg.eject_after_failures):
        attempt(router, 0.0, lambda _: Failed())
    first = ejection.until
    assert attempt(router, first, lambda _: Failed()) == "cheap"  # the probe
    assert router.board.health("cheap", SKU, first)[0] is Health.EJECTED
    assert ejection.until - first == pytest.approx(2 * first)
    assert chosen(router.choose(SKU, first + 1.0)) == "dear"


def test_ejection_cooldown_grows_on_repeat_up_to_the_cap() -> None:
    scoring = ScoringConfig(eject_base_s=5.0, eject_max_s=30.0)
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}), scoring=scoring)
    ejection = router.board.supplier("cheap").stats.ejection
    now = 0.0
    for _ in range(scoring.eject_after_failures):
        attempt(router, now, lambda _: Failed())
    cooldowns = []
    for _ in range(6):
        cooldowns.append(ejection.until - now)
        now = ejection.until
        assert attempt(router, now, lambda _: Failed()) == "cheap"
    assert cooldowns == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


def test_panic_tries_the_best_ejected_supplier_when_all_are_ejected() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    n = router.board.config.eject_after_failures
    for name in ("cheap", "dear"):
        for _ in range(n):
            router.board.observe(name, SKU, Failed(), 0.0)
    choice = router.choose(SKU, 1.0)
    assert isinstance(choice, Choice)
    assert choice.why == "panic" and choice.ranking.panic
    assert choice.candidate.supplier == "cheap"


def test_without_panic_all_ejected_means_no_candidate() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}), panic=False)
    n = router.board.config.eject_after_failures
    for name in ("cheap", "dear"):
        for _ in range(n):
            router.board.observe(name, SKU, Failed(), 0.0)
    ranking = router.choose(SKU, 1.0)
    assert isinstance(ranking, Ranking)
    assert ranking.candidates == () and not ranking.panic
    assert {(e.supplier, e.reason) for e in ranking.excluded} == {
        ("cheap", Excluded.EJECTED),
        ("dear", Excluded.EJECTED),
    }
    assert router.wait_hint(ranking, 1.0) == float("inf")


# ------------------------------------------------------- what counts where


def test_invalid_outcomes_never_move_the_ranking() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.10"}))
    for i in range(30):
        attempt(router, float(i), lambda _: Delivered())
    before = router.rank(SKU, 100.0)
    for i in range(200):
        name = attempt(router, 40.0 + i * 0.1, lambda _: Invalid(InvalidReason.INVALID_ACCOUNT))
        assert name == "cheap"  # never ejected, never demoted
    after = router.rank(SKU, 100.0)
    assert [(c.supplier, c.score, c.success, c.latency_s) for c in after.candidates] == [
        (c.supplier, c.score, c.success, c.latency_s) for c in before.candidates
    ]
    assert after.excluded == ()


def test_out_of_stock_on_one_sku_leaves_the_suppliers_other_skus_routed() -> None:
    router = make_router(
        supplier("cheap", {SKU: "10.00", OTHER: "48.00"}),
        supplier("dear", {SKU: "10.50", OTHER: "49.00"}),
    )
    router.board.observe("cheap", SKU, Rejected(RejectReason.OUT_OF_STOCK), 0.0)
    ranking = router.rank(SKU, 1.0)
    assert [c.supplier for c in ranking.candidates] == ["dear"]
    assert [(e.supplier, e.reason) for e in ranking.excluded] == [("cheap", Excluded.OUT_OF_STOCK)]
    for i in range(50):
        assert attempt(router, 1.0 + i, lambda _: Delivered(), sku=OTHER) == "cheap"
    assert router.board.health("cheap", OTHER, 60.0) == (Health.HEALTHY, None)
    # back after the cool-down, or at once when a catalog says it is in stock
    router.board.set_catalog_entry("cheap", SKU, price=None, available=True, now=70.0)
    assert chosen(router.choose(SKU, 70.0)) == "cheap"


def test_a_drained_supplier_is_skipped_until_a_balance_refresh() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    board = router.board
    board.set_balance("cheap", Decimal("1000.00"), 0.0)
    board.observe("cheap", SKU, Rejected(RejectReason.INSUFFICIENT_BALANCE), 1.0, cost=Decimal("10.00"))
    for t in (2.0, 30.0, 600.0, 6000.0):  # no clock brings it back
        ranking = router.rank(SKU, t)
        assert [c.supplier for c in ranking.candidates] == ["dear"]
        assert [(e.supplier, e.reason) for e in ranking.excluded] == [("cheap", Excluded.DRAINED)]
    board.set_balance("cheap", Decimal("5.00"), 6060.0)  # a refresh, still short
    assert chosen(router.choose(SKU, 6060.0)) == "dear"
    board.set_balance("cheap", Decimal("500.00"), 6120.0)  # topped up
    assert chosen(router.choose(SKU, 6120.0)) == "cheap"
    assert board.supplier("cheap").stats.attempts == 0  # its score never moved


def test_a_known_balance_too_low_for_the_order_excludes_the_supplier() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    router.board.set_balance("cheap", Decimal("25.00"), 0.0)
    assert chosen(router.choose(SKU, 1.0, quantity=2)) == "cheap"
    router.release("cheap")
    ranking = router.rank(SKU, 1.0, quantity=3)
    assert [(e.supplier, e.reason, e.detail) for e in ranking.excluded] == [
        ("cheap", Excluded.BALANCE_LOW, "balance 25.00")
    ]
    router.board.spend("cheap", Decimal("20.00"))
    assert chosen(router.choose(SKU, 2.0)) == "dear"


# ------------------------------------------------------------------ limits


def test_rate_and_in_flight_limits_hold_when_many_orders_arrive_at_once() -> None:
    router = make_router(
        supplier("cheap", {SKU: "10.00"}, rate=5, in_flight=3),
        supplier("dear", {SKU: "10.50"}, rate=8, in_flight=100),
    )
    results = [router.choose(SKU, 0.0) for _ in range(100)]
    picks = Counter(r.candidate.supplier for r in results if isinstance(r, Choice))
    assert picks == {"cheap": 3, "dear": 8}
    waits = [r for r in results if not isinstance(r, Choice)]
    assert len(waits) == 89
    assert all(r.candidates for r in waits)  # at their limits, not excluded
    assert 0 < router.wait_hint(waits[0], 0.0) <= 1 / 5
    assert router.limiters["cheap"].in_flight == 3


def test_limits_hold_over_time_under_concurrent_load() -> None:
    rate = {"cheap": 5.0, "dear": 20.0}
    cap = {"cheap": 4, "dear": 10}
    router = make_router(
        supplier("cheap", {SKU: "10.00"}, rate=rate["cheap"], in_flight=cap["cheap"]),
        supplier("dear", {SKU: "10.50"}, rate=rate["dear"], in_flight=cap["dear"]),
    )
    rng = random.Random(3)
    holding: list[tuple[float, str]] = []  # (release at, supplier)
    submits: dict[str, list[float]] = {"cheap": [], "dear": []}
    peak = Counter[str]()
    for step in range(2000):  # 20 s in 10 ms steps, 40 orders per step
        now = step * 0.01
        for at, name in [h for h in holding if h[0] <= now]:
            holding.remove((at, name))
            router.release(name)
        for _ in range(40):
            result = router.choose(SKU, now)
            if isinstance(result, Choice):
                name = result.candidate.supplier
                submits[name].append(now)
                holding.append((now + rng.uniform(0.05, 1.5), name))
        for name in cap:
            peak[name] = max(peak[name], router.limiters[name].in_flight)
            assert router.limiters[name].in_flight <= cap[name]
    for name, times in submits.items():
        burst = max(1.0, rate[name])
        for i, t in enumerate(times):  # any window [t, t + 1 s) holds at most rate + burst
            in_window = sum(1 for u in times[i:] if u < t + 1.0)
            assert in_window <= rate[name] + burst
        assert len(times) <= rate[name] * 20.0 + burst
    assert peak["cheap"] == cap["cheap"] or len(submits["cheap"]) >= rate["cheap"] * 19


def test_the_limiter_refuses_to_be_overdrawn() -> None:
    limiter = Limiter(rate_per_s=2.0, max_in_flight=1)
    limiter.take_submit(0.0)
    assert not limiter.can_submit(0.0)
    with pytest.raises(RuntimeError):
        limiter.take_submit(0.0)
    limiter.in_flight = 0
    limiter.take_submit(0.0)  # the second token of the burst
    limiter.in_flight = 0
    assert not limiter.can_submit(0.1)
    assert limiter.wait_hint(0.1) == pytest.approx(0.4)
    assert limiter.can_submit(0.5)


def test_the_best_at_its_limit_overflows_to_the_next() -> None:
    router = make_router(
        supplier("cheap", {SKU: "10.00"}, rate=1, in_flight=10), supplier("dear", {SKU: "10.50"})
    )
    assert chosen(router.choose(SKU, 0.0)) == "cheap"
    second = router.choose(SKU, 0.0)
    assert isinstance(second, Choice)
    assert second.candidate.supplier == "dear" and second.why == "overflow"


def test_rate_limited_pauses_a_supplier_for_retry_after() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    router.board.observe("cheap", SKU, RateLimited(retry_after=2.0), 10.0)
    during = router.choose(SKU, 11.0)
    assert isinstance(during, Choice) and during.candidate.supplier == "dear" and during.why == "overflow"
    paused = during.ranking.candidates[0]
    assert paused.supplier == "cheap" and paused.at_limit and paused.paused_s == pytest.approx(1.0)
    router.release("dear")
    assert chosen(router.choose(SKU, 12.01)) == "cheap"


def test_a_pause_is_waited_out_not_a_reason_to_fail_the_order() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    router.board.observe("cheap", SKU, RateLimited(retry_after=3.0), 0.0)
    ranking = router.choose(SKU, 1.0, tried={"dear"})
    assert isinstance(ranking, Ranking)
    assert [c.supplier for c in ranking.candidates] == ["cheap"]  # wait for it
    assert router.wait_hint(ranking, 1.0) == pytest.approx(2.0)


# ------------------------------------------------- ranking and exploration


def test_near_ties_spread_load() -> None:
    router = make_router(
        supplier("a", {SKU: "10.00"}), supplier("b", {SKU: "10.01"}), supplier("c", {SKU: "10.30"})
    )
    picks = Counter(attempt(router, i * 0.01, lambda _: Delivered()) for i in range(2000))
    assert picks["a"] > 700 and picks["b"] > 700
    assert picks["c"] == 0


def test_a_cheaper_supplier_is_not_a_tie_just_because_its_estimate_dipped() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.05"}))
    router.board.observe("cheap", SKU, Failed(), 0.0)
    ranking = router.rank(SKU, 1.0)
    assert [c.supplier for c in ranking.candidates] == ["cheap", "dear"]
    assert Counter(chosen(router.choose(SKU, 1.0 + i)) for i in range(200)) == {"cheap": 200}


def make_explorer(**policy: object) -> Router:
    """'shaky' is the cheapest but, after a run of failures, ranks below
    'steady'; 'ejected' is cheaper still but ejected; 'dear' is dearer."""
    scoring = ScoringConfig(eject_after_failures=1000, eject_below_success=0.0)
    router = make_router(
        supplier("ejected", {SKU: "9.00"}),
        supplier("shaky", {SKU: "9.90"}),
        supplier("steady", {SKU: "10.00"}),
        supplier("dear", {SKU: "10.40"}),
        scoring=scoring,
        **policy,
    )
    for i in range(60):
        router.board.observe("shaky", SKU, Delivered() if i % 3 == 0 else Failed(), float(i))
    ej = router.board.supplier("ejected").stats.ejection
    ej.eject(0.0, scoring)
    ej.until = 1e9
    return router


def test_exploration_tries_a_cheaper_supplier_that_ranks_lower() -> None:
    router = make_explorer(explore_share=0.5)
    ranking = router.rank(SKU, 100.0)
    assert [c.supplier for c in ranking.candidates] == ["steady", "dear", "shaky"]
    whys = Counter()
    for i in range(400):
        choice = router.choose(SKU, 100.0 + i)
        assert isinstance(choice, Choice)
        whys[(choice.candidate.supplier, choice.why)] += 1
        router.release(choice.candidate.supplier)
    assert set(whys) == {("steady", "best"), ("shaky", "explore")}
    assert 120 < whys[("shaky", "explore")] < 280


def test_exploration_never_picks_an_ejected_supplier_nor_one_above_max_price() -> None:
    router = make_explorer(explore_share=1.0)
    for i in range(200):
        choice = router.choose(SKU, 100.0 + i, max_price=Decimal("10.00"))
        assert isinstance(choice, Choice)
        assert choice.candidate.supplier == "shaky"  # only ever the healthy cheaper one
        assert choice.candidate.unit_price <= Decimal("10.00")
        router.release("shaky")
    # with no cheaper healthy candidate there is nothing to explore: a
    # dearer runner-up, or one above the ceiling, is never tried this way
    for i in range(200):
        choice = router.choose(SKU, 400.0 + i, max_price=Decimal("10.20"), tried={"shaky"})
        assert isinstance(choice, Choice)
        assert (choice.candidate.supplier, choice.why) == ("steady", "best")
        router.release("steady")


def test_catalog_price_replaces_configured_price_and_shows_in_the_ranking() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.20"}))
    router.board.set_catalog_entry("cheap", SKU, price=Decimal("10.50"), available=True, now=0.0)
    ranking = router.rank(SKU, 1.0)
    assert [c.supplier for c in ranking.candidates] == ["dear", "cheap"]
    cheap = ranking.candidates[1]
    assert (cheap.unit_price, cheap.configured_price, cheap.price_source) == (
        Decimal("10.50"),
        Decimal("10.00"),
        "catalog",
    )
    shown = ranking.to_json()["candidates"][1]
    assert isinstance(shown, dict)
    assert (shown["unit_price"], shown["configured_price"], shown["price_source"]) == (
        "10.50",
        "10.00",
        "catalog",
    )
    # the catalog price is what the ceiling is checked against
    capped = router.rank(SKU, 1.0, max_price=Decimal("10.30"))
    assert [(e.supplier, e.reason, e.detail) for e in capped.excluded] == [
        ("cheap", Excluded.ABOVE_MAX_PRICE, "10.50 > 10.30")
    ]


def test_a_price_rise_charged_on_delivery_moves_orders_at_once() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.20"}))
    assert attempt(router, 0.0, lambda _: Delivered(unit_cost=Decimal("10.40"))) == "cheap"
    ranking = router.rank(SKU, 1.0)
    assert [(c.supplier, c.price_source) for c in ranking.candidates] == [
        ("dear", "config"),
        ("cheap", "charged"),
    ]


def test_the_explained_ranking_lists_each_excluded_supplier_with_its_reason() -> None:
    suppliers = [
        supplier("best", {SKU: "10.00"}),
        supplier("off", {SKU: "9.00"}, enabled=False),
        supplier("noclient", {SKU: "9.10"}),
        supplier("tried", {SKU: "9.20"}),
        supplier("pricey", {SKU: "20.00"}),
        supplier("nostock", {SKU: "9.30"}),
        supplier("shelf", {SKU: "9.40"}),
        supplier("drained", {SKU: "9.50"}),
        supplier("poor", {SKU: "9.60"}),
        supplier("ejected", {SKU: "9.70"}),
        supplier("probing", {SKU: "9.80"}),
        supplier("elsewhere", {OTHER: "1.00"}),
    ]
    router = make_router(*suppliers)
    router.available = {s.name for s in suppliers} - {"noclient"}
    board = router.board
    board.observe("nostock", SKU, Rejected(RejectReason.OUT_OF_STOCK), 0.0)
    board.set_catalog_entry("shelf", SKU, price=None, available=False, now=0.0)
    board.observe("drained", SKU, Rejected(RejectReason.INSUFFICIENT_BALANCE), 0.0, cost=Decimal("9.50"))
    board.set_balance("poor", Decimal("3.00"), 0.0)
    n = board.config.eject_after_failures
    for name in ("ejected", "probing"):
        for _ in range(n):
            board.observe(name, SKU, Failed(), 0.0)
    board.supplier("ejected").stats.ejection.until = 1e9
    now = board.supplier("probing").stats.ejection.until
    assert chosen(router.choose(SKU, now, tried={"tried"})) == "probing"  # the probe goes out
    ranking = router.rank(SKU, now, max_price=Decimal("15.00"), tried={"tried"})
    assert [c.supplier for c in ranking.candidates] == ["best"]
    assert [(e.supplier, e.reason) for e in ranking.excluded] == [
        ("drained", Excluded.DRAINED),
        ("ejected", Excluded.EJECTED),
        ("noclient", Excluded.NO_CLIENT),
        ("nostock", Excluded.OUT_OF_STOCK),
        ("off", Excluded.DISABLED),
        ("poor", Excluded.BALANCE_LOW),
        ("pricey", Excluded.ABOVE_MAX_PRICE),
        ("probing", Excluded.PROBE_IN_FLIGHT),
        ("shelf", Excluded.OFF_SHELF),
        ("tried", Excluded.ALREADY_TRIED),
    ]
    shown = ranking.to_json()
    assert shown["sku"] == SKU and shown["panic"] is False
    excluded = shown["excluded"]
    assert isinstance(excluded, list)
    assert {"supplier": "pricey", "reason": "above_max_price", "detail": "20.00 > 15.00"} in excluded
    candidate = shown["candidates"][0]  # type: ignore[index]
    for term in ("unit_price", "success", "latency_ms", "failure_term", "latency_term", "score", "health"):
        assert term in candidate


def test_every_candidate_carries_the_terms_of_its_score() -> None:
    router = make_router(supplier("a", {SKU: "10.00"}), failure_cost=0.1, latency_cost_per_s=0.01)
    for i in range(5):
        router.board.observe("a", SKU, Delivered(), float(i), latency_s=2.0)
    router.board.observe("a", SKU, Failed(), 5.0, latency_s=2.0)
    c = router.rank(SKU, 6.0).candidates[0]
    assert c.failure_term == pytest.approx(0.1 * (1 - c.success) / c.success)
    assert c.latency_term == pytest.approx(0.01 * c.latency_s / c.success)
    assert c.score == pytest.approx(10.0 * (1 + c.failure_term + c.latency_term))


# ------------------------------------------------------- the fast path
# (tests/test_routing_equivalence.py holds choose to the full ranking's pick)


def test_choose_scores_only_the_candidates_its_pick_depends_on() -> None:
    router = make_router(*(supplier(f"s{i:04d}", {SKU: f"{10 + i / 100:.2f}"}) for i in range(1000)))
    scored = Counter[str]()
    success_of = router.board.success_of

    def counting(sup: SupplierState, off: OfferState, now: float) -> float:
        scored["n"] += 1
        return success_of(sup, off, now)

    router.board.success_of = counting  # type: ignore[method-assign]
    for i in range(100):
        name = attempt(router, i * 0.5, lambda _: Delivered())
        assert name in {"s0000", "s0001", "s0002"}  # within the tie band of the best
    assert scored["n"] <= 100 * 5  # a handful per decision, not a thousand
    scored.clear()
    assert len(router.rank(SKU, 60.0).candidates) == 1000
    assert scored["n"] == 1000


def test_a_catalog_price_change_reaches_the_next_choice() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    assert chosen(router.choose(SKU, 0.0)) == "cheap"
    router.board.set_catalog_entry("dear", SKU, price=Decimal("9.00"), available=True, now=1.0)
    assert chosen(router.choose(SKU, 1.0)) == "dear"
    router.board.set_catalog_entry("dear", SKU, price=None, available=None, now=2.0)
    assert chosen(router.choose(SKU, 2.0)) == "cheap"


def test_a_reload_reaches_the_next_choice() -> None:
    cheap, dear = supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"})
    router = make_router(cheap, dear)
    assert chosen(router.choose(SKU, 0.0)) == "cheap"
    off = supplier("cheap", {SKU: "10.00"}, enabled=False)
    router.configure({"cheap": off, "dear": dear})
    assert chosen(router.choose(SKU, 1.0)) == "dear"
    newcomer = supplier("newcomer", {SKU: "9.00"})
    router.configure({"cheap": cheap, "dear": dear, "newcomer": newcomer})
    assert chosen(router.choose(SKU, 2.0)) == "newcomer"
    router.configure({"cheap": cheap, "dear": supplier("dear", {SKU: "8.00"})})
    assert chosen(router.choose(SKU, 3.0)) == "dear"


def test_the_ranking_of_a_choice_is_built_when_read() -> None:
    router = make_router(supplier("cheap", {SKU: "10.00"}), supplier("dear", {SKU: "10.50"}))
    choice = router.choose(SKU, 5.0, tried={"dear"})
    assert isinstance(choice, Choice)
    ranking = choice.ranking
    assert ranking is choice.ranking  # built once
    assert ranking == router.rank(SKU, 5.0, tried={"dear"})
    assert [(e.supplier, e.reason) for e in ranking.excluded] == [("dear", Excluded.ALREADY_TRIED)]
    # read after the choice: the slot it took shows
    assert ranking.candidates[0] == attrs.evolve(choice.candidate, in_flight=1, tokens=999.0)
