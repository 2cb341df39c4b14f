"""The plugin contract, plugin discovery and load-time validation.

A plugin is a class that speaks one supplier protocol. The daemon makes one
instance per configured supplier (``Plugin(context)``) and calls its async
``submit``, ``query`` and ``balance``. Plugins come from the
``kamen_router.plugins`` entry-point group and from ``*.py`` files in
``plugins_dir`` (each defining ``PLUGIN = TheClass``), and are validated when
loaded: a malformed plugin is an error naming the plugin, where it came from
and what is wrong, never a surprise at the first order.

How a plugin reports errors:

- return an outcome (``kamen_router.outcome``) for every reply it understood;
- raise ``SupplierUnreachable`` when nothing was sent (the router retries);
- anything else it raises is taken as UNKNOWN: the request may have been
  taken, so the order will not fail over.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import httpx

from .config import Secret, Simulate, SupplierConfig
from .errors import PluginError, SupplierUnreachable
from .outcome import Outcome

ENTRY_POINT_GROUP = "kamen_router.plugins"


@attrs.frozen
class QuerySchedule:
    """How the router follows an attempt the plugin reported PENDING or UNKNOWN."""

    #: delay before the first query
    first_query_s: float = 1.0
    #: delay between queries; grows by ``backoff`` up to ``max_interval_s``
    interval_s: float = 2.0
    backoff: float = 1.5
    max_interval_s: float = 600.0
    #: how long a NOT_FOUND answer must last before the attempt counts as failed
    not_found_grace_s: float = 300.0
    #: whether resubmitting the same attempt key after NOT_FOUND is safe
    resubmit_safe: bool = False


@attrs.frozen
class SubmitRequest:
    """One attempt, as a plugin sees it."""

    attempt_key: str
    order_id: str
    sku: str
    product_id: str
    quantity: int
    #: the unit price the router expects to pay (catalog or configured)
    unit_price: Decimal
    #: the storefront's ceiling per unit, when it set one
    max_price: Decimal | None
    account: str | None = attrs.field(default=None, repr=False)
    fields: Mapping[str, str] = attrs.Factory(dict)
    #: where the supplier should send its callback, when the daemon has one
    callback_url: str | None = None
    #: when the attempt was journaled (unix seconds): the same for every
    #: retry and query of the attempt, for protocols that sign a timestamp
    #: of the order (Ofpay's sporder_time)
    started_at: float | None = None


@attrs.frozen
class SupplierContext:
    """What a plugin instance gets: its supplier's config and its HTTP client
    (its own connection pools, owned by the daemon: ``upstream.supplier_client``)."""

    supplier: SupplierConfig
    #: the endpoint to use (a simulator's address when the supplier is simulated)
    endpoint: str
    http: httpx.AsyncClient
    callback_url: str | None = None

    @property
    def name(self) -> str:
        return self.supplier.name

    @property
    def credentials(self) -> Mapping[str, Secret]:
        return self.supplier.credentials

    @property
    def timeout_s(self) -> float:
        return self.supplier.limits.timeout_s


@attrs.frozen
class CatalogItem:
    """One product in a supplier's catalog, as its plugin reads it."""

    product_id: str
    #: the supplier's current unit price, when it says
    price: Decimal | None = None
    #: on shelf and in stock (None: the catalog does not say)
    available: bool | None = None
    stock: int | None = None


@attrs.frozen
class Callback:
    """A supplier's notification about one attempt, verified and parsed by
    its plugin. The router, not the plugin, checks that the attempt exists,
    belongs to the supplier the callback came to, and that the amount and
    quantity match what was ordered."""

    attempt_key: str
    #: Delivered, Failed or Pending (anything else is treated as Unknown)
    outcome: Outcome
    #: what the supplier says it charged per unit, when the callback says
    unit_price: Decimal | None = None
    quantity: int | None = None
    supplier_ref: str | None = None
    #: when the supplier sent it (unix seconds), when the protocol stamps it;
    #: callbacks older than ``callbacks.replay_window_s`` are refused
    sent_at: float | None = None


@attrs.frozen
class CallbackReply:
    """What the callback listener answers, in the supplier's own terms."""

    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain; charset=utf-8"


