"""The harness one conformance check runs in: a seeded simulator on
loopback, a callback receiver, the plugin bound to both over real HTTP, and
the bookkeeping that lets a check say clearly what it expected and what it
got, and lets the runner scan everything the plugin produced for secrets."""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import httpx
import trio

from ..config import Limits, Secret, Simulate, SupplierConfig
from ..errors import SupplierUnreachable
from ..http import HttpServer, Request, Response, bound_port, open_tcp_listener
from ..orders import attempt_key
from ..outcome import Outcome, Pending
from ..plugin import Callback, CallbackRejected, SubmitRequest, SupplierContext
from ..sim.base import serve
from ..sim.core import BLACKLISTED_ACCOUNT, SupplierAccount

#: the shortest credential value the secret scan looks for (shorter ones
#: would match by chance)
MIN_SECRET_LEN = 4


class CheckFailed(Exception):
    """Raised by a check: the plugin (or its simulator) broke the contract."""


class Skipped(Exception):
    """Raised by a check that does not apply to this plugin."""


# ------------------------------------------------------------------ profile


@attrs.frozen
class Sample:
    """An order the kit places: ``sku`` names one of the supplier's offers
    (None: the kit picks one, see ``Profile``)."""

    sku: str | None = None
    account: str | None = "13800138000"
    quantity: int = 1
    fields: Mapping[str, str] = attrs.Factory(dict)


@attrs.frozen
class Leeway:
    """Where a protocol departs from a check's strict expectation, and why.

    ``accept`` holds outcome patterns accepted besides the strict ones:
    ``"unknown"``, ``"pending"``, ``"rejected:product_unavailable"``,
    ``"delivered"`` (any Delivered, with or without deliverables),
    ``"exception"`` (anything raised but SupplierUnreachable), ``"none"``
    (for the balance check: a balance of None). ``skip`` skips the check.
    ``why`` shows in the report. A leeway never excuses a simulator that
    took an order it should have refused.
    """

    why: str
    accept: frozenset[str] = frozenset()
    skip: bool = False


def accept(why: str, *patterns: str) -> Leeway:
    """Leeway that also accepts ``patterns`` (see ``Leeway``)."""
    return Leeway(why, frozenset(patterns))


def skip(why: str) -> Leeway:
    """Leeway that skips the check."""
    return Leeway(why, skip=True)


@attrs.frozen
class Profile:
    """What the kit needs to know about a protocol beyond its plugin.

    ``topup`` and ``cards`` are the orders it places (``cards=None``: the
    protocol sells no cards). An unset sku is the supplier's first offer for
    ``topup`` and the first other offer for ``cards``. ``invalid_account``
    is an account every simulator refuses as invalid. ``leeway`` maps check
    names to documented departures. ``wait_s`` bounds every wait for a
    pending order, a callback or a not-found window.
    """

    topup: Sample | None = Sample()
    cards: Sample | None = Sample(account=None, quantity=2)
    invalid_account: str = BLACKLISTED_ACCOUNT
    leeway: Mapping[str, Leeway] = attrs.Factory(dict)
    wait_s: float = 5.0


# ----------------------------------------------------------------- outcomes


@attrs.frozen
class Raised:
    """A plugin call that raised instead of returning an outcome."""

    exc: Exception


Seen = Outcome | Raised


def patterns(seen: Seen) -> set[str]:
    """The patterns ``seen`` matches (see ``Leeway``)."""
    if isinstance(seen, Raised):
        if isinstance(seen.exc, SupplierUnreachable):
            return {"unreachable"}
        return {"exception", f"exception:{type(seen.exc).__name__}"}
    kind = seen.kind.value
    reason = seen.reason
    return {kind} | ({f"{kind}:{reason}"} if reason else set())


def describe(seen: Seen) -> str:
    if isinstance(seen, Raised):
        text = str(seen.exc)
        return f"an exception, {type(seen.exc).__name__}" + (f": {text[:160]}" if text else "")
    detail = getattr(seen, "detail", "")
    out = seen.kind.value + (f":{seen.reason}" if seen.reason and seen.reason != detail else "")
    return out + (f" ({detail[:160]!r})" if detail else "")


