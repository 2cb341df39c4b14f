"""The daemon's HTTP clients for suppliers: one ``httpx.AsyncClient`` per
supplier, whose requests are dealt in turn over a few connection pools.

httpcore's connection pool does work on every request that grows with the
connections and the requests it holds (each request walks them several
times), and under concurrency it hands one idle HTTP/1.1 connection to
several waiting requests at once, all but one of which then find it taken
and walk the pool again (encode/httpcore#822, #1035). A supplier's
concurrent requests spread over a few pools keep each pool small and quiet:
with 32 orders in flight over three suppliers, about a tenth of the
daemon's CPU per order went to it.
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import Sequence

import httpx

#: connection pools per supplier
POOLS = 4
#: what one supplier's pools may hold, in all
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)


class SpreadTransport(httpx.AsyncBaseTransport):
    """Sends each request through the next of ``transports`` in turn."""

    def __init__(self, transports: Sequence[httpx.AsyncBaseTransport]) -> None:
        if not transports:
            raise ValueError("SpreadTransport needs at least one transport")
        self.transports = tuple(transports)
        self._next = itertools.cycle(self.transports).__next__

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._next().handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()


def supplier_client(
    ssl_context: ssl.SSLContext, pools: int = POOLS, limits: httpx.Limits = LIMITS
) -> httpx.AsyncClient:
    """A client for one supplier: ``pools`` connection pools sharing
    ``limits`` and one TLS context (loading CA certificates once, not once
    per pool), with no settings taken from the environment."""

    def part(total: int | None) -> int | None:
        return None if total is None else math.ceil(total / pools)

    share = httpx.Limits(
        max_connections=part(limits.max_connections),
        max_keepalive_connections=part(limits.max_keepalive_connections),
        keepalive_expiry=limits.keepalive_expiry,
    )
    transports = [
        httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, limits=share) for _ in range(pools)
    ]
    return httpx.AsyncClient(trust_env=False, transport=SpreadTransport(transports))


def tls_context() -> ssl.SSLContext:
    """The TLS context every supplier client shares (certifi's CAs, as an
    ``httpx.AsyncClient(trust_env=False)`` would use)."""
    return httpx.create_ssl_context(trust_env=False)


__all__ = ["LIMITS", "POOLS", "SpreadTransport", "supplier_client", "tls_context"]
