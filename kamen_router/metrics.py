"""Prometheus metrics on a registry made per daemon.

Label values come only from configured supplier names and fixed enums
(order states, outcome kinds, operations), never from order ids, accounts or
free text, so the series count is bounded by configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from . import __version__
from .http import Request, Response

# the *_created series double the count and tell an operator nothing the
# process start time does not
disable_created_metrics()  # type: ignore[no-untyped-call]

#: supplier latency buckets, in seconds: card shops care from 10 ms to a minute
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every collector the daemon exports, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.orders = Counter(
            "kamen_router_orders", "Orders that reached a settled state, by state", ["state"], registry=r
        )
        self.resolved = Counter(
            "kamen_router_orders_resolved",
            "Orders a human settled from attention, by the state they settled in",
            ["state"],
            registry=r,
        )
        self.orders_received = Counter(
            "kamen_router_orders_received", "Orders accepted by the API", registry=r
        )
        self.attempts = Counter(
            "kamen_router_attempts",
            "Supplier replies to submits and queries, by supplier, operation and outcome",
            ["supplier", "operation", "outcome"],
            registry=r,
        )
        self.supplier_latency = Histogram(
            "kamen_router_supplier_request_duration_seconds",
            "Time from sending a request to a supplier to its reply, by supplier and operation",
            ["supplier", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.callbacks = Counter(
            "kamen_router_callbacks",
            "Supplier callbacks, by supplier and what became of them",
            ["supplier", "result"],
            registry=r,
        )
        self.contradictions = Counter(
            "kamen_router_callback_contradictions",
            "Callbacks that contradict a settled attempt in the journal (a human must look)",
            ["supplier"],
            registry=r,
        )
        self.open_orders = Gauge("kamen_router_open_orders", "Orders the daemon is still driving", registry=r)
        self.in_flight = Gauge(
            "kamen_router_supplier_in_flight",
            "Requests to a supplier awaiting a reply",
            ["supplier"],
            registry=r,
        )
        self.reload_ok = Gauge(
            "kamen_router_config_last_reload_successful",
            "1 if the last configuration load succeeded, 0 if it was refused",
            registry=r,
        )
        self.reload_failures = Counter(
            "kamen_router_config_reload_failures",
            "Reloads refused because the configuration was invalid",
            registry=r,
        )
        self.reload_at = Gauge(
            "kamen_router_config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (unix time)",
            registry=r,
        )
        self.journal_commit = Histogram(
            "kamen_router_journal_commit_duration_seconds",
            "Time to write and commit one journal transaction",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.build = Gauge(
            "kamen_router_build_info", "Always 1; the version in a label", ["version"], registry=r
        )
        self.build.labels(version=__version__).set(1)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept: ``labels`` checks and locks on
        every call, and the order path touches several series per order.
        (Label values are bounded by configuration, and no series is ever
        removed, so a kept child stays the live one.)"""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def reload_succeeded(self) -> None:
        self.reload_ok.set(1)
        self.reload_at.set_to_current_time()

    def reload_failed(self) -> None:
        self.reload_ok.set(0)
        self.reload_failures.inc()

    def watch_journal(self, journal: Any) -> None:
        journal.on_commit = self.journal_commit.observe

    def watch_suppliers(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        """Export the router's view of each supplier, read at scrape time."""
        self.registry.register(_SupplierCollector(snapshot))

    def register_suppliers(self, names: list[str]) -> None:
        """Make each supplier's series exist from the start, at zero."""
        for name in names:
            self.in_flight.labels(supplier=name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: Request) -> Response:
        if request.path != "/metrics":
            return Response.error(404, "not_found", "only /metrics is served here")
        if request.method not in ("GET", "HEAD"):
            return Response.error(405, "method_not_allowed", "use GET")
        return Response(200, self.exposition(), CONTENT_TYPE_LATEST)


class _SupplierCollector(Collector):
    """Score terms, ejection, limits and balance per supplier, from one
    snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # no fixed description: the supplier set can change on reload

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "kamen_router_supplier_success_ratio", "Estimated chance an attempt delivers", labels=["supplier"]
        )
        latency = GaugeMetricFamily(
            "kamen_router_supplier_latency_seconds",
            "Running mean of the supplier's reply time, as routing uses it",
            labels=["supplier"],
        )
        ejected = GaugeMetricFamily(
            "kamen_router_supplier_ejected", "1 while the supplier is ejected, else 0", labels=["supplier"]
        )
        ejections = GaugeMetricFamily(
            "kamen_router_supplier_ejection_streak",
            "Ejections in the current streak (the cool-down doubles with each)",
            labels=["supplier"],
        )
        balance = GaugeMetricFamily(
            "kamen_router_supplier_balance",
            "Last known prepaid balance at the supplier, in its currency (CNY)",
            labels=["supplier"],
        )
        drained = GaugeMetricFamily(
            "kamen_router_supplier_drained",
            "1 after an insufficient-balance rejection until a refresh shows money",
            labels=["supplier"],
        )
        limit = GaugeMetricFamily(
            "kamen_router_supplier_max_in_flight", "Configured cap on submits in flight", labels=["supplier"]
        )
        for row in self.snapshot():
            name = [row["name"]]
            success.add_metric(name, row["success"])
            if row["latency_ms"] is not None:
                latency.add_metric(name, row["latency_ms"] / 1000)
            ejected.add_metric(name, 1.0 if row["health"] == "ejected" else 0.0)
            ejections.add_metric(name, row["ejections"])
            if row["balance"] is not None:
                balance.add_metric(name, float(row["balance"]))
            drained.add_metric(name, 1.0 if row["drained"] else 0.0)
            limit.add_metric(name, row["max_in_flight"])
        yield from (success, latency, ejected, ejections, balance, drained, limit)
