"""The HTTP shell shared by every protocol simulator.

A protocol simulator subclasses ``ProtocolSimulator`` and writes three
things: ``answer`` (route, check the signature, parse, ask the account,
render: plain and synchronous), ``render_callback`` (a signed callback for
an order) and ``callback_acknowledged`` (the receiver's "ok"). Everything
else is here: the account (``self.account``, a ``SupplierAccount``), reply
latency, the reply faults (a held reply, a reset, a gateway error page),
callbacks that overtake the reply, the background work (``run``) and the
unsigned ``GET /ledger`` every simulator serves.

The instance is what a plugin's ``simulator`` factory returns: an HTTP
handler (``async (Request) -> Response``) with ``run(task_status=...)``,
which the daemon starts in a nursery before serving the handler
(``serve`` does both).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import httpx
import trio

from ..config import Secret, Simulate, SupplierConfig
from ..errors import ConfigError, Problem
from ..http import DropConnection, HttpServer, Request, Response, bound_port, open_tcp_listener
from .core import (
    Clock,
    Fault,
    LedgerEntry,
    LedgerReply,
    OutgoingCallback,
    Placed,
    SimOrder,
    Status,
    SupplierAccount,
)

#: the simulator-only inspection endpoint, the same for every protocol
PATH_LEDGER = "/ledger"

_GATEWAY_PAGE = "<html><head><title>{0}</title></head><body><h1>{0} {1}</h1></body></html>\n"
_GATEWAY_PHRASES = {502: "Bad Gateway", 503: "Service Unavailable"}


@attrs.frozen
class Reply:
    """What ``answer`` hands back when the reply needs more than a Response."""

    #: None: drop the connection without a reply (a reset)
    response: Response | None
    #: extra time to hold the reply back (a timeout)
    hold_s: float = 0.0
    #: the order this request placed, when it placed one
    placed: SimOrder | None = None


def gateway_error(status: int) -> Response:
    """The HTML page a proxy answers when the upstream behind it failed."""
    page = _GATEWAY_PAGE.format(status, _GATEWAY_PHRASES.get(status, "Error"))
    return Response(status, page.encode(), "text/html; charset=utf-8")


class ProtocolSimulator:
    """One simulated supplier account speaking one protocol.

    ``ProtocolSimulator(supplier, simulate)`` (``simulate`` defaults to
    ``supplier.simulate``) is the factory shape the daemon calls. ``clock``
    is the account's (pending, rate limit, not-found window, ledger times);
    ``wall_clock`` (unix seconds) is for timestamps the protocol checks and
    stamps. ``rate_limit_per_s`` turns on a token bucket; ``timeout_hold_s``
    is how long a "timeout" reply is held back.

    ``callback_url_on_file`` is where callbacks go for protocols whose
    supplier keeps one notify URL per account instead of taking one per
    order; the layer passes it as the order's ``notify_url``. The daemon and
    the conformance kit set it.
    """

    #: the protocol's (and its plugin's) name
    protocol: ClassVar[str] = "?"

    def __init__(
        self,
        supplier: SupplierConfig,
        simulate: Simulate | None = None,
        *,
        clock: Clock = trio.current_time,
        wall_clock: Clock = time.time,
        rate_limit_per_s: float | None = None,
        timeout_hold_s: float | None = None,
    ) -> None:
        self.supplier = supplier
        self.simulate = simulate or supplier.simulate or Simulate()
        self.wall_clock = wall_clock
        self.callback_url_on_file: str | None = None
        #: requests being answered now, and the most at once since the
        #: last ``GET /ledger`` (which reports it and starts afresh)
        self.requests_in_flight = 0
        self.peak_requests = 0
        self.account = SupplierAccount(
            supplier,
            self.simulate,
            renderer=self,
            clock=clock,
            rate_limit_per_s=rate_limit_per_s,
            timeout_hold_s=timeout_hold_s,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.supplier.name!r}, orders={self.account.order_count})"

    # ------------------------------------------------ for the protocol layer

    def answer(self, request: Request) -> Response | Reply:
        """Answer one request. Synchronous on purpose: a request's checks
        and ledger write then run without a checkpoint, atomically."""
        raise NotImplementedError

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback | None:
        """The callback telling ``order`` is in ``status``, signed now (it is
        called for every try). None: the protocol sends no such callback."""
        return None

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        """Whether the receiver's answer acknowledges a callback."""
        return status == 200 and body.strip() == b"ok"

    def credential(self, name: str) -> Secret:
        """The supplier's credential ``name``; a ConfigError naming the file
        and key when it is missing."""
        secret = self.supplier.credentials.get(name)
        if secret is None:
            raise ConfigError(
                [
                    Problem(
                        str(self.supplier.file),
                        f"credentials.{name}",
                        f"is required by plugin {self.protocol!r}",
                    )
                ]
            )
        return secret

    def reply_to(self, placed: Placed, ok: Response, *, duplicate: Response, system_error: Response) -> Reply:
        """The reply to a request that placed an order, spoiled as its fault
        says: ``ok`` is the protocol's normal answer, ``duplicate`` its
        "order number exists" answer, ``system_error`` its "system error,
        query to confirm" answer."""
        order, fault = placed.order, placed.fault
        if fault is Fault.TIMEOUT:
            return Reply(ok, placed.hold_s, order)
        if fault is Fault.SYSTEM_ERROR:
            return Reply(system_error, placed=order)
        if fault is Fault.RESET:
            return Reply(None, placed=order)
        if fault is Fault.GATEWAY_ERROR:
            return Reply(gateway_error(order.plan.gateway_status), placed=order)
        if fault is Fault.DUPLICATE_REPLY:
            return Reply(duplicate, placed=order)
        return Reply(ok, placed=order)

    # -------------------------------------------------------------- provided

    async def __call__(self, request: Request) -> Response:
        if request.path == PATH_LEDGER and request.method == "GET":
            return Response.json(200, self.ledger_reply())
        self.requests_in_flight += 1
        self.peak_requests = max(self.peak_requests, self.requests_in_flight)
        try:
            return await self._respond(request)
        finally:
            self.requests_in_flight -= 1

    async def _respond(self, request: Request) -> Response:
        answer = self.answer(request)
        reply = answer if isinstance(answer, Reply) else Reply(answer)
        # everything above ran without a checkpoint; only the reply is late
        placed = reply.placed
        try:
            if placed is not None and placed.plan.before_reply:
                await self.account.deliver_before_reply(placed)
            await trio.sleep(self.account.reply_delay())
        finally:
            if placed is not None:
                placed.replied.set()
        if reply.response is None:
            raise DropConnection()
        if reply.hold_s:
            await trio.sleep(reply.hold_s)
        return reply.response

    async def run(
        self,
        *,
        http: httpx.AsyncClient | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The account's background work (``SupplierAccount.run``: pending
        completion, callbacks): start it with ``await nursery.start(sim.run)``
        before serving requests."""
        await self.account.run(http=http, task_status=task_status)

    def ledger(self) -> list[LedgerEntry]:
        """Every order the simulator accepted, oldest first."""
        return self.account.ledger()

    def ledger_reply(self) -> LedgerReply:
        peak, self.peak_requests = self.peak_requests, self.requests_in_flight
        return {"supplier": self.supplier.name, "orders": self.ledger(), "peak_requests": peak}

    @property
    def balance(self) -> Decimal:
        return self.account.balance

    @balance.setter
    def balance(self, value: Decimal) -> None:
        self.account.balance = value

    @property
    def maintenance(self) -> bool:
        return self.account.maintenance

    @maintenance.setter
    def maintenance(self, value: bool) -> None:
        self.account.maintenance = value


async def serve(
    handler: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "sim",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulator ``handler`` on ``host:port`` until cancelled, with
    its background work (``handler.run``, when it has one) in the same
    nursery. ``task_status.started`` gets the base URL."""
    listener = await open_tcp_listener(host, port)
    url = base_url(host, bound_port(listener))
    server = HttpServer(handler, name=name)
    async with trio.open_nursery() as nursery:
        run = getattr(handler, "run", None)
        if run is not None:
            await nursery.start(run)
        await nursery.start(server.serve, [listener])
        task_status.started(url)


def base_url(host: str, port: int) -> str:
    # a wildcard address is not somewhere a client can connect to
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


__all__ = ["PATH_LEDGER", "ProtocolSimulator", "Reply", "base_url", "gateway_error", "serve"]