class CallbackRejected(PluginError):
    """Raised by ``parse_callback`` when a callback is forged or malformed.
    ``reason`` is a short fixed word (bad_signature, malformed, unknown_merchant)
    that goes into logs and metrics; never the callback's content."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"callback rejected: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


@runtime_checkable
class Simulator(Protocol):
    """An in-process upstream that speaks one plugin's protocol."""

    async def __call__(self, request: Any) -> Any: ...


@runtime_checkable
class Plugin(Protocol):
    """One supplier protocol, bound to one supplier."""

    name: ClassVar[str]
    required_credentials: ClassVar[Collection[str]]
    schedule: ClassVar[QuerySchedule]

    def __init__(self, context: SupplierContext) -> None: ...

    async def submit(self, request: SubmitRequest) -> Outcome: ...

    async def query(self, request: SubmitRequest) -> Outcome: ...

    async def balance(self) -> Decimal | None: ...


class CheckingPlugin(Plugin, Protocol):
    """A plugin that checks its suppliers' files when the configuration
    loads (product id formats, protocol options), so `kamen-router check`
    and a reload report problems instead of the first order."""

    @classmethod
    def check_supplier(cls, supplier: SupplierConfig) -> Iterable[tuple[str, str]]:
        """Yield ``(key path, message)`` for every problem, e.g.
        ``("offers.mobile-cmcc-100.product_id", "must be CARDID:FACE")``."""
        ...


class CatalogPlugin(Plugin, Protocol):
    """A plugin whose supplier publishes prices and stock. ``catalog`` is
    optional: a plugin that defines it is asked on ``routing.refresh.catalog_s``
    and its answer replaces configured prices and takes products that are
    off shelf or out of stock out of routing until they come back."""

    async def catalog(self) -> Collection[CatalogItem]: ...


class CallbackPlugin(Plugin, Protocol):
    """A plugin whose supplier notifies results. Both methods are sync and do
    no I/O: verify and parse what arrived, and say what to answer."""

    def parse_callback(self, request: Any) -> Callback:
        """``request`` is a ``kamen_router.http.Request``. Raises
        ``CallbackRejected`` unless the signature checks out."""
        ...

    def callback_reply(self, accepted: bool) -> CallbackReply: ...


#: ``(supplier config, simulate block) -> http handler`` serving that protocol
SimulatorFactory = Any

PluginRegistry = Mapping[str, type[Plugin]]


# ------------------------------------------------------------- validation

_ASYNC_METHODS = {"submit": 1, "query": 1, "balance": 0}


def validate_plugin(cls: object, name: str, origin: str) -> type[Plugin]:
    """Check ``cls`` honours the plugin contract; raise PluginError naming
    the plugin, its origin and every fault found."""
    where = f"plugin {name!r} ({origin})"
    if not inspect.isclass(cls):
        raise PluginError(f"{where}: expected a class, got {type(cls).__name__}")
    faults: list[str] = []
    declared = getattr(cls, "name", None)
    if declared != name:
        faults.append(f"name is {declared!r}, expected {name!r}")
    creds = getattr(cls, "required_credentials", None)
    if (
        isinstance(creds, str)
        or not isinstance(creds, Collection)
        or not all(isinstance(c, str) for c in creds)
    ):
        faults.append("required_credentials must be a collection of strings")
    if not isinstance(getattr(cls, "schedule", None), QuerySchedule):
        faults.append("schedule must be a QuerySchedule")
    for method, nargs in _ASYNC_METHODS.items():
        fn = getattr(cls, method, None)
        if fn is None:
            faults.append(f"missing method: async def {method}(self{', request' if nargs else ''})")
            continue
        if not inspect.iscoroutinefunction(fn):
            faults.append(f"{method} must be a coroutine function (async def)")
            continue
        params = list(inspect.signature(fn).parameters.values())[1:]
        required = [
            p
            for p in params
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) != nargs or (nargs and len(params) < nargs):
            faults.append(f"{method} must take {nargs} argument(s) after self, takes {len(required)}")
        elif any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
            faults.append(f"{method} must not require keyword-only arguments: the router passes none")
    try:
        init = inspect.signature(cls)
        init.bind(object())
    except (TypeError, ValueError):
        faults.append("the constructor must take one argument, the SupplierContext")
    parse = getattr(cls, "parse_callback", None)
    reply = getattr(cls, "callback_reply", None)
    if (parse is None) != (reply is None):
        faults.append("parse_callback and callback_reply come together: define both or neither")
    elif parse is not None and (inspect.iscoroutinefunction(parse) or inspect.iscoroutinefunction(reply)):
        faults.append("parse_callback and callback_reply must be plain (not async) methods")
    check = getattr(cls, "check_supplier", None)
    if check is not None and inspect.iscoroutinefunction(check):
        faults.append("check_supplier, when defined, must be a plain function")
    catalog = getattr(cls, "catalog", None)
    if catalog is not None and not inspect.iscoroutinefunction(catalog):
        faults.append("catalog, when defined, must be a coroutine function (async def)")
    simulator = getattr(cls, "simulator", None)
    if simulator is not None and not callable(simulator):
        faults.append("simulator, when set, must be callable")
    if faults:
        raise PluginError(f"{where}: " + "; ".join(faults))
    return cls  # type: ignore[return-value]


