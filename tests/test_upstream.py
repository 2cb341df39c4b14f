"""Supplier clients: requests dealt in turn over a few connection pools."""

from __future__ import annotations

import httpx
import pytest
import trio

from kamen_router.upstream import SpreadTransport, supplier_client, tls_context


class _Recording(httpx.AsyncBaseTransport):
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        return httpx.Response(200, text=self.name)

    async def aclose(self) -> None:
        self.closed = True


async def test_requests_go_to_each_transport_in_turn() -> None:
    pools = [_Recording(f"p{i}") for i in range(3)]
    async with httpx.AsyncClient(transport=SpreadTransport(pools), trust_env=False) as http:
        answers = [(await http.get(f"http://sup.test/{n}")).text for n in range(7)]
    assert answers == ["p0", "p1", "p2", "p0", "p1", "p2", "p0"]
    assert [p.seen for p in pools] == [["/0", "/3", "/6"], ["/1", "/4"], ["/2", "/5"]]
    assert all(p.closed for p in pools)


def test_a_spread_needs_a_transport() -> None:
    with pytest.raises(ValueError):
        SpreadTransport([])


async def test_a_supplier_client_shares_its_limits_and_tls_context() -> None:
    context = await trio.to_thread.run_sync(tls_context)
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=3, keepalive_expiry=2.5)
    async with supplier_client(context, pools=4, limits=limits) as http:
        transport = http._transport
        assert isinstance(transport, SpreadTransport)
        assert len(transport.transports) == 4
        for pool in transport.transports:
            assert isinstance(pool, httpx.AsyncHTTPTransport)
            assert pool._pool._ssl_context is context
            assert (pool._pool._max_connections, pool._pool._max_keepalive_connections) == (3, 1)
            assert pool._pool._keepalive_expiry == 2.5
        assert not http.trust_env
