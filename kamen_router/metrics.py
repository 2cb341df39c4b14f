"""Prometheus metrics on a registry made per daemon.

Label values come only from configured supplier names and fixed enums
(order states, outcome kinds, operations), never from order ids, accounts or
free text, so the series count is bounded by configuration.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import __version__
from .http import Request, Response

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
        self.open_orders = Gauge("kamen_router_open_orders", "Orders the daemon is still driving", registry=r)
        self.in_flight = Gauge(
            "kamen_router_supplier_in_flight",
            "Requests to a supplier awaiting a reply",
            ["supplier"],
            registry=r,
        )
        self.build = Gauge(
            "kamen_router_build_info", "Always 1; the version in a label", ["version"], registry=r
        )
        self.build.labels(version=__version__).set(1)

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