Want = Callable[[Seen], bool] | Iterable[str]


def _matches(want: Want, seen: Seen) -> bool:
    if callable(want):
        return want(seen)
    return bool(patterns(seen) & set(want))


# ----------------------------------------------------------------- receiver


@attrs.define
class Receiver:
    """The daemon's callback listener in miniature: every callback goes
    through the plugin's ``parse_callback``; parsed ones are answered
    ``callback_reply(True)``, refused ones ``callback_reply(False)``."""

    rig: Rig
    url: str = ""
    got: list[tuple[Callback, Request]] = attrs.Factory(list)
    rejected: list[tuple[str, Request]] = attrs.Factory(list)
    #: parse_callback raised something other than CallbackRejected
    errors: list[str] = attrs.Factory(list)
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def handle(self, request: Request) -> Response:
        plugin = self.rig.plugin
        accepted = False
        try:
            callback = plugin.parse_callback(request)
        except CallbackRejected as exc:
            self.rig.record("a CallbackRejected message", str(exc))
            self.rejected.append((exc.reason, request))
        except Exception as exc:
            self.rig.record("an exception from parse_callback", f"{exc!r} {exc}")
            self.errors.append(f"{type(exc).__name__}: {exc}")
        else:
            self.rig.record("a parsed callback", repr(callback))
            self.got.append((callback, request))
            accepted = True
        self._arrived.set()
        self._arrived = trio.Event()
        reply = plugin.callback_reply(accepted)
        return Response(reply.status, reply.body, reply.content_type)

    def for_key(self, key: str) -> list[Callback]:
        return [c for c, _ in self.got if c.attempt_key == key]

    async def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            while not done():
                await self._arrived.wait()
        return done()


# ---------------------------------------------------------------------- rig


def quiet(simulate: Simulate, name: str) -> Simulate:
    """``simulate`` with every fate and fault off, fast, funded and seeded
    for the check ``name``; a check turns on what it tests."""
    seed = zlib.crc32(f"{simulate.seed or 0}/{name}".encode())
    return attrs.evolve(
        simulate,
        latency_ms=(0.0, 2.0),
        fail_rate=0.0,
        timeout_rate=0.0,
        pending_rate=0.0,
        pending_s=0.3,
        unknown_rate=0.0,
        balance=Decimal(100000),
        stock=None,
        seed=seed,
        reset_rate=0.0,
        error_after_accept_rate=0.0,
        duplicate_reply_rate=0.0,
        not_found_rate=0.0,
        not_found_s=0.0,
        callback_delay_s=(0.0, 0.0),
        callback_duplicates=0,
        callback_reorder_rate=0.0,
        callback_before_reply_rate=0.0,
        callback_retry_s=(0.05, 0.1, 0.2),
    )


