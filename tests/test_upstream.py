"""Supplier clients: requests dealt in turn over a few connection pools."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio
import trio.lowlevel

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
        assert transport._gate is not None and transport._gate.value == 10
        assert not http.trust_env


class _Open:
    """Requests open at once over several transports, from the request
    until its body is closed (as long as a connection is busy with it)."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)


class _Body(httpx.AsyncByteStream):
    """A body read from the connection as it comes, as httpcore's are."""

    def __init__(self, data: bytes, opened: _Open) -> None:
        self.data = data
        self.opened = opened

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await trio.lowlevel.checkpoint()
        yield self.data

    async def aclose(self) -> None:
        self.opened.now -= 1


class _Slow(httpx.AsyncBaseTransport):
    """Answers each request after ``delay`` seconds, with a body to read."""

    def __init__(self, delay: float = 0.05, fail: bool = False, opened: _Open | None = None) -> None:
        self.delay = delay
        self.fail = fail
        self.opened = opened or _Open()
        self.order: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.opened.enter()
        self.order.append(request.url.path)
        try:
            await trio.sleep(self.delay)
            if self.fail:
                raise httpx.ReadError("reset", request=request)
        except BaseException:
            self.opened.now -= 1
            raise
        return httpx.Response(200, stream=_Body(b"ok", self.opened))


async def test_the_gate_lets_through_at_most_max_requests_in_arrival_order() -> None:
    opened = _Open()
    pools = [_Slow(opened=opened), _Slow(opened=opened)]
    async with httpx.AsyncClient(transport=SpreadTransport(pools, max_requests=3), trust_env=False) as http:
        transport = http._transport
        assert isinstance(transport, SpreadTransport)
        answers: list[str] = []

        async def get(n: int) -> None:
            answers.append((await http.get(f"http://sup.test/{n}")).text)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for n in range(12):
                    nursery.start_soon(get, n)
                    await trio.lowlevel.checkpoint()  # arrive one after another
                await trio.sleep(0.01)
                assert transport.waiting == 9
    assert answers == ["ok"] * 12
    # three at a time over both pools, taken in the order they came
    assert (opened.now, opened.most) == (0, 3)
    seen = sorted(pools[0].order + pools[1].order, key=lambda path: int(path[1:]))
    assert seen == [f"/{n}" for n in range(12)]


async def test_a_request_that_waits_at_the_gate_past_its_pool_timeout_was_not_sent() -> None:
    slow = _Slow(delay=1.0)
    async with httpx.AsyncClient(transport=SpreadTransport([slow], max_requests=1), trust_env=False) as http:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(http.get, "http://sup.test/first")
                await trio.sleep(0.05)
                with pytest.raises(httpx.PoolTimeout):
                    await http.get("http://sup.test/second", timeout=httpx.Timeout(5, pool=0.1))
    assert slow.order == ["/first"]


async def test_the_gate_opens_again_after_errors_and_cancellations() -> None:
    failing = _Slow(delay=0.01, fail=True)
    async with httpx.AsyncClient(
        transport=SpreadTransport([failing], max_requests=1), trust_env=False
    ) as http:
        with trio.fail_after(10):
            for _ in range(3):
                with pytest.raises(httpx.ReadError):
                    await http.get("http://sup.test/x")
            failing.delay = 5
            with trio.move_on_after(0.05):
                await http.get("http://sup.test/cancelled")
            failing.delay, failing.fail = 0.01, False
            assert (await http.get("http://sup.test/after")).text == "ok"


async def test_a_streamed_body_holds_its_place_until_closed() -> None:
    pool = _Slow(delay=0)
    async with httpx.AsyncClient(transport=SpreadTransport([pool], max_requests=1), trust_env=False) as http:
        transport = http._transport
        assert isinstance(transport, SpreadTransport)
        with trio.fail_after(10):
            async with http.stream("GET", "http://sup.test/streamed") as reply:
                with pytest.raises(httpx.PoolTimeout):
                    await http.get("http://sup.test/blocked", timeout=httpx.Timeout(5, pool=0.05))
                assert await reply.aread() == b"ok"
            assert (await http.get("http://sup.test/free")).text == "ok"
    assert pool.order == ["/streamed", "/free"]


def test_a_gate_needs_room() -> None:
    with pytest.raises(ValueError):
        SpreadTransport([_Slow()], max_requests=0)
