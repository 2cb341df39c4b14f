"""The scoreboard: what each outcome teaches, against whom, and ejection.
Pure and fast: time is a plain float passed in, nothing sleeps."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kamen_router.outcome import (
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    NotFound,
    Outcome,
    Pending,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.scoring import Health, Scoreboard, ScoringConfig

SKU = "mobile-cmcc-100"
OTHER = "steam-50"


def snapshot(board: Scoreboard, supplier: str, sku: str, now: float) -> tuple[object, ...]:
    sup = board.supplier(supplier)
    off = board.offer(supplier, sku)
    return (
        board.success(supplier, sku, now),
        board.latency(supplier, sku),
        board.health(supplier, sku, now),
        sup.stats.attempts,
        sup.stats.ejection.consecutive_failures,
        off.stats.attempts,
        off.stats.ejection.consecutive_failures,
        off.out_until,
        sup.drained_need,
        sup.paused_until,
    )


def test_invalid_never_moves_a_score() -> None:
    board = Scoreboard()
    for i in range(20):
        board.observe("a", SKU, Delivered(), float(i), latency_s=0.2)
    board.observe("a", SKU, Failed(), 20.0, latency_s=0.3)
    before = snapshot(board, "a", SKU, 30.0)
    for i, reason in enumerate(list(InvalidReason) * 10):
        board.observe("a", SKU, Invalid(reason), 21.0 + i * 0.1, latency_s=30.0)
    assert snapshot(board, "a", SKU, 30.0) == before


def test_invalid_on_a_fresh_supplier_leaves_it_at_the_prior() -> None:
    board = Scoreboard()
    fresh = snapshot(board, "b", SKU, 5.0)
    for i in range(50):
        board.observe("b", SKU, Invalid(InvalidReason.MISSING_FIELD), float(i) * 0.1, latency_s=9.0)
    assert snapshot(board, "b", SKU, 5.0) == fresh
    assert board.success("b", SKU, 5.0) == pytest.approx(board.config.prior_success)


@pytest.mark.parametrize(
    "outcome",
    [Pending(), NotFound(), Rejected(RejectReason.PRICE_ABOVE_CEILING)],
    ids=["pending", "not_found", "price_above_ceiling"],
)
def test_outcomes_the_supplier_did_not_decide_count_for_nothing(outcome: Outcome) -> None:
    board = Scoreboard()
    board.observe("a", SKU, Delivered(), 0.0)
    before = board.success("a", SKU, 1.0)
    for i in range(10):
        board.observe("a", SKU, outcome, 1.0 + i)
    assert board.success("a", SKU, 20.0) == pytest.approx(before, abs=1e-3)
    assert board.health("a", SKU, 20.0) == (Health.HEALTHY, None)


def test_out_of_stock_counts_against_the_offer_only() -> None:
    board = Scoreboard()
    board.observe("a", SKU, Rejected(RejectReason.OUT_OF_STOCK), 10.0)
    off = board.offer("a", SKU)
    assert off.out_until == 10.0 + board.config.offer_out_s
    assert off.out_reason == "out_of_stock"
    assert board.supplier("a").stats.attempts == 0
    assert board.offer("a", OTHER).out_until == 0.0
    assert board.success("a", OTHER, 11.0) == pytest.approx(board.config.prior_success)
    # a delivery, or a catalog that shows it in stock, brings the offer back
    board.set_catalog_entry("a", SKU, price=None, available=True, now=20.0)
    assert off.out_until == 0.0


def test_supplier_faults_count_against_the_supplier_and_all_its_offers() -> None:
    board = Scoreboard()
    for i in range(3):
        board.observe("a", SKU, Rejected(RejectReason.UNREACHABLE), float(i))
    assert board.supplier("a").stats.attempts == 3
    assert board.offer("a", SKU).stats.attempts == 0
    assert board.success("a", OTHER, 3.0) < board.config.prior_success


def test_a_new_offer_starts_from_the_suppliers_record() -> None:
    board = Scoreboard()
    for i in range(200):
        board.observe("a", SKU, Delivered(), float(i))
    assert board.success("a", OTHER, 200.0) == pytest.approx(board.success("a", SKU, 200.0), abs=1e-3)
    assert board.success("a", OTHER, 200.0) > 0.98


def test_the_estimate_does_not_count_a_failure_twice() -> None:
    """Deliveries and failures land in the supplier's and the offer's
    records both; the estimate must match the observed rate, not its square."""
    board = Scoreboard(ScoringConfig(prior_weight=1.0))
    for i in range(300):
        board.observe("a", SKU, Delivered() if i % 5 else Failed(), float(i) * 0.01)
    assert board.success("a", SKU, 3.0) == pytest.approx(0.8, abs=0.01)


def test_success_decays_toward_the_prior() -> None:
    board = Scoreboard()
    for i in range(40):
        board.observe("a", SKU, Failed(), float(i) * 0.1)
    low = board.success("a", SKU, 5.0)
    later = board.success("a", SKU, 5.0 + 5 * board.config.half_life_s)
    much_later = board.success("a", SKU, 5.0 + 20 * board.config.half_life_s)
    assert low < 0.6 < later < much_later
    assert much_later == pytest.approx(board.config.prior_success, abs=1e-3)


def test_latency_learns_from_answers_not_from_timeouts() -> None:
    board = Scoreboard()
    board.observe("a", SKU, Delivered(), 0.0, latency_s=0.2)
    board.observe("a", SKU, Unknown("timeout"), 1.0, latency_s=10.0)
    board.observe("a", SKU, Rejected(RejectReason.UNREACHABLE), 2.0, latency_s=5.0)
    assert board.latency("a", SKU) == pytest.approx(0.2)
    board.observe("a", SKU, Pending(), 3.0, latency_s=0.4)
    assert 0.2 < board.latency("a", SKU) < 0.4


def test_rate_limited_pauses_for_retry_after() -> None:
    board = Scoreboard()
    board.observe("a", SKU, RateLimited(retry_after=2.5), 100.0)
    assert board.supplier("a").paused_until == 102.5
    board.observe("a", SKU, RateLimited(retry_after=None), 101.0)  # no hint: one second
    assert board.supplier("a").paused_until == 102.5
    assert board.supplier("a").stats.attempts == 0  # being busy is not failing


def test_insufficient_balance_drains_until_a_refresh_shows_enough() -> None:
    board = Scoreboard()
    board.set_balance("a", Decimal("500.00"), 0.0)
    board.observe("a", SKU, Rejected(RejectReason.INSUFFICIENT_BALANCE), 10.0, cost=Decimal("98.20"))
    sup = board.supplier("a")
    assert sup.drained_need == Decimal("98.20")
    board.set_balance("a", Decimal("50.00"), 70.0)
    assert sup.drained_need is not None
    board.set_balance("a", Decimal("1000.00"), 130.0)
    assert sup.drained_need is None
    assert sup.stats.attempts == 0  # an empty purse is not a failing supplier


def test_spend_lowers_the_known_balance() -> None:
    board = Scoreboard()
    board.spend("a", Decimal("10"))  # unknown balance stays unknown
    assert board.supplier("a").balance is None
    board.set_balance("a", Decimal("100.00"), 0.0)
    board.spend("a", Decimal("98.20"))
    assert board.supplier("a").balance == Decimal("1.80")


# ------------------------------------------------------------------ prices


def test_catalog_price_replaces_the_configured_one() -> None:
    board = Scoreboard()
    assert board.price("a", SKU, Decimal("98.20"), 0.0) == (Decimal("98.20"), "config")
    board.set_catalog_entry("a", SKU, price=Decimal("97.90"), available=True, now=1.0)
    assert board.price("a", SKU, Decimal("98.20"), 2.0) == (Decimal("97.90"), "catalog")


def test_a_higher_charge_raises_the_price_before_the_catalog_shows_it() -> None:
    board = Scoreboard()
    board.set_catalog_entry("a", SKU, price=Decimal("97.80"), available=True, now=0.0)
    board.observe("a", SKU, Delivered(unit_cost=Decimal("99.20")), 10.0)
    assert board.price("a", SKU, Decimal("97.80"), 11.0) == (Decimal("99.20"), "charged")
    # an order taken before the rise and delivered after it is no price cut
    board.observe("a", SKU, Delivered(unit_cost=Decimal("97.80")), 12.0)
    assert board.price("a", SKU, Decimal("97.80"), 13.0) == (Decimal("99.20"), "charged")
    # the next catalog is the word on cuts
    board.set_catalog_entry("a", SKU, price=Decimal("97.50"), available=True, now=300.0)
    assert board.price("a", SKU, Decimal("97.80"), 301.0) == (Decimal("97.50"), "catalog")


def test_a_raise_learnt_from_a_charge_expires_without_new_charges() -> None:
    cfg = ScoringConfig(charged_price_ttl_s=100.0)
    board = Scoreboard(cfg)
    board.observe("a", SKU, Delivered(unit_cost=Decimal("99.20")), 0.0)
    assert board.price("a", SKU, Decimal("97.80"), 50.0)[0] == Decimal("99.20")
    assert board.price("a", SKU, Decimal("97.80"), 101.0) == (Decimal("97.80"), "config")
    # after it expired, what is charged next counts even if lower
    board.observe("a", SKU, Delivered(unit_cost=Decimal("98.00")), 150.0)
    assert board.price("a", SKU, Decimal("97.80"), 151.0) == (Decimal("98.00"), "charged")


def test_no_price_is_below_the_base_price() -> None:
    # the router's fast path orders offers by base price on this promise
    cfg = ScoringConfig(charged_price_ttl_s=100.0)
    board = Scoreboard(cfg)
    off = board.offer("a", SKU)
    configured = Decimal("98.00")
    for t, cost, catalog in [(0.0, "99.00", None), (10.0, "97.00", None), (20.0, "99.50", "97.50")]:
        board.observe("a", SKU, Delivered(unit_cost=Decimal(cost)), t)
        if catalog is not None:
            board.set_catalog_entry("a", SKU, price=Decimal(catalog), available=True, now=t)
        for now in (t, t + 50.0, t + 150.0):
            assert board.price("a", SKU, configured, now)[0] >= Scoreboard.base_price_of(off, configured)


def test_the_epoch_moves_with_catalog_prices_and_forgotten_states() -> None:
    board = Scoreboard()
    epoch = board.epoch
    board.set_catalog_entry("a", SKU, price=Decimal("97.90"), available=True, now=0.0)
    assert board.epoch > epoch
    epoch = board.epoch
    # a refresh with the same price, stock news, outcomes and balances:
    # nothing that moves a base price
    board.set_catalog_entry("a", SKU, price=Decimal("97.90"), available=False, now=1.0)
    board.observe("a", SKU, Delivered(unit_cost=Decimal("99.00")), 2.0, latency_s=0.3)
    board.set_balance("a", Decimal("10"), 3.0)
    assert board.epoch == epoch
    board.set_catalog_entry("a", SKU, price=None, available=True, now=4.0)
    assert board.epoch > epoch
    epoch = board.epoch
    board.forget({"b"})
    assert board.epoch > epoch


def test_the_readings_from_states_are_the_readings_by_name() -> None:
    board = Scoreboard()
    for i in range(20):
        board.observe("a", SKU, Failed() if i % 4 == 0 else Delivered(), float(i), latency_s=0.1 * i)
        board.observe("a", OTHER, Unknown("timeout"), float(i) + 0.5)
    assert not board.negative_latency
    sup, off = board.supplier("a"), board.offer("a", SKU)
    for now in (0.0, 19.0, 25.0, 900.0):
        assert board.success_of(sup, off, now) == board.success("a", SKU, now)
        assert board.health_of(sup, off, now) == board.health("a", SKU, now)
        assert board.price_of(off, Decimal("9.99"), now) == board.price("a", SKU, Decimal("9.99"), now)
    assert board.latency_of(sup, off) == board.latency("a", SKU)
    board.observe("a", SKU, Delivered(), 30.0, latency_s=-0.01)
    assert board.negative_latency


def test_off_shelf_in_the_catalog_keeps_the_offer_out() -> None:
    board = Scoreboard()
    board.set_catalog_entry("a", SKU, price=None, available=False, now=0.0)
    assert board.offer("a", SKU).out_reason == "off_shelf"
    assert board.offer("a", SKU).out_until == float("inf")


# --------------------------------------------------------------- ejection


def fail(board: Scoreboard, now: float, times: int = 1, supplier: str = "a") -> None:
    for _ in range(times):
        board.observe(supplier, SKU, Failed(), now)


def test_consecutive_failures_eject() -> None:
    cfg = ScoringConfig()
    board = Scoreboard(cfg)
    board.observe("a", SKU, Delivered(), 0.0)
    fail(board, 1.0, cfg.eject_after_failures - 1)
    assert board.health("a", SKU, 1.0)[0] is Health.HEALTHY
    board.observe("a", SKU, Delivered(), 1.5)  # a success starts the count over
    fail(board, 2.0, cfg.eject_after_failures - 1)
    assert board.health("a", SKU, 2.0)[0] is Health.HEALTHY
    fail(board, 2.0)
    assert board.health("a", SKU, 2.0) == (Health.EJECTED, "supplier")
    assert board.health("a", SKU, 2.0 + cfg.eject_base_s) == (Health.PROBING, "supplier")


def test_low_success_with_enough_evidence_ejects() -> None:
    cfg = ScoringConfig(eject_after_failures=1000, prior_weight=2.0)
    board = Scoreboard(cfg)
    now = 0.0
    for i in range(60):  # every other attempt fails: never many in a row
        now = float(i)
        board.observe("a", SKU, Delivered() if i % 3 == 0 else Failed(), now)
        if board.health("a", SKU, now)[0] is Health.EJECTED:
            break
    assert board.health("a", SKU, now)[0] is Health.EJECTED


def test_cooldown_grows_on_repeat_up_to_the_cap() -> None:
    cfg = ScoringConfig(eject_base_s=10.0, eject_max_s=60.0)
    board = Scoreboard(cfg)
    ejection = board.supplier("a").stats.ejection
    now = 0.0
    fail(board, now, cfg.eject_after_failures)
    cooldowns = []
    for _ in range(6):
        cooldowns.append(ejection.until - now)
        now = ejection.until
        assert board.health("a", SKU, now)[0] is Health.PROBING
        fail(board, now)  # the probe fails: out again at once, for longer
        assert board.health("a", SKU, now)[0] is Health.EJECTED
    assert cooldowns == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_a_successful_probe_heals_and_a_long_healthy_spell_forgets() -> None:
    cfg = ScoringConfig(eject_base_s=10.0, eject_max_s=600.0, eject_forget_s=100.0)
    board = Scoreboard(cfg)
    ejection = board.supplier("a").stats.ejection
    fail(board, 0.0, cfg.eject_after_failures)
    fail(board, 10.0)  # failed probe: 20 s
    board.observe("a", SKU, Delivered(), 30.0)
    assert board.health("a", SKU, 30.0) == (Health.HEALTHY, None)
    assert ejection.ejections == 2
    fail(board, 500.0, cfg.eject_after_failures)  # long after: starts over
    assert ejection.ejections == 1
    assert ejection.until == 510.0


def test_failures_while_ejected_do_not_extend_the_cooldown() -> None:
    cfg = ScoringConfig(eject_base_s=10.0)
    board = Scoreboard(cfg)
    fail(board, 0.0, cfg.eject_after_failures)
    fail(board, 5.0, 20)  # late replies of orders sent before the ejection
    assert board.supplier("a").stats.ejection.until == 10.0
    assert board.supplier("a").stats.ejection.ejections == 1


def test_offer_ejection_leaves_other_offers_alone() -> None:
    cfg = ScoringConfig()
    board = Scoreboard(cfg)
    for i in range(cfg.eject_after_failures):
        board.observe("a", SKU, Rejected(RejectReason.PRODUCT_UNAVAILABLE), float(i))
    assert board.health("a", SKU, 5.0) == (Health.EJECTED, "offer")
    assert board.health("a", OTHER, 10.0) == (Health.HEALTHY, None)


def test_forget_drops_unconfigured_suppliers() -> None:
    board = Scoreboard()
    fail(board, 0.0, supplier="gone")
    board.observe("kept", SKU, Delivered(), 0.0)
    board.forget({"kept"})
    assert set(board.suppliers) == {"kept"}
    assert {k[0] for k in board.offers} == {"kept"}
