"""The metrics endpoint: names, types and label sets as docs/metrics.md
documents them, label values only from configuration and fixed enums, a
clean ``promtool check metrics``, and a series count bounded by the number
of suppliers, whatever the size of their catalogs."""

from __future__ import annotations

import logging
import re
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from conftest import supplier, write_config
from prometheus_client.parser import text_string_to_metric_families

from kamen_router import __version__
from kamen_router.config import Limits, Offer, RouterConfig, Secret, SkuConfig, SupplierConfig, load_config
from kamen_router.daemon import Daemon
from kamen_router.dispatch import CALLBACK_RESULTS, Dispatcher
from kamen_router.journal import open_journal
from kamen_router.metrics import Metrics
from kamen_router.orders import SETTLED, State
from kamen_router.outcome import Kind
from kamen_router.plugin import load_plugins

SKU = "mobile-cmcc-100"
ACCOUNT = "13800138000"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"

#: family name (as the parser names it) -> (type, label names), per issue 5
#: and docs/metrics.md
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "kamen_router_orders": ("counter", {"state"}),
    "kamen_router_orders_received": ("counter", set()),
    "kamen_router_open_orders": ("gauge", set()),
    "kamen_router_attempts": ("counter", {"supplier", "operation", "outcome"}),
    "kamen_router_supplier_request_duration_seconds": ("histogram", {"supplier", "operation"}),
    "kamen_router_supplier_success_ratio": ("gauge", {"supplier"}),
    "kamen_router_supplier_latency_seconds": ("gauge", {"supplier"}),
    "kamen_router_supplier_ejected": ("gauge", {"supplier"}),
    "kamen_router_supplier_ejection_streak": ("gauge", {"supplier"}),
    "kamen_router_supplier_in_flight": ("gauge", {"supplier"}),
    "kamen_router_supplier_max_in_flight": ("gauge", {"supplier"}),
    "kamen_router_supplier_balance": ("gauge", {"supplier"}),
    "kamen_router_supplier_drained": ("gauge", {"supplier"}),
    "kamen_router_journal_commit_duration_seconds": ("histogram", set()),
    "kamen_router_config_last_reload_successful": ("gauge", set()),
    "kamen_router_config_reload_failures": ("counter", set()),
    "kamen_router_config_last_reload_success_timestamp_seconds": ("gauge", set()),
    "kamen_router_build_info": ("gauge", {"version"}),
}

#: label name -> the fixed values it may take (``supplier`` is checked
#: against the configuration, ``le`` against bucket bounds)
ENUMS: dict[str, set[str]] = {
    "state": {s.value for s in State},
    "operation": {"submit", "query"},
    "outcome": {k.value for k in Kind},
    # the dispatcher's results, and the two the callback listener adds
    # itself (kamen_router/api.py) before a callback reaches it
    "result": {*CALLBACK_RESULTS, "rejected", "forbidden_source"},
    "version": {__version__},
}


def three() -> dict[str, dict[str, Any]]:
    """cheap rejects (out of stock), mid takes orders and fails them, dear
    delivers: one order sees a rejection, a failure and two failovers."""
    return {
        "cheap": supplier({SKU: "98.20"}, simulate={"stock": 0}),
        "mid": supplier({SKU: "98.90"}, simulate={"fail_rate": 1.0}),
        "dear": supplier({SKU: "99.60"}),
    }


async def _scrape_after_orders(make_daemon: Any) -> tuple[str, Any]:
    daemon = await make_daemon(three(), skus={SKU: {}})
    # the catalog refresh may already have shown cheap as out of stock, in
    # which case routing skips it; either way mid fails and dear delivers
    delivered = await daemon.order({"order_id": "m-ok", "sku": SKU, "account": ACCOUNT})
    assert delivered["state"] == "delivered" and delivered["supplier"] == "dear"
    assert "failed" in [a["outcome"] for a in delivered["attempts"]]
    invalid = await daemon.order({"order_id": "m-bad", "sku": SKU, "account": "invalid-0000"})
    assert invalid["state"] == "failed"
    ceiling = await daemon.order({"order_id": "m-cap", "sku": SKU, "account": ACCOUNT, "max_price": 1})
    assert ceiling["state"] == "failed"
    # the balance refresh runs at start; wait (bounded) until every
    # supplier's balance is known so the balance gauge has all its series
    for _ in range(100):
        if all(
            s["balance"] is not None for s in (await daemon.http.get("/v1/suppliers")).json()["suppliers"]
        ):
            break
        await trio.sleep(0.05)
    return await daemon.scrape(), daemon


