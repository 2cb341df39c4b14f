"""Configuration: router.yaml and one file per supplier in suppliers.d/.

Everything is read strictly into frozen attrs values: unknown keys, wrong
types, bad ranges, unknown plugins and skus nobody supplies are errors that
name the file and the key path. Every problem in every file is collected and
raised together as one ``ConfigError``.

Secrets (every value under a supplier's ``credentials``) come from
``${ENV}`` substitution or from ``NAME_file`` keys that point at a file; they
are held in ``Secret``, whose repr is ``***``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import yaml

from . import _schema as s
from .errors import ConfigError, Problem
from .money import load_yaml
from .routing import Policy
from .scoring import ScoringConfig

if TYPE_CHECKING:
    from .plugin import PluginRegistry

SUPPLIER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@attrs.frozen(repr=False)
class Secret:
    """A credential. Shows as ``***`` in every repr, str and format."""

    _value: str = attrs.field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"


@attrs.frozen
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: object) -> HostPort:
        text = s.as_str(value).strip()
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, such as 127.0.0.1:9464")
        return cls(host, int(port))


@attrs.frozen
class ApiConfig:
    socket: Path
    socket_mode: int = 0o660
    #: group that owns the socket (storefront processes join it)
    socket_group: str | None = None


@attrs.frozen
class MetricsConfig:
    listen: HostPort | None


@attrs.frozen
class CallbacksConfig:
    listen: HostPort | None
    #: the base URL suppliers reach the listener at (through a proxy, say);
    #: defaults to http://LISTEN
    public_url: str | None
    #: callbacks stamped further than this from now are refused as replays
    replay_window_s: float = 600.0


@attrs.frozen
class LoggingConfig:
    level: str = "info"
    #: logfmt or json
    format: str = "logfmt"


@attrs.frozen
class JournalConfig:
    path: Path
    #: the key that seals accounts and card secrets at rest (kamen-router keygen)
    key_file: Path | None = None
    #: keys rotated out that may still have sealed older rows
    old_key_files: tuple[Path, ...] = ()
    #: store accounts and card secrets unencrypted, on purpose
    plaintext: bool = False


@attrs.frozen
class RoutingConfig:
    #: tries of a submit whose request never left (connection refused, ...)
    submit_retries: int = 3
    #: first back-off between those tries; doubles each time
    retry_backoff_s: float = 0.2
    #: longest RATE_LIMITED retry_after honoured before failing over
    max_rate_limit_wait_s: float = 5.0
    #: weights, exploration and panic mode (``weights:``, ``exploration:``,
    #: ``ejection.panic``)
    policy: Policy = attrs.Factory(Policy)
    #: learning and ejection (``learning:``, ``ejection:``)
    scoring: ScoringConfig = attrs.Factory(ScoringConfig)
    #: background refresh of balances and catalogs (``refresh:``)
    balance_refresh_s: float = 60.0
    catalog_refresh_s: float = 300.0


@attrs.frozen
class OrdersConfig:
    default_deadline_s: float = 600.0
    max_deadline_s: float = 86400.0
    reconcile_limit_s: float = 7200.0
    #: upper bound for a request's wait_s
    max_wait_s: float = 60.0
    #: orders not yet final that the daemon holds before answering 503
    max_open: int = 100_000
    #: on shutdown, how long submits already on the wire may take to answer
    shutdown_grace_s: float = 10.0
    #: with callbacks on, how long a PENDING attempt at a supplier that calls
    #: back goes between queries at least (0: the plugin's schedule alone)
    callback_wait_s: float = 120.0


@attrs.frozen
class Limits:
    rate_per_s: float = 20.0
    max_in_flight: int = 50
    timeout_s: float = 10.0


@attrs.frozen
class Offer:
    sku: str
    product_id: str
    price: Decimal


@attrs.frozen
class Simulate:
    """How an in-process simulated upstream behaves (see kamen_router.sim).

    Every rate is a share in [0, 1], drawn per accepted order from draws
    seeded by ``seed``, so a seeded run is reproducible.

    The *fates* are mutually exclusive; one draw per accepted order picks at
    most one, in this order, and their sum must be at most 1: ``fail_rate``,
    ``timeout_rate``, ``unknown_rate``, ``pending_rate``, ``reset_rate``,
    ``error_after_accept_rate``, ``duplicate_reply_rate``. An order with none
    of them succeeds at once. Every fate but ``fail_rate`` and
    ``pending_rate`` delivers the order at once and spoils only the reply.

    The other knobs combine with any fate, each from its own draw:
    ``not_found_rate`` (with ``not_found_s``), ``callback_reorder_rate``,
    ``callback_before_reply_rate``, ``callback_delay_s``,
    ``callback_duplicates`` and ``callback_retry_s``. Callbacks go only to
    orders that carried a ``notify_url``.
    """

    latency_ms: tuple[float, float] = (5.0, 20.0)
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    pending_rate: float = 0.0
    pending_s: float = 2.0
    unknown_rate: float = 0.0
    balance: Decimal = Decimal(100000)
    stock: int | None = None
    seed: int | None = None
    listen: HostPort = HostPort("127.0.0.1", 0)
    #: (fate) accept, then drop the connection with no reply (a TCP reset)
    reset_rate: float = 0.0
    #: (fate) accept, then answer HTTP 502 or 503 with a non-JSON body
    error_after_accept_rate: float = 0.0
    #: (fate) accept, but answer 1007 "duplicate order number" as if the
    #: order had already existed
    duplicate_reply_rate: float = 0.0
    #: share of accepted orders that queries answer 2001 "not found" for
    #: ``not_found_s`` seconds after acceptance
    not_found_rate: float = 0.0
    not_found_s: float = 0.0
    #: [low, high] seconds between an order's final state (and its submit
    #: reply) and each copy of its callback
    callback_delay_s: tuple[float, float] = (0.0, 0.0)
    #: extra copies of every final callback
    callback_duplicates: int = 0
    #: share of orders that get a stale ``processing`` callback after the final one
    callback_reorder_rate: float = 0.0
    #: share of orders that complete at once and whose final callback is
    #: delivered before the submit reply goes out
    callback_before_reply_rate: float = 0.0
    #: waits before each retry of a callback not answered ``ok``
    callback_retry_s: tuple[float, ...] = (1.0, 4.0, 15.0, 60.0)


@attrs.frozen
class SupplierConfig:
    name: str
    file: Path
    plugin: str
    enabled: bool
    endpoint: str | None
    credentials: Mapping[str, Secret] = attrs.field(
        repr=lambda c: "{" + ", ".join(f"{k!r}: ***" for k in c) + "}"
    )
    limits: Limits = Limits()
    offers: Mapping[str, Offer] = attrs.Factory(dict)
    simulate: Simulate | None = None
    #: callbacks are accepted only from these networks (None: from anywhere,
    #: the signature still decides)
    callback_allow_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None


@attrs.frozen
class SkuConfig:
    sku: str
    name: str | None = None


@attrs.frozen
class RouterConfig:
    file: Path
    api: ApiConfig
    metrics: MetricsConfig
    callbacks: CallbacksConfig
    journal: JournalConfig
    logging: LoggingConfig
    suppliers_dir: Path
    plugins_dir: Path | None
    routing: RoutingConfig
    orders: OrdersConfig
    skus: Mapping[str, SkuConfig]
    suppliers: Mapping[str, SupplierConfig]

    def offers_for(self, sku: str) -> list[tuple[SupplierConfig, Offer]]:
        return [(sup, sup.offers[sku]) for sup in self.suppliers.values() if sku in sup.offers]


# ---------------------------------------------------------------- reading


def _read_yaml(path: Path, problems: s.Problems) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add("", "file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("", f"cannot read: {exc.__class__.__name__}")
        return None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problems.add("", f"not valid YAML: {where}{getattr(exc, 'problem', None) or 'parse error'}")
        return None


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _socket_mode(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        mode = int(value, 8)
    else:
        raise ValueError('expected an octal mode such as "0660"')
    if not 0 <= mode <= 0o777:
        raise ValueError('expected an octal mode such as "0660"')
    return mode


def _known_group(name: str) -> str | None:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return f"no group named {name!r} on this machine"
    return None


def _networks(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a list of addresses or networks, such as [203.0.113.0/24]")
    out = []
    for item in value:
        try:
            out.append(ipaddress.ip_network(s.as_str(item), strict=False))
        except ValueError:
            raise ValueError("each entry must be an IP address or network, such as 203.0.113.0/24") from None
    return tuple(out)


def _read_router(node: s.Node, base: Path) -> dict[str, Any]:
    def rel(value: object) -> Path:
        p = Path(s.as_str(value))
        return p if p.is_absolute() else base / p

    api = node.child("api")
    metrics = node.child("metrics")
    callbacks = node.child("callbacks")
    journal = node.child("journal")
    logging_node = node.child("logging")
    routing = node.child("routing")
    orders = node.child("orders")
    o = OrdersConfig()
    out = dict(
        api=ApiConfig(
            socket=api.get("socket", rel, base / "run/orders.sock"),
            socket_mode=api.get("socket_mode", _socket_mode, 0o660),
            socket_group=api.get("socket_group", s.as_str, None, check=_known_group),
        ),
        metrics=MetricsConfig(listen=metrics.get("listen", HostPort.parse, None)),
        callbacks=CallbacksConfig(
            listen=callbacks.get("listen", HostPort.parse, None),
            public_url=callbacks.get(
                "public_url",
                s.as_str,
                None,
                check=lambda u: None if re.match(r"^https?://", u) else "must be an http(s) URL",
            ),
            replay_window_s=callbacks.get(
                "replay_window_s", s.as_float, 600.0, check=s.between(1, 7 * 86400)
            ),
        ),
        journal=_read_journal(journal, rel, base),
        logging=LoggingConfig(
            level=logging_node.get(
                "level",
                s.as_str,
                "info",
                check=lambda v: (
                    None
                    if v in ("debug", "info", "warning", "error")
                    else "one of debug, info, warning, error"
                ),
            ),
            format=logging_node.get(
                "format",
                s.as_str,
                "logfmt",
                check=lambda v: None if v in ("logfmt", "json") else "logfmt or json",
            ),
        ),
        suppliers_dir=node.get("suppliers_dir", rel, base / "suppliers.d"),
        plugins_dir=node.get("plugins_dir", rel, None),
        routing=_read_routing(routing),
        orders=OrdersConfig(
            default_deadline_s=orders.get(
                "default_deadline_s", s.as_float, o.default_deadline_s, check=s.between(1, 86400)
            ),
            max_deadline_s=orders.get(
                "max_deadline_s", s.as_float, o.max_deadline_s, check=s.between(1, 7 * 86400)
            ),
            reconcile_limit_s=orders.get(
                "reconcile_limit_s", s.as_float, o.reconcile_limit_s, check=s.between(1, 30 * 86400)
            ),
            max_wait_s=orders.get("max_wait_s", s.as_float, o.max_wait_s, check=s.between(0, 3600)),
            max_open=orders.get("max_open", s.as_int, o.max_open, check=s.between(1, 10_000_000)),
            shutdown_grace_s=orders.get(
                "shutdown_grace_s", s.as_float, o.shutdown_grace_s, check=s.between(0, 600)
            ),
            callback_wait_s=orders.get(
                "callback_wait_s", s.as_float, o.callback_wait_s, check=s.between(0, 86400)
            ),
        ),
    )
    cb: CallbacksConfig = out["callbacks"]  # type: ignore[assignment]
    if cb.listen is not None and cb.listen.host in ("0.0.0.0", "::", "") and cb.public_url is None:
        callbacks.error(
            "public_url", "is required when listen is a wildcard address: suppliers need a real one"
        )
    oc: OrdersConfig = out["orders"]  # type: ignore[assignment]
    if oc.default_deadline_s > oc.max_deadline_s:
        orders.error("default_deadline_s", "must not exceed max_deadline_s")
    skus: dict[str, SkuConfig] = {}
    sku_node = node.child("skus")
    for sku in sku_node.data:
        sku_node._seen.add(sku)
        if not isinstance(sku, str) or not SKU.match(sku):
            sku_node.error(sku, "not a valid sku (letters, digits and _.:- only, at most 64)")
            continue
        entry = sku_node.child(sku)
        skus[sku] = SkuConfig(sku=sku, name=entry.get("name", s.as_str, None))
        entry.finish()
    out["skus"] = skus
    for part in (api, metrics, callbacks, journal, logging_node, routing, orders, node):
        part.finish()
    return out


def _read_journal(node: s.Node, rel: Any, base: Path) -> JournalConfig:
    from .crypto import KeyError_, read_key

    def key_path(value: object) -> Path:
        path: Path = rel(value)
        if not path.exists():
            return path  # `run` refuses to start without it; `check` warns
        try:
            read_key(path)
        except KeyError_ as exc:
            raise ValueError(str(exc)) from None
        return path

    def key_paths(value: object) -> tuple[Path, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of key files, got {s.type_name(value)}")
        return tuple(key_path(v) for v in value)

    config = JournalConfig(
        path=node.get("path", rel, base / "var/journal.sqlite3"),
        key_file=node.get("key_file", key_path, None),
        old_key_files=node.get("old_key_files", key_paths, ()),
        plaintext=node.get("plaintext", s.as_bool, False),
    )
    if config.key_file is None and not config.plaintext and "key_file" not in node.data:
        node.error(
            "key_file",
            "is required: accounts and card secrets are encrypted at rest; create a key with"
            " `kamen-router keygen -o PATH`, or set journal.plaintext: true to store them in clear",
        )
    if config.key_file is not None and config.plaintext:
        node.error("plaintext", "cannot be true together with key_file")
    return config


def _read_routing(node: s.Node) -> RoutingConfig:
    d = RoutingConfig()
    dp, ds = Policy(), ScoringConfig()
    weights = node.child("weights")
    exploration = node.child("exploration")
    learning = node.child("learning")
    ejection = node.child("ejection")
    refresh = node.child("refresh")
    share = s.between(0, 1)
    nonneg = s.between(0, None)
    config = RoutingConfig(
        submit_retries=node.get("submit_retries", s.as_int, d.submit_retries, check=s.between(1, 20)),
        retry_backoff_s=node.get("retry_backoff_s", s.as_float, d.retry_backoff_s, check=s.between(0, 60)),
        max_rate_limit_wait_s=node.get(
            "max_rate_limit_wait_s", s.as_float, d.max_rate_limit_wait_s, check=s.between(0, 600)
        ),
        policy=Policy(
            failure_cost=weights.get("failure_cost", s.as_float, dp.failure_cost, check=s.between(0, 100)),
            latency_cost_per_s=weights.get(
                "latency_cost_per_s", s.as_float, dp.latency_cost_per_s, check=s.between(0, 10)
            ),
            tie_band=weights.get("tie_band", s.as_float, dp.tie_band, check=s.between(0, 0.5)),
            explore_share=exploration.get("share", s.as_float, dp.explore_share, check=s.between(0, 0.5)),
            panic=ejection.get("panic", s.as_bool, dp.panic),
        ),
        scoring=ScoringConfig(
            prior_success=learning.get(
                "prior_success", s.as_float, ds.prior_success, check=s.between(0.01, 1)
            ),
            prior_weight=learning.get("prior_weight", s.as_float, ds.prior_weight, check=s.positive),
            half_life_s=learning.get("half_life_s", s.as_float, ds.half_life_s, check=s.positive),
            latency_alpha=learning.get(
                "latency_alpha", s.as_float, ds.latency_alpha, check=s.between(0.001, 1)
            ),
            eject_after_failures=ejection.get(
                "after_failures", s.as_int, ds.eject_after_failures, check=s.between(1, 1000)
            ),
            eject_below_success=ejection.get(
                "below_success", s.as_float, ds.eject_below_success, check=share
            ),
            eject_min_evidence=ejection.get("min_evidence", s.as_float, ds.eject_min_evidence, check=nonneg),
            eject_base_s=ejection.get("base_s", s.as_float, ds.eject_base_s, check=s.positive),
            eject_max_s=ejection.get("max_s", s.as_float, ds.eject_max_s, check=s.positive),
            eject_forget_s=ejection.get("forget_s", s.as_float, ds.eject_forget_s, check=nonneg),
            offer_out_s=ejection.get("offer_out_s", s.as_float, ds.offer_out_s, check=s.positive),
            charged_price_ttl_s=learning.get(
                "charged_price_ttl_s", s.as_float, ds.charged_price_ttl_s, check=s.positive
            ),
        ),
        balance_refresh_s=refresh.get(
            "balance_s", s.as_float, d.balance_refresh_s, check=s.between(1, 86400)
        ),
        catalog_refresh_s=refresh.get(
            "catalog_s", s.as_float, d.catalog_refresh_s, check=s.between(1, 86400)
        ),
    )
    if config.scoring.eject_max_s < config.scoring.eject_base_s:
        ejection.error("max_s", "must be at least base_s")
    for part in (weights, exploration, learning, ejection, refresh):
        part.finish()
    return config


def _substitute(text: str, node: s.Node, key: str) -> str | None:
    missing = [m for m in _ENV_REF.findall(text) if m not in os.environ]
    if missing:
        node.error(key, f"environment variable {missing[0]} is not set")
        return None
    return _ENV_REF.sub(lambda m: os.environ[m.group(1)], text)


def _read_credentials(node: s.Node, base: Path) -> dict[str, Secret]:
    creds: dict[str, Secret] = {}
    for key in node.data:
        node._seen.add(key)
        if not isinstance(key, str):
            node.error(key, "credential names must be strings")
            continue
        value = node.data[key]
        if not isinstance(value, str | int) or isinstance(value, bool):
            node.error(key, f"expected a string, got {s.type_name(value)}")
            continue
        text = _substitute(str(value), node, key)
        if text is None:
            continue
        if key.endswith("_file"):
            name = key[: -len("_file")]
            path = Path(text) if Path(text).is_absolute() else base / text
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                node.error(key, f"cannot read secret file {path}: {exc.__class__.__name__}")
                continue
            if name in creds or name in node.data:
                node.error(key, f"{name} is given twice (directly and as {key})")
                continue
        else:
            name = key
        creds[name] = Secret(text)
    return creds


def _read_simulate(node: s.Node) -> Simulate:
    d = Simulate()

    def latency(value: object) -> tuple[float, float]:
        if isinstance(value, list) and len(value) == 2:
            lo, hi = s.as_float(value[0]), s.as_float(value[1])
            if 0 <= lo <= hi <= 600_000:
                return (lo, hi)
        raise ValueError("expected [low, high] in milliseconds, 0 <= low <= high")

    def delay(value: object) -> tuple[float, float]:
        if isinstance(value, list) and len(value) == 2:
            lo, hi = s.as_float(value[0]), s.as_float(value[1])
            if 0 <= lo <= hi <= 3600:
                return (lo, hi)
        raise ValueError("expected [low, high] in seconds, 0 <= low <= high <= 3600")

    def retries(value: object) -> tuple[float, ...]:
        if isinstance(value, list) and len(value) <= 20:
            waits = tuple(s.as_float(v) for v in value)
            if all(0 <= w <= 3600 for w in waits):
                return waits
        raise ValueError("expected a list of at most 20 waits in seconds, each from 0 to 3600")

    rate = s.between(0, 1)
    sim = Simulate(
        latency_ms=node.get("latency_ms", latency, d.latency_ms),
        fail_rate=node.get("fail_rate", s.as_float, 0.0, check=rate),
        timeout_rate=node.get("timeout_rate", s.as_float, 0.0, check=rate),
        pending_rate=node.get("pending_rate", s.as_float, 0.0, check=rate),
        pending_s=node.get("pending_s", s.as_float, d.pending_s, check=s.between(0, 86400)),
        unknown_rate=node.get("unknown_rate", s.as_float, 0.0, check=rate),
        balance=node.get("balance", s.as_money, d.balance),
        stock=node.get("stock", s.as_int, None, check=s.between(0, None)),
        seed=node.get("seed", s.as_int, None),
        listen=node.get("listen", HostPort.parse, d.listen),
        reset_rate=node.get("reset_rate", s.as_float, 0.0, check=rate),
        error_after_accept_rate=node.get("error_after_accept_rate", s.as_float, 0.0, check=rate),
        duplicate_reply_rate=node.get("duplicate_reply_rate", s.as_float, 0.0, check=rate),
        not_found_rate=node.get("not_found_rate", s.as_float, 0.0, check=rate),
        not_found_s=node.get("not_found_s", s.as_float, d.not_found_s, check=s.between(0, 86400)),
        callback_delay_s=node.get("callback_delay_s", delay, d.callback_delay_s),
        callback_duplicates=node.get(
            "callback_duplicates", s.as_int, d.callback_duplicates, check=s.between(0, 10)
        ),
        callback_reorder_rate=node.get("callback_reorder_rate", s.as_float, 0.0, check=rate),
        callback_before_reply_rate=node.get("callback_before_reply_rate", s.as_float, 0.0, check=rate),
        callback_retry_s=node.get("callback_retry_s", retries, d.callback_retry_s),
    )
    fates = (
        "fail_rate",
        "timeout_rate",
        "unknown_rate",
        "pending_rate",
        "reset_rate",
        "error_after_accept_rate",
        "duplicate_reply_rate",
    )
    if sum(getattr(sim, name) for name in fates) > 1:
        node.error(
            "fail_rate",
            " + ".join(fates) + " must be at most 1: each accepted order gets at most one of these fates",
        )
    node.finish()
    return sim


def read_supplier(path: Path, sink: list[Problem], plugins: PluginRegistry | None) -> SupplierConfig | None:
    """Read one supplier file; problems go to ``sink``."""
    problems = s.Problems(_display(path), sink)
    before = len(sink)
    name = path.stem
    if not SUPPLIER_NAME.match(name):
        problems.add("", "the file name must be a supplier name: lower-case letters, digits, _ and -")
    data = _read_yaml(path, problems)
    if len(sink) > before and data is None:
        return None
    node = s.Node(problems, data)
    if not node.ok:
        return None
    plugin = node.get("plugin", s.as_str)
    if plugin is not None and plugins is not None and plugin not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        node.error("plugin", f"unknown plugin {plugin!r} (known: {known})")
    simulate_node = node.child("simulate") if "simulate" in node.data else None
    simulate = _read_simulate(simulate_node) if simulate_node is not None else None
    if (
        simulate is not None
        and plugin is not None
        and plugins is not None
        and plugin in plugins
        and getattr(plugins[plugin], "simulator", None) is None
    ):
        node.error("simulate", f"plugin {plugin!r} has no simulator")
    endpoint: str | None = node.get("endpoint", s.as_str, None)
    if endpoint is not None:
        # substitute first: "${SUPPLIER_URL}" is only a URL once expanded
        endpoint = _substitute(endpoint, node, "endpoint")
        if endpoint is not None and not re.match(r"^https?://[^\s]+$", endpoint):
            node.error("endpoint", "must be an http(s) URL")
            endpoint = None
    if endpoint is None and simulate is None and not any(p.key == "endpoint" for p in sink[before:]):
        node.error("endpoint", "is required (unless the supplier has a simulate block)")
    cred_node = node.child("credentials")
    credentials = _read_credentials(cred_node, path.parent)
    if plugin is not None and plugins is not None and plugin in plugins:
        for needed in sorted(plugins[plugin].required_credentials):
            if needed not in credentials and not any(
                p.key.startswith(f"credentials.{needed}") for p in sink[before:]
            ):
                cred_node.error(needed, f"is required by plugin {plugin!r}")
    limits_node = node.child("limits")
    dl = Limits()
    limits = Limits(
        rate_per_s=limits_node.get("rate_per_s", s.as_float, dl.rate_per_s, check=s.positive),
        max_in_flight=limits_node.get(
            "max_in_flight", s.as_int, dl.max_in_flight, check=s.between(1, 100_000)
        ),
        timeout_s=limits_node.get("timeout_s", s.as_float, dl.timeout_s, check=s.between(0.1, 600)),
    )
    limits_node.finish()
    offers: dict[str, Offer] = {}
    offers_node = node.child("offers")
    if not offers_node.data and offers_node.ok:
        node.error("offers", "must list at least one sku")
    for sku in offers_node.data:
        offers_node._seen.add(sku)
        if not isinstance(sku, str) or not SKU.match(sku):
            offers_node.error(sku, "not a valid sku (letters, digits and _.:- only, at most 64)")
            continue
        entry = offers_node.child(sku)
        product_id = entry.get(
            "product_id", lambda v: str(s.as_int(v)) if isinstance(v, int) else s.as_str(v)
        )
        price = entry.get("price", s.as_money)
        entry.finish()
        if product_id is not None and price is not None:
            offers[sku] = Offer(sku=sku, product_id=product_id, price=price)
    enabled = node.get("enabled", s.as_bool, True)
    allow_from = node.get("callback_allow_from", _networks, None)
    node.finish()
    if len(sink) > before:
        return None
    config = SupplierConfig(
        name=name,
        file=path,
        plugin=plugin,
        enabled=enabled,
        endpoint=endpoint,
        credentials=credentials,
        limits=limits,
        offers=offers,
        simulate=simulate,
        callback_allow_from=allow_from,
    )
    check = getattr(plugins.get(plugin), "check_supplier", None) if plugins is not None else None
    if check is not None:
        try:
            for key, message in check(config):
                node.error(key, message)
        except Exception as exc:  # a plugin bug must not hide behind a traceback
            node.error("plugin", f"plugin {plugin!r} failed checking this file: {exc.__class__.__name__}")
        if len(sink) > before:
            return None
    return config


def load_config(path: str | os.PathLike[str], plugins: PluginRegistry | None = None) -> RouterConfig:
    """Load and validate router.yaml and every ``*.yaml`` in its suppliers_dir.

    ``plugins`` is the registry the ``plugin:`` keys are checked against; when
    None, the registry is discovered from entry points and ``plugins_dir``.
    Raises ``ConfigError`` listing every problem found.
    """
    from .errors import PluginError
    from .plugin import load_plugins

    file = Path(path).absolute()
    sink: list[Problem] = []
    problems = s.Problems(_display(file), sink)
    data = _read_yaml(file, problems)
    if sink:
        raise ConfigError(sink)
    node = s.Node(problems, data)
    if not node.ok:
        raise ConfigError(sink)
    fields = _read_router(node, file.parent)
    router_keys = {p.key.split(".")[0] for p in sink}
    pdir: Path | None = fields["plugins_dir"]
    if "plugins_dir" not in router_keys and pdir is not None and not pdir.is_dir():
        problems.add("plugins_dir", f"{_display(pdir)} is not a directory")
    sdir: Path = fields["suppliers_dir"]
    if "suppliers_dir" not in router_keys and not sdir.is_dir():
        problems.add("suppliers_dir", f"{_display(sdir)} is not a directory")
    # Other problems in router.yaml do not stop the supplier files from being
    # checked too; without knowing where suppliers and plugins are, they do.
    if any(p.key.split(".")[0] in ("plugins_dir", "suppliers_dir") for p in sink):
        raise ConfigError(sink)
    if plugins is None:
        try:
            plugins = load_plugins(pdir)
        except PluginError as exc:
            raise ConfigError([*sink, Problem(_display(file), "plugins_dir", str(exc))]) from None
    suppliers: dict[str, SupplierConfig] = {}
    files = sorted(p for p in sdir.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    for supplier_file in files:
        supplier = read_supplier(supplier_file, sink, plugins)
        if supplier is not None:
            if supplier.name in suppliers:
                s.Problems(_display(supplier_file), sink).add(
                    "", f"supplier {supplier.name!r} is defined twice"
                )
            suppliers[supplier.name] = supplier
    if not files:
        problems.add("suppliers_dir", f"no supplier files (*.yaml) in {_display(sdir)}")
    skus: dict[str, SkuConfig] = dict(fields["skus"])
    offered = {sku for sup in suppliers.values() for sku in sup.offers}
    if skus:
        # A supplier file that failed to load may offer any sku, and a bad
        # skus: section is incomplete: skip the cross-checks they would
        # turn into false alarms.
        if len(suppliers) == len(files):
            for sku in sorted(skus):
                if sku not in offered:
                    problems.add(f"skus.{sku}", "no supplier offers this sku")
        if "skus" not in router_keys:
            for sup in suppliers.values():
                for sku in sup.offers:
                    if sku not in skus:
                        s.Problems(_display(sup.file), sink).add(
                            f"offers.{sku}", "not a sku listed under skus: in router.yaml"
                        )
    else:
        skus = {sku: SkuConfig(sku=sku) for sku in sorted(offered)}
    if sink:
        raise ConfigError(sink)
    fields["skus"] = skus
    return RouterConfig(file=file, suppliers=suppliers, **fields)
