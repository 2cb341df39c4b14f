"""The ``kamen-router`` command.

Every verb has ``--help``. Errors a user can cause (bad config, a daemon
that is not running, a bad order) print one clear line per problem and exit
non-zero; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from . import __version__, logs
from .config import RouterConfig, load_config, read_supplier
from .conformance import add_conform_parser
from .errors import ApiError, ConfigError, KamenRouterError, Problem
from .money import format_money

DEFAULT_CONFIG = os.environ.get("KAMEN_ROUTER_CONFIG", "router.yaml")


def _setup_logging(
    args: argparse.Namespace, config: RouterConfig | None = None, batch_s: float = 0.0
) -> None:
    level = args.log_level or (config.logging.level if config else "info")
    logs.setup(level, config.logging.format if config else "logfmt", batch_s)
    if config is not None:
        logs.SECRETS.set_secrets(
            secret.reveal() for sup in config.suppliers.values() for secret in sup.credentials.values()
        )


def _load(path: str) -> RouterConfig:
    return load_config(path)


def _print_errors(exc: ConfigError) -> None:
    print(f"configuration has {len(exc.problems)} error(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


# ------------------------------------------------------------------ verbs


def cmd_keygen(args: argparse.Namespace) -> int:
    from .crypto import write_new_key

    kid = write_new_key(Path(args.output))
    print(
        f"wrote a new journal key {kid} to {args.output} (mode 0600); back it up: without it the journal's"
        " accounts and cards cannot be read"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(f"{config.file}: OK, {len(config.suppliers)} suppliers, {len(config.skus)} skus")
    print()
    width = max(len(s) for s in config.skus)
    for sku in config.skus:
        offers = sorted(config.offers_for(sku), key=lambda so: (so[1].price, so[0].name))
        parts = []
        for supplier, offer in offers:
            flag = "" if supplier.enabled else " (disabled)"
            parts.append(f"{supplier.name} {format_money(offer.price)}{flag}")
        if offers and not any(s.enabled for s, _ in offers):
            parts.append("WARNING: no enabled supplier")
        print(f"  {sku:<{width}}  " + ", ".join(parts))
    j = config.journal
    if j.key_file is not None and not j.key_file.exists():
        print(
            f"\nWARNING: journal.key_file {j.key_file} does not exist; `run` will refuse to start."
            f" Create it with: kamen-router keygen -o {j.key_file}"
        )
    elif j.plaintext:
        print("\nWARNING: journal.plaintext is true: accounts and card secrets are stored unencrypted")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon
    from .notify import Notifier
    from .plugin import load_plugins

    config = _load(args.config)
    # the daemon logs every order: lines go out in batches (``logs.BATCH_S``)
    _setup_logging(args, config, logs.BATCH_S)
    plugins = load_plugins(config.plugins_dir)
    daemon = Daemon(config, plugins, notifier=Notifier(), handle_signals=True)
    tune_gc()
    try:
        trio.run(daemon.run)
    finally:
        logs.flush()
    return 0


#: cyclic collector thresholds for the daemon (the interpreter's are 700, 10, 10)
GC_THRESHOLDS = (10_000, 20, 10)


def tune_gc() -> None:
    """Collect cycles less often in the daemon. Nearly everything an order
    allocates is freed by reference counting, yet at the interpreter's
    default every 700 allocations set off a collection, a few times per
    order, each walking whatever was young; and the modules, config and
    plugins loaded by now live as long as the process, so they are frozen
    out of every later collection (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def cmd_sim(args: argparse.Namespace) -> int:
    import attrs

    from .config import HostPort, Simulate
    from .daemon import serve_simulated_supplier
    from .plugin import load_plugins

    plugins = load_plugins(Path(args.plugins_dir) if args.plugins_dir else None)
    sink: list[Problem] = []
    supplier = read_supplier(Path(args.config).absolute(), sink, plugins)
    if supplier is None:
        raise ConfigError(sink)
    simulate = supplier.simulate or Simulate()
    if args.listen:
        try:
            simulate = attrs.evolve(simulate, listen=HostPort.parse(args.listen))
        except ValueError as exc:
            raise ConfigError([Problem("--listen", "", str(exc))]) from None
    supplier = attrs.evolve(supplier, simulate=simulate)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(
                    serve_simulated_supplier,
                    plugins[supplier.plugin],
                    supplier,
                    callback_url=args.callback_url,
                )
            )
            print(f"simulating {supplier.name} ({supplier.plugin}) on {url}", flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    return _load(args.config).api.socket


def _client_call(args: argparse.Namespace, call: Any, render: Any = None) -> int:
    from .client import OrderClient

    socket = _socket(args)
    try:
        with OrderClient(socket) as client:
            reply = call(client)
    except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError):
        print(f"error: no daemon answers on {socket}; is `kamen-router run` running?", file=sys.stderr)
        return 2
    except httpx.TimeoutException:
        print(f"error: the daemon on {socket} did not answer in time", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if render is not None:
        print(render(reply))
    else:
        json.dump(reply, sys.stdout, indent=2, ensure_ascii=False)
        print()
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    fields = {}
    for item in args.field or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --field takes NAME=VALUE, got {item!r}", file=sys.stderr)
            return 1
        fields[key] = value
    return _client_call(
        args,
        lambda c: c.submit(
            args.order_id,
            args.sku,
            quantity=args.quantity,
            account=args.account,
            fields=fields or None,
            max_price=args.max_price,
            deadline_s=args.deadline,
            wait_s=args.wait,
        ),
    )


def cmd_status(args: argparse.Namespace) -> int:
    return _client_call(args, lambda c: c.get(args.order_id, wait_s=args.wait))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _explain_text(route: dict[str, Any]) -> str:
    out = [f"sku {route['sku']}" + ("  (panic: every candidate is ejected)" if route["panic"] else ""), ""]
    rows = []
    for rank_no, c in enumerate(route["candidates"], 1):
        price = c["unit_price"] + (
            "" if c["unit_price"] == c["configured_price"] else f" (cfg {c['configured_price']})"
        )
        rows.append(
            [
                str(rank_no),
                c["supplier"],
                price,
                f"{c['success']:.3f}",
                f"{c['latency_ms']:.0f} ms",
                f"+{c['failure_term'] * 100:.2f}%",
                f"+{c['latency_term'] * 100:.2f}%",
                f"{c['score']:.2f}",
                c["health"],
                f"{c['in_flight']}/{c['max_in_flight']}",
                f"{c['tokens']:.1f}",
                c["balance"] or "?",
            ]
        )
    header = [
        "#",
        "supplier",
        "price",
        "success",
        "latency",
        "fail",
        "lat",
        "score",
        "health",
        "in-flight",
        "tokens",
        "balance",
    ]
    out.append(_table(rows, header) if rows else "no candidate")
    if route["excluded"]:
        out += ["", "excluded:"]
        out += [
            f"  {e['supplier']}: {e['reason']}" + (f" ({e['detail']})" if e["detail"] else "")
            for e in route["excluded"]
        ]
    out += ["", "score = price x (1 + fail + lat): the expected cost of a delivered unit"]
    return "\n".join(out)


def _suppliers_text(reply: dict[str, Any]) -> str:
    rows = []
    for s in reply["suppliers"]:
        health = s["health"] + (f" {s['ejected_for_s']:.0f}s" if s["health"] == "ejected" else "")
        if not s["enabled"]:
            health = "disabled"
        if s["drained"]:
            health += ",drained"
        if s["rate_limited_for_s"]:
            health += ",rate-limited"
        latency = "-" if s["latency_ms"] is None else f"{s['latency_ms']:.0f} ms"
        rows.append(
            [
                s["name"],
                s["plugin"],
                health,
                f"{s['success']:.3f}",
                latency,
                str(s["attempts"]),
                f"{s['in_flight']}/{s['max_in_flight']}",
                f"{s['rate_per_s']:g}/s",
                s["balance"] or "?",
            ]
        )
    return _table(
        rows,
        ["supplier", "plugin", "health", "success", "latency", "attempts", "in-flight", "rate", "balance"],
    )


def cmd_explain(args: argparse.Namespace) -> int:
    return _client_call(args, lambda c: c.route(args.sku), None if args.json else _explain_text)


def _attention_text(reply: dict[str, Any]) -> str:
    orders = reply["orders"]
    if not orders:
        return "no order needs attention"
    rows = []
    for o in orders:
        last = o["attempts"][-1] if o["attempts"] else {}
        rows.append(
            [
                o["order_id"],
                o["sku"],
                str(o["quantity"]),
                last.get("supplier") or "-",
                last.get("attempt_key") or "-",
                (o["error"] or {}).get("code") or "-",
                o["updated_at"],
            ]
        )
    table = _table(rows, ["order", "sku", "qty", "supplier", "attempt key", "why", "since"])
    return table + f"\n\n{len(orders)} order(s); settle each with: kamen-router attention resolve ORDER ..."


def cmd_attention_list(args: argparse.Namespace) -> int:
    return _client_call(
        args, lambda c: c.orders_in("attention", args.limit), None if args.json else _attention_text
    )


def cmd_attention_resolve(args: argparse.Namespace) -> int:
    import getpass

    by = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
    delivered = None
    if args.delivered is not None:
        try:
            delivered = json.loads(args.delivered)
        except ValueError:
            print('error: --delivered takes JSON such as \'{"receipt": "SN123"}\'', file=sys.stderr)
            return 1
    return _client_call(
        args, lambda c: c.resolve(args.order_id, by=by, delivered=delivered, failed=args.failed)
    )


def cmd_suppliers(args: argparse.Namespace) -> int:
    return _client_call(args, lambda c: c.suppliers(), None if args.json else _suppliers_text)


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kamen-router",
        description="Route paid virtual-goods orders to the cheapest healthy supplier, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"kamen-router {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: logging.level of router.yaml",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="router.yaml (default: %(default)s)")

    def socket_arg(p: argparse.ArgumentParser) -> None:
        config_arg(p)
        p.add_argument("--socket", help="order socket path (default: api.socket from the config)")

    p = sub.add_parser("run", help="run the daemon")
    config_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate the config and print the routing table")
    config_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("keygen", help="create a key for journal.key_file (encryption at rest)")
    p.add_argument(
        "-o", "--output", required=True, help="where to write it; an existing file is never overwritten"
    )
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sim", help="run one supplier's simulated upstream standalone")
    p.add_argument("-c", "--config", required=True, help="a supplier file, such as suppliers.d/NAME.yaml")
    p.add_argument("--listen", help="host:port (default: simulate.listen, or a free port)")
    p.add_argument("--plugins-dir", help="extra plugins directory")
    p.add_argument(
        "--callback-url",
        help="notify address on file, for protocols that keep one per account (the daemon's /callbacks/NAME)",
    )
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("submit", help="submit an order through the running daemon")
    socket_arg(p)
    p.add_argument("order_id")
    p.add_argument("sku")
    p.add_argument("--account", help="phone number or game account to charge")
    p.add_argument("--quantity", type=int)
    p.add_argument("--max-price", help="ceiling per unit, such as 99.50")
    p.add_argument("--deadline", type=float, metavar="SECONDS")
    p.add_argument("--field", action="append", metavar="NAME=VALUE", help="extra field (repeatable)")
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait for a final state (default: %(default)s)",
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show one order")
    socket_arg(p)
    p.add_argument("order_id")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to this long for a final state")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("explain", help="show how the running daemon ranks suppliers for a sku, and why")
    socket_arg(p)
    p.add_argument("sku")
    p.add_argument("--json", action="store_true", help="print the raw reply")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("attention", help="orders a human must settle: list them, resolve one")
    att = p.add_subparsers(dest="attention_verb", required=True, metavar="ACTION")
    q = att.add_parser("list", help="orders in attention, oldest first")
    socket_arg(q)
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true", help="print the raw reply")
    q.set_defaults(func=cmd_attention_list)
    q = att.add_parser("resolve", help="settle an order in attention as delivered or failed")
    socket_arg(q)
    q.add_argument("order_id")
    how = q.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--delivered", metavar="JSON", help='what the customer got: \'{"cards": [...], "receipt": "..."}\''
    )
    how.add_argument("--failed", metavar="REASON", help="why the order failed (the storefront may refund)")
    q.add_argument("--by", help="who resolves it (default: the login name)")
    q.set_defaults(func=cmd_attention_resolve)

    add_conform_parser(sub)

    p = sub.add_parser("suppliers", help="show every supplier's live score, health, limits and balance")
    socket_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw reply")
    p.set_defaults(func=cmd_suppliers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # the reader went away (`kamen-router check | head`): not an error
        sys.stderr.close()
        return 0
    except Exception as exc:
        return _report(exc)
    except KeyboardInterrupt:
        return 130


def _report(exc: Exception) -> int:
    """Errors a user can cause print as one clear line each, exit 1."""
    leaves = list(_leaves(exc))
    if leaves and all(isinstance(e, KamenRouterError) for e in leaves):
        for leaf in leaves:
            if isinstance(leaf, ConfigError):
                _print_errors(leaf)
            else:
                print(f"error: {leaf}", file=sys.stderr)
        return 1
    logging.getLogger("kamen_router").debug("unexpected error", exc_info=exc)
    print(
        f"error: unexpected {exc.__class__.__name__}: {exc}; run with --log-level debug for details",
        file=sys.stderr,
    )
    return 70


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    # errors from inside the daemon's nursery arrive wrapped in groups
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