def altered(credentials: Mapping[str, Secret]) -> dict[str, Secret]:
    """Other credentials of the same shape: every digit and letter moved on
    by one, so format checks still pass but no signature does."""

    def shift(ch: str) -> str:
        for lo, n in (("0", 10), ("a", 26), ("A", 26)):
            if ord(lo) <= ord(ch) < ord(lo) + n:
                return chr(ord(lo) + (ord(ch) - ord(lo) + 1) % n)
        return ch

    out = {}
    for name, secret in credentials.items():
        value = secret.reveal()
        other = "".join(map(shift, value))
        out[name] = Secret(other if other != value else value + "x")
    return out


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@attrs.define
class Rig:
    """One check's world. ``supplier`` is the check's copy of the supplier
    (quiet ``simulate``, short timeout); ``account`` steers the simulator."""

    check: str
    plugin_cls: Any
    supplier: SupplierConfig
    profile: Profile
    http: httpx.AsyncClient
    nursery: trio.Nursery
    secrets: dict[str, str] = attrs.Factory(dict)
    texts: list[tuple[str, str]] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    receiver: Receiver | None = None
    # set by ``start``
    simulator: Any = attrs.field(init=False)
    account: SupplierAccount = attrs.field(init=False)
    url: str = attrs.field(init=False)
    plugin: Any = attrs.field(init=False)
    _serial: int = 0

    @property
    def takes_callbacks(self) -> bool:
        return callable(getattr(self.plugin_cls, "parse_callback", None))

    def add_secrets(self, credentials: Mapping[str, Secret], label: str = "credentials") -> None:
        for name, secret in credentials.items():
            value = secret.reveal()
            if len(value) >= MIN_SECRET_LEN:
                self.secrets[value] = f"{label}.{name}"

    async def start(self) -> None:
        self.add_secrets(self.supplier.credentials)
        if self.takes_callbacks:
            self.receiver = Receiver(self)
            listener = await open_tcp_listener("127.0.0.1", 0)
            self.receiver.url = f"http://127.0.0.1:{bound_port(listener)}/callbacks/{self.supplier.name}"
            await self.nursery.start(HttpServer(self.receiver.handle, name="receiver").serve, [listener])
        self.simulator, self.url = await self.open_simulator(self.supplier)
        self.account = self.simulator.account
        self.plugin = self.bind(self.supplier, self.url)

    async def open_simulator(self, supplier: SupplierConfig) -> tuple[Any, str]:
        factory = getattr(self.plugin_cls, "simulator", None)
        if factory is None:
            raise CheckFailed("the plugin has no simulator: set `simulator = YourSimulator` on the class")
        simulator = factory(supplier)
        if not isinstance(getattr(simulator, "account", None), SupplierAccount):
            raise CheckFailed(
                f"the simulator {type(simulator).__name__} has no `account` (a "
                "kamen_router.sim.core.SupplierAccount): build it on kamen_router.sim.base.ProtocolSimulator"
            )
        if self.receiver is not None and hasattr(simulator, "callback_url_on_file"):
            simulator.callback_url_on_file = self.receiver.url
        url: str = await self.nursery.start(serve, simulator)
        return simulator, url

    def bind(self, supplier: SupplierConfig, url: str) -> Any:
        """A plugin instance for ``supplier`` talking to ``url``."""
        callback_url = self.receiver.url if self.receiver is not None else None
        context = SupplierContext(supplier=supplier, endpoint=url, http=self.http, callback_url=callback_url)
        plugin = self.plugin_cls(context)
        self.record("the plugin's repr", repr(plugin))
        self.record("the plugin's str", str(plugin))
        return plugin

    def with_credentials(self, credentials: Mapping[str, Secret]) -> SupplierConfig:
        self.add_secrets(credentials, "the kit's altered credentials")
        return attrs.evolve(self.supplier, credentials=dict(credentials))

    # ------------------------------------------------------------- requests

    def request(self, sample: Sample | None, **changes: Any) -> SubmitRequest:
        """A fresh attempt (new key) for ``sample``; ``changes`` override fields."""
        if sample is None:
            raise Skipped("the profile has no such sample order")
        self._serial += 1
        sku = sample.sku or self.default_sku(sample)
        offer = self.supplier.offers.get(sku)
        if offer is None:
            raise CheckFailed(f"the profile names sku {sku!r}, which the supplier does not offer")
        order_id = f"conformance-{self.check}-{self._serial}"
        request = SubmitRequest(
            attempt_key=attempt_key(f"{self.supplier.name}/{order_id}", 1),
            order_id=order_id,
            sku=sku,
            product_id=offer.product_id,
            quantity=sample.quantity,
            unit_price=offer.price,
            max_price=None,
            account=sample.account,
            fields=dict(sample.fields),
            callback_url=self.receiver.url if self.receiver is not None else None,
            started_at=time.time(),
        )
        return attrs.evolve(request, **changes) if changes else request

    def default_sku(self, sample: Sample) -> str:
        skus = list(self.supplier.offers)
        if not skus:
            raise CheckFailed("the supplier has no offers")
        if sample is self.profile.topup or self.profile.topup is None:
            return skus[0]
        topup_sku = self.profile.topup.sku or skus[0]
        others = [s for s in skus if s != topup_sku]
        if not others:
            raise CheckFailed("no sku left for the card order: give the supplier a second offer")
        return others[0]

    def price(self, request: SubmitRequest) -> Decimal:
        return self.account.products[request.product_id].price

    async def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Await one plugin call, recording what it returned or raised."""
        try:
            result = await fn()
        except Exception as exc:
            self.record(f"the exception from {what}", _exception_text(exc))
            return Raised(exc)
        self.record(f"the result of {what}", repr(result))
        return result

    async def submit(self, request: SubmitRequest, plugin: Any = None) -> Seen:
        seen: Seen = await self.call("submit", lambda: (plugin or self.plugin).submit(request))
        return seen

    async def query(self, request: SubmitRequest, plugin: Any = None) -> Seen:
        seen: Seen = await self.call("query", lambda: (plugin or self.plugin).query(request))
        return seen

    async def settle(self, request: SubmitRequest, seen: Seen) -> Seen:
        """Follow a Pending answer by query until it is something else or
        the profile's wait runs out."""
        deadline = trio.current_time() + self.profile.wait_s
        while isinstance(seen, Pending) and trio.current_time() < deadline:
            await trio.sleep(0.05)
            seen = await self.query(request)
        return seen

    async def submit_and_settle(self, request: SubmitRequest) -> tuple[Seen, Seen]:
        first = await self.submit(request)
        return first, await self.settle(request, first)

    # ------------------------------------------------------------- judging

    def expect(self, step: str, seen: Seen, want: Want, wanted: str) -> None:
        """Pass when ``seen`` is what the check wants, or what the profile's
        leeway for this check accepts; else fail saying both."""
        if _matches(want, seen):
            return
        leeway = self.profile.leeway.get(self.check)
        if leeway is not None and patterns(seen) & leeway.accept:
            self.notes.append(f"{step}: {self.redact(describe(seen))} accepted ({leeway.why})")
            return
        raise CheckFailed(f"{step}: expected {wanted}, got {self.redact(describe(seen))}")

    def ledger_for(self, request: SubmitRequest) -> list[dict[str, Any]]:
        return [dict(e) for e in self.account.ledger() if e["merchant_order_no"] == request.attempt_key]

    def expect_not_taken(self, step: str, request: SubmitRequest) -> None:
        if self.ledger_for(request):
            raise CheckFailed(f"{step}: the simulator took the order, yet it should have refused it")

    def expect_taken_once(self, step: str, request: SubmitRequest) -> dict[str, Any]:
        entries = self.ledger_for(request)
        if len(entries) != 1:
            raise CheckFailed(
                f"{step}: the simulator's ledger holds {len(entries)} orders for the attempt key"
            )
        return entries[0]

    def record(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def redact(self, text: str) -> str:
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    def leaks(self) -> list[str]:
        """``"NAME in WHERE"`` for every credential found in a recorded text."""
        found: dict[str, list[str]] = {}
        for where, text in self.texts:
            for value, name in self.secrets.items():
                if value in text and where not in found.setdefault(name, []):
                    found[name].append(where)
        return [f"{name} appears in {', '.join(wheres)}" for name, wheres in found.items() if wheres]


def _exception_text(exc: BaseException) -> str:
    """The exception's repr and str, and those of every exception it was
    raised from."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current!r} {current}")
        current = current.__cause__
    return "\n".join(parts)


def base_supplier(supplier: SupplierConfig, name: str, **simulate: Any) -> SupplierConfig:
    """The check's copy of ``supplier``: quiet simulator with ``simulate``
    changes, a short timeout (loopback answers in milliseconds)."""
    sim = attrs.evolve(quiet(supplier.simulate or Simulate(), name), **simulate)
    limits: Limits = attrs.evolve(supplier.limits, timeout_s=min(supplier.limits.timeout_s, 2.0))
    return attrs.evolve(supplier, simulate=sim, limits=limits, enabled=True)
