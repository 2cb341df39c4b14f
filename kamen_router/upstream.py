"""The daemon's HTTP clients for suppliers: one ``httpx.AsyncClient`` per
supplier, whose requests are dealt in turn over a few connection pools,
behind one gate.

httpcore's connection pool does work on every request that grows with the
connections and the requests it holds (each request walks them several
times), and under concurrency it hands one idle HTTP/1.1 connection to
several waiting requests at once, all but one of which then find it taken
and walk the pool again (encode/httpcore#822, #1035). So a supplier's
requests are spread over a few pools, which keeps each pool small, and wait
for a connection at a gate in front of them (a FIFO semaphore, a constant
cost per request) rather than in a pool's own queue: with thousands of
orders pending and their queries due, requests queued inside the pools cost
the daemon nearly all its CPU (three quarters of it went to walking the
queue), while at the gate they cost nothing until their turn. A request
that waits at the gate longer than its pool timeout is refused with
``httpx.PoolTimeout``, as a pool would refuse it: nothing was sent.
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import trio

#: connection pools per supplier
POOLS = 4
#: what one supplier's pools may hold, in all; requests beyond
#: ``max_connections`` wait at the gate
LIMITS = httpx.Limits(max_connections=128, max_keepalive_connections=128)


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that opens the gate once it is closed: until then
    its connection is busy."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        # the body's own iterator: a generator of ours around it would be
        # left unfinished (and warned about) when a read is cancelled
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        release, self._release = self._release, None
        try:
            await self._stream.aclose()
        finally:
            if release is not None:
                release()


class SpreadTransport(httpx.AsyncBaseTransport):
    """Sends each request through the next of ``transports`` in turn, at
    most ``max_requests`` at a time (None: no gate); the others wait their
    turn in arrival order."""

    def __init__(
        self, transports: Sequence[httpx.AsyncBaseTransport], max_requests: int | None = None
    ) -> None:
        if not transports:
            raise ValueError("SpreadTransport needs at least one transport")
        if max_requests is not None and max_requests < 1:
            raise ValueError("SpreadTransport needs max_requests of at least 1")
        self.transports = tuple(transports)
        self._next = itertools.cycle(self.transports).__next__
        self._gate = None if max_requests is None else trio.Semaphore(max_requests)

    @property
    def waiting(self) -> int:
        """Requests waiting at the gate."""
        return 0 if self._gate is None else self._gate.statistics().tasks_waiting

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        gate = self._gate
        if gate is None:
            return await self._next().handle_async_request(request)
        try:
            # a free gate is passed without a trip through the scheduler:
            # the request's own I/O checkpoints soon enough
            gate.acquire_nowait()
        except trio.WouldBlock:
            timeout = request.extensions.get("timeout", {}).get("pool")
            with trio.move_on_after(math.inf if timeout is None else timeout) as waited:
                await gate.acquire()
            if waited.cancelled_caught:
                raise httpx.PoolTimeout("no connection free in time", request=request) from None
        try:
            response = await self._next().handle_async_request(request)
        except BaseException:
            gate.release()
            raise
        if response.is_closed:  # read in full already (a body given whole)
            gate.release()
        else:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _ReleasingStream(response.stream, gate.release)
        return response

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()


def supplier_client(
    ssl_context: ssl.SSLContext, pools: int = POOLS, limits: httpx.Limits = LIMITS
) -> httpx.AsyncClient:
    """A client for one supplier: ``pools`` connection pools sharing
    ``limits`` and one TLS context (loading CA certificates once, not once
    per pool), at most ``limits.max_connections`` requests at a time, with
    no settings taken from the environment."""

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
    return httpx.AsyncClient(trust_env=False, transport=SpreadTransport(transports, limits.max_connections))


def tls_context() -> ssl.SSLContext:
    """The TLS context every supplier client shares (certifi's CAs, as an
    ``httpx.AsyncClient(trust_env=False)`` would use)."""
    return httpx.create_ssl_context(trust_env=False)


__all__ = ["LIMITS", "POOLS", "SpreadTransport", "supplier_client", "tls_context"]