async def test_scrape_has_the_documented_metrics_and_labels(make_daemon: Any) -> None:
    with trio.fail_after(30):
        text, daemon = await _scrape_after_orders(make_daemon)
    configured = set(daemon.info.dispatcher.config.suppliers)
    families = {f.name: f for f in text_string_to_metric_families(text)}

    for name, (kind, labels) in EXPECTED.items():
        assert name in families, f"{name} missing from the scrape"
        family = families[name]
        assert family.type == kind, (name, family.type)
        for sample in family.samples:
            own = set(sample.labels) - {"le"}
            assert own == labels, (sample.name, sample.labels)

    # every family the daemon exports is documented
    documented = DOCS.read_text()
    for name, family in families.items():
        exported = f"{name}_total" if family.type == "counter" else name
        assert f"`{exported}`" in documented, f"{exported} is not in docs/metrics.md"

    # label values: configured supplier names and fixed enums only
    for family in families.values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "supplier":
                    assert value in configured, (sample.name, value)
                elif label == "le":
                    assert value == "+Inf" or float(value) >= 0, (sample.name, value)
                else:
                    assert label in ENUMS, f"{sample.name}: unexpected label {label}={value!r}"
                    assert value in ENUMS[label], (sample.name, label, value)
    for secret in ("m-ok", "m-bad", "m-cap", ACCOUNT, "invalid-0000", "test-key-0123456789"):
        assert secret not in text

    # counters end in _total (the _created timestamps aside)
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    for family in families.values():
        if family.type == "counter":
            for sample in family.samples:
                assert sample.name in (f"{family.name}_total", f"{family.name}_created"), sample.name

    # what the orders did shows up
    def value(name: str, **labels: str) -> float:
        for sample in families[name].samples:
            if sample.name.endswith("_created"):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        raise AssertionError(f"no sample of {name} with {labels}")

    assert value("kamen_router_orders", state="delivered") == 1
    assert value("kamen_router_orders", state="failed") == 2
    assert value("kamen_router_orders_received") == 3
    assert value("kamen_router_attempts", supplier="mid", operation="submit", outcome="failed") >= 1
    assert value("kamen_router_attempts", supplier="dear", operation="submit", outcome="delivered") == 1
    invalid_replies = [
        s for s in families["kamen_router_attempts"].samples if s.labels["outcome"] == "invalid"
    ]
    assert sum(s.value for s in invalid_replies) == 1
    assert value("kamen_router_supplier_request_duration_seconds", supplier="dear", operation="submit") >= 0
    assert value("kamen_router_config_last_reload_successful") == 1
    assert value("kamen_router_config_reload_failures") == 0
    assert value("kamen_router_build_info", version=__version__) == 1
    assert value("kamen_router_supplier_balance", supplier="dear") > 0
    assert value("kamen_router_supplier_ejected", supplier="dear") == 0
    assert value("kamen_router_supplier_in_flight", supplier="dear") == 0
    assert 0 < value("kamen_router_supplier_success_ratio", supplier="dear") <= 1
    assert value("kamen_router_supplier_latency_seconds", supplier="dear") > 0
    journal = [
        s
        for s in families["kamen_router_journal_commit_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert journal and journal[0].value > 0


async def test_promtool_finds_nothing_to_lint(make_daemon: Any, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: apt-get install prometheus (it ships /usr/bin/promtool)")
    with trio.fail_after(30):
        text, _daemon = await _scrape_after_orders(make_daemon)
        (tmp_path / "scrape.txt").write_text(text)
        result = await trio.run_process(
            [promtool, "check", "metrics"],
            stdin=text.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    lint = (result.stdout + result.stderr).decode().strip()
    print(f"promtool check metrics (exit {result.returncode}):\n{lint or '(no findings)'}")
    assert result.returncode == 0 and not lint, lint


# ---------------------------------------------------------------- cardinality


def _config(base: RouterConfig, suppliers: int, skus: int) -> RouterConfig:
    sku_names = [f"sku-{i:04d}" for i in range(skus)]
    sups = {}
    for n in range(suppliers):
        name = f"sup-{n:03d}"
        sups[name] = SupplierConfig(
            name=name,
            file=base.suppliers_dir / f"{name}.yaml",
            plugin="sim",
            enabled=True,
            endpoint="http://127.0.0.1:9",
            credentials={"api_key": Secret("test-key-0123456789")},
            limits=Limits(),
            offers={s: Offer(s, f"P-{s}", Decimal("10.00") + n) for s in sku_names},
        )
    return attrs.evolve(base, suppliers=sups, skus={s: SkuConfig(s) for s in sku_names})


async def _series(base: RouterConfig, journal: Any, suppliers: int, skus: int) -> tuple[int, float]:
    """Series in a scrape of a dispatcher on ``suppliers`` x ``skus`` with
    every label combination used (the worst case), and the scrape's time."""
    config = _config(base, suppliers, skus)
    metrics = Metrics()
    metrics.watch_journal(journal)
    metrics.register_suppliers(list(config.suppliers))
    dispatcher = Dispatcher(config, {}, journal, metrics)
    metrics.watch_suppliers(dispatcher.suppliers_snapshot)
    now = dispatcher.clock()
    for name in config.suppliers:
        dispatcher.router.board.set_balance(name, Decimal(1000), now)
        dispatcher.router.board.observe(name, "sku-0000", _delivered(), now, latency_s=0.1, cost=Decimal(10))
        for operation in ("submit", "query"):
            metrics.supplier_latency.labels(supplier=name, operation=operation).observe(0.1)
            for kind in Kind:
                metrics.attempts.labels(supplier=name, operation=operation, outcome=kind.value).inc()
        for result in ENUMS["result"]:
            metrics.callbacks.labels(supplier=name, result=result).inc()
        metrics.contradictions.labels(supplier=name).inc()
    for state in SETTLED:
        metrics.orders.labels(state=state.value).inc()
    for state in (State.DELIVERED, State.FAILED):
        metrics.resolved.labels(state=state.value).inc()
    metrics.orders_received.inc()
    metrics.open_orders.set(0)
    metrics.reload_succeeded()
    metrics.reload_failed()
    metrics.journal_commit.observe(0.001)
    start = time.perf_counter()
    text = metrics.exposition().decode()
    elapsed = time.perf_counter() - start
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    for line in series:
        assert "sku-" not in line, line
    return len(series), elapsed


def _delivered() -> Any:
    from kamen_router.outcome import Deliverables, Delivered

    return Delivered(Deliverables((), "R-1"), Decimal(10))


async def test_series_count_is_bounded_by_suppliers_not_skus(tmp_path: Path) -> None:
    base = load_config(write_config(tmp_path, {"a": supplier({SKU: "1.00"})}, skus={SKU: {}}))
    journal = await open_journal(tmp_path / "j.sqlite3")
    try:
        with trio.fail_after(60):
            big, big_s = await _series(base, journal, 100, 1000)
            one_sku, _ = await _series(base, journal, 100, 1)
            ten, _ = await _series(base, journal, 10, 1000)
    finally:
        await journal.close()
    bound = re.search(r"at most `(\d+) S \+ (\d+)` series", DOCS.read_text())
    assert bound, "docs/metrics.md states no series bound"
    per_s, base_count = int(bound[1]), int(bound[2])
    documented = per_s * 100 + base_count
    print(
        f"series with 100 suppliers x 1000 skus: {big} (scrape took {big_s * 1000:.0f} ms);"
        f" 100 x 1: {one_sku}; 10 x 1000: {ten};"
        f" documented bound: {documented}"
    )
    assert big == one_sku, "the series count must not depend on the number of skus"
    per_supplier = (big - ten) / 90
    assert per_supplier == int(per_supplier)
    fixed = big - 100 * per_supplier
    print(f"measured: {per_supplier:.0f} S + {fixed:.0f}")
    assert big <= documented, f"{big} series exceeds the documented {per_s} S + {base_count} = {documented}"


async def _daemon_scrape_s(base: RouterConfig, tmp_path: Path, skus: int) -> float:
    """Seconds one scrape of a real daemon takes with 100 suppliers x
    ``skus`` (their endpoint refuses connections; only the scrape matters)."""
    config = _config(base, 100, skus)
    config = attrs.evolve(config, journal=attrs.evolve(config.journal, path=tmp_path / f"j{skus}.sqlite3"))
    daemon = Daemon(config, load_plugins(None), poll_s=None)
    async with trio.open_nursery() as nursery:
        info = await nursery.start(daemon.run)
        assert info.metrics_url is not None
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            (await http.get(info.metrics_url)).raise_for_status()  # warm up
            start = time.perf_counter()
            (await http.get(info.metrics_url)).raise_for_status()
            elapsed = time.perf_counter() - start
        daemon.shutdown()
    return elapsed


async def test_a_scrape_costs_no_per_sku_work(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The collector exports per-supplier values only, so a scrape must not
    walk every offer: it runs on the event loop, and every order waits."""
    caplog.set_level(logging.ERROR, logger="kamen_router")  # 100 unreachable refreshes
    base = load_config(write_config(tmp_path, {"a": supplier({SKU: "1.00"})}, skus={SKU: {}}))
    with trio.fail_after(60):
        small_s = await _daemon_scrape_s(base, tmp_path, 1)
        big_s = await _daemon_scrape_s(base, tmp_path, 1000)
    print(f"scrape: 100 suppliers x 1 sku {small_s * 1000:.0f} ms, x 1000 skus {big_s * 1000:.0f} ms")
    assert big_s < max(0.25, 5 * small_s), f"a scrape took {big_s:.2f} s with 100 x 1000 offers"


def test_metric_names_follow_prometheus_conventions() -> None:
    metrics = Metrics()
    for family in metrics.registry.collect():
        assert re.fullmatch(r"kamen_router_[a-z0-9_]+", family.name), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client appends it