_PACKAGE = "kamen_router_plugins"


def _plugins_package(directory: Path) -> None:
    """Make ``kamen_router_plugins`` a package over ``directory``, so a plugin
    can import helpers beside it (``from kamen_router_plugins import _util``)."""
    package = sys.modules.get(_PACKAGE)
    if package is None:
        package = types.ModuleType(_PACKAGE)
        package.__path__ = []
        sys.modules[_PACKAGE] = package
    paths: list[str] = package.__path__  # type: ignore[assignment]
    if str(directory) not in paths:
        paths.append(str(directory))


def _load_file(path: Path) -> type[Plugin]:
    name = path.stem
    _plugins_package(path.parent)
    module_name = f"{_PACKAGE}.{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {name!r} ({path}): cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise PluginError(
            f"plugin {name!r} ({path}): import failed: {exc.__class__.__name__}: {exc}"
        ) from exc
    cls = getattr(module, "PLUGIN", None)
    if cls is None:
        raise PluginError(f"plugin {name!r} ({path}): the module defines no PLUGIN")
    return validate_plugin(cls, name, str(path))


def load_plugins(plugins_dir: Path | None) -> dict[str, type[Plugin]]:
    """Every plugin from the entry-point group and from ``plugins_dir``.

    A name found twice is an error: silently preferring one copy would route
    real money through code the operator did not mean to run.
    """
    found: dict[str, tuple[type[Plugin], str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.value}"
        try:
            cls = ep.load()
        except (Exception, SystemExit) as exc:
            raise PluginError(
                f"plugin {ep.name!r} ({origin}): import failed: {exc.__class__.__name__}: {exc}"
            ) from exc
        if ep.name in found and found[ep.name][1] != origin:
            raise PluginError(f"plugin {ep.name!r} is defined twice: {found[ep.name][1]} and {origin}")
        found[ep.name] = (validate_plugin(cls, ep.name, origin), origin)
    if plugins_dir is not None and plugins_dir.is_dir():
        for path in sorted(plugins_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            if path.stem in found:
                raise PluginError(f"plugin {path.stem!r} is defined twice: {found[path.stem][1]} and {path}")
            found[path.stem] = (_load_file(path), str(path))
    return {name: cls for name, (cls, _) in found.items()}


# ------------------------------------------------- helpers for plugin authors

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout_s: float,
    content: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Send one request; translate "nothing was sent" into SupplierUnreachable.

    Every other transport error (a read timeout, a reset after the request
    went out) propagates unchanged and the router takes it as UNKNOWN. The
    message of SupplierUnreachable carries no URL, since query strings may
    hold credentials.
    """
    try:
        return await http.request(
            method, url, content=content, headers=headers, params=params, timeout=timeout_s
        )
    except _NOT_SENT as exc:
        raise SupplierUnreachable(exc.__class__.__name__) from exc


__all__ = [
    "ENTRY_POINT_GROUP",
    "Callback",
    "CallbackPlugin",
    "CallbackRejected",
    "CallbackReply",
    "CatalogItem",
    "CatalogPlugin",
    "Plugin",
    "PluginRegistry",
    "QuerySchedule",
    "Simulate",
    "SimulatorFactory",
    "SubmitRequest",
    "SupplierContext",
    "load_plugins",
    "send",
    "validate_plugin",
]
