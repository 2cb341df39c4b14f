#!/usr/bin/env python
"""Throughput and latency of kamen-router against a bare pass-through.

The daemon runs in a child process with three simulated ``sim`` suppliers
at zero think time (``latency_ms: [0, 0]``) on one sku, the journal
encrypted. A separate load-generator process drives orders through the
order socket (``POST /v1/orders`` with ``wait_s``, so each reply is the
delivered order):

* closed loop at concurrency 1 (latency) and 32 (throughput);
* open loop at a fixed rate, latency counted from when each order was due.

For each it prints orders/s, p50/p99/p99.9 end-to-end latency, and
router-added latency: end-to-end minus the supplier's own time, which is the
attempt's ``latency_ms`` in the reply (the plugin call, from before signing
the request to after parsing the answer). CPU seconds per 1,000 orders
(C=32 phase, the server process, simulators included) and peak RSS come
from ``/proc``.

The pass-through (``python bench/throughput.py passthrough``) is the least a
correct router needs, built from the same parts: trio and h11 on a Unix
socket, the same simulators served in-process the same way, the same
``sim`` plugin over a shared ``httpx.AsyncClient`` (``trust_env=False``), and
two SQLite commits per order on a worker thread with the journal's
durability (WAL, ``synchronous=FULL``): the attempt before the request goes
out and the result before the reply. No routing, scoring, metrics,
idempotency checks, encryption or logging. Same socket hops: client ->
Unix socket -> server -> loopback TCP -> simulator, and back.

The two alternate within one run (``--repeats`` rounds, the first side
swapped each round) and every figure is the median over rounds; the ratios
are kamen-router over the pass-through.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.common import fmt, median

SKU = "card-100"
SUPPLIERS = ("sup-a", "sup-b", "sup-c")


def write_config(root: Path) -> Path:
    suppliers = {name: common.supplier_yaml([SKU], price=100.0) for name in SUPPLIERS}
    return common.write_config(root, suppliers, skus=[SKU])


# -------------------------------------------------------------- pass-through


def _passthrough_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, request TEXT NOT NULL,"
        " state TEXT NOT NULL, attempt_key TEXT NOT NULL, supplier TEXT NOT NULL,"
        " deliverables TEXT, updated_at REAL NOT NULL)"
    )
    return db


async def serve_passthrough(config_path: Path) -> None:
    """The bare pass-through (see the module docstring). Sends READY=1."""
    import h11
    import httpx
    import trio

    from kamen_router.config import load_config
    from kamen_router.daemon import serve_simulated_supplier
    from kamen_router.http import open_unix_listener
    from kamen_router.money import dumps_json, format_money
    from kamen_router.notify import Notifier
    from kamen_router.orders import attempt_key
    from kamen_router.outcome import Kind
    from kamen_router.plugin import SubmitRequest, SupplierContext, load_plugins

    config = load_config(config_path)
    plugins = load_plugins(config.plugins_dir)
    db = _passthrough_db(config.journal.path)
    db_limiter = trio.CapacityLimiter(1)
    listener = await open_unix_listener(config.api.socket, 0o660)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)

    def commit(sql: str, params: tuple[Any, ...]) -> None:
        with db:
            db.execute(sql, params)

    async with httpx.AsyncClient(trust_env=False, limits=limits) as http, trio.open_nursery() as nursery:
        # every simulator runs, as in the daemon; orders go to the first
        supplier = config.suppliers[SUPPLIERS[0]]
        urls = {}
        for name, sup in config.suppliers.items():
            urls[name] = await nursery.start(serve_simulated_supplier, plugins[sup.plugin], sup)
        plugin = plugins[supplier.plugin](SupplierContext(supplier, urls[supplier.name], http))

        async def order(body: bytes) -> tuple[int, bytes]:
            request = json.loads(body)
            order_id, sku = request["order_id"], request["sku"]
            offer = supplier.offers[sku]
            key = attempt_key(order_id, 1)
            await trio.to_thread.run_sync(
                commit,
                "INSERT INTO orders VALUES (?,?,?,?,?,?,?)",
                (order_id, body.decode(), "submitted", key, supplier.name, None, time.time()),
                limiter=db_limiter,
            )
            start = time.perf_counter()
            outcome = await plugin.submit(
                SubmitRequest(
                    attempt_key=key,
                    order_id=order_id,
                    sku=sku,
                    product_id=offer.product_id,
                    quantity=int(request.get("quantity", 1)),
                    unit_price=offer.price,
                    max_price=None,
                    account=request.get("account"),
                )
            )
            latency = time.perf_counter() - start
            delivered = outcome.kind is Kind.DELIVERED
            deliverables = outcome.deliverables.to_json() if delivered else None  # type: ignore[union-attr]
            state = "delivered" if delivered else "failed"
            await trio.to_thread.run_sync(
                commit,
                "UPDATE orders SET state=?, deliverables=?, updated_at=? WHERE order_id=?",
                (state, json.dumps(deliverables), time.time(), order_id),
                limiter=db_limiter,
            )
            reply = {
                "order_id": order_id,
                "sku": sku,
                "state": state,
                "supplier": supplier.name,
                "unit_price": format_money(offer.price),
                "deliverables": deliverables,
                "attempts": [
                    {
                        "supplier": supplier.name,
                        "attempt_key": key,
                        "outcome": outcome.kind.value,
                        "latency_ms": round(latency * 1000, 3),
                    }
                ],
            }
            return 200, dumps_json(reply) + b"\n"

        async def connection(stream: trio.SocketStream) -> None:
            conn = h11.Connection(h11.SERVER)
            try:
                async with stream:
                    while True:
                        body = b""
                        while True:
                            event = conn.next_event()
                            if event is h11.NEED_DATA:
                                conn.receive_data(await stream.receive_some(65536))
                            elif isinstance(event, h11.Data):
                                body += event.data
                            elif isinstance(event, h11.EndOfMessage):
                                break
                            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                                return
                        try:
                            status, payload = await order(body)
                        except Exception as exc:
                            status, payload = 500, dumps_json({"error": str(exc)})
                        headers = [
                            ("content-type", "application/json"),
                            ("content-length", str(len(payload))),
                        ]
                        data = conn.send(h11.Response(status_code=status, headers=headers))
                        data += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
                        await stream.send_all(data)
                        if conn.our_state is not h11.DONE:
                            return
                        conn.start_next_cycle()
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
                pass

        async def accept() -> None:
            async with listener:
                while True:
                    nursery.start_soon(connection, await listener.accept())

        nursery.start_soon(accept)
        Notifier().ready()
        with trio.open_signal_receiver(2, 15) as signals:  # SIGINT, SIGTERM
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    config.api.socket.unlink(missing_ok=True)


def start_passthrough(config: Path, workdir: Path) -> common.Server:
    return common.Server(
        [common.PYTHON, str(Path(__file__)), "passthrough", "-c", str(config)], workdir, name="passthrough"
    )


# --------------------------------------------------------------- measuring

SIDES = ("kamen_router", "passthrough")


def measure_round(rnd: int, args: argparse.Namespace) -> dict[str, Any]:
    """One round: both servers up side by side, every phase run against
    both in alternating blocks."""
    servers: dict[str, common.Server] = {}
    targets = []
    try:
        for kind in SIDES:
            workdir = common.fresh_dir(f"throughput/{kind}")
            config = write_config(workdir)
            if kind == "kamen_router":
                servers[kind] = common.start_daemon(config, workdir, cwd=args.source)
            else:
                servers[kind] = start_passthrough(config, workdir)
            targets.append((common.socket_of(config), servers[kind]))
        out: dict[str, dict[str, Any]] = {kind: {} for kind in SIDES}

        def phase(name: str, **kw: Any) -> list[dict[str, Any]]:
            runs = common.run_load(targets, prefix=f"r{rnd}{name}", sku=SKU, **kw)
            merged = [common.merge_blocks(blocks) for blocks in runs]
            for kind, result in zip(SIDES, merged, strict=True):
                common.check_complete(result, f"{kind} {name}")
            return merged

        phase("warm", orders=args.warmup, concurrency=8)
        for kind, result in zip(
            SIDES, phase("c1", orders=args.c1_orders, blocks=args.c1_blocks), strict=True
        ):
            out[kind]["c1"] = common.latency_summary(result)
        c32 = phase("c32", orders=args.orders, blocks=2, concurrency=args.concurrency)
        for kind, result in zip(SIDES, c32, strict=True):
            out[kind]["c32"] = common.latency_summary(result)
            out[kind]["cpu_s_per_1000"] = result["cpu_s"] / result["orders"] * 1000
        # the open loop runs at a share of the slower side's capacity, so
        # neither is overloaded and the rate is the same for both
        rate = args.rate or round(args.open_share * min(out[k]["c32"]["orders_per_s"] for k in SIDES))
        opened = phase("open", orders=max(100, int(rate * args.open_s)), blocks=2, rate=rate)
        for kind, result in zip(SIDES, opened, strict=True):
            out[kind]["open"] = common.latency_summary(result)
            out[kind]["peak_rss_mb"] = servers[kind].peak_rss_mb()
        out["open_rate"] = rate
        return out
    finally:
        for server in servers.values():
            server.stop()


def _median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, dict):
            out[key] = _median_of([r[key] for r in rounds])
        else:
            out[key] = median(r[key] for r in rounds)
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] == "passthrough":
        import trio

        parser = argparse.ArgumentParser(prog="throughput.py passthrough")
        parser.add_argument("-c", "--config", type=Path, required=True)
        args = parser.parse_args(argv[1:])
        trio.run(serve_passthrough, args.config.resolve())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds (servers started afresh)")
    parser.add_argument("--orders", type=int, default=1500, help="orders per C=32 block (2 per side)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--c1-orders", type=int, default=40, help="orders per C=1 block")
    parser.add_argument("--c1-blocks", type=int, default=6)
    parser.add_argument("--open-s", type=float, default=4.0, help="seconds per open-loop block")
    parser.add_argument("--rate", type=float, default=None, help="open-loop orders/s (default: a share)")
    parser.add_argument("--open-share", type=float, default=0.5, help="of the slower side's C=32 rate")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--source",
        type=Path,
        default=common.ROOT,
        help="run the daemon from this source tree (to measure a patch against the same pass-through)",
    )
    args = parser.parse_args(argv)

    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SIDES}
    ratios: dict[str, list[float]] = {"c32_throughput": [], "c1_added_p50": [], "cpu_per_order": []}
    rates = []
    for rnd in range(args.repeats):
        got = measure_round(rnd, args)
        rates.append(got["open_rate"])
        for kind in SIDES:
            rounds[kind].append(got[kind])
            c = got[kind]
            print(
                f"round {rnd + 1} {kind:>12}: C={args.concurrency} {fmt(c['c32']['orders_per_s'], 0)}/s"
                f" p50 {fmt(c['c32']['p50_ms'], 1)} ms; C=1 p50 {fmt(c['c1']['p50_ms'], 2)} ms"
                f" added {fmt(c['c1']['added_p50_ms'], 2)} ms; open {got['open_rate']:g}/s"
                f" p99 {fmt(c['open']['p99_ms'], 1)} ms; {fmt(c['cpu_s_per_1000'], 2)} CPU s/1000",
                flush=True,
            )
        k, p = got["kamen_router"], got["passthrough"]
        # ratios within a round: both sides saw the same machine minutes
        ratios["c32_throughput"].append(k["c32"]["orders_per_s"] / p["c32"]["orders_per_s"])
        ratios["c1_added_p50"].append(k["c1"]["added_p50_ms"] / p["c1"]["added_p50_ms"])
        ratios["cpu_per_order"].append(k["cpu_s_per_1000"] / p["cpu_s_per_1000"])
    result = {
        "kamen_router": _median_of(rounds["kamen_router"]),
        "passthrough": _median_of(rounds["passthrough"]),
        "ratios": {key: median(values) for key, values in ratios.items()},
        "ratio_rounds": ratios,
        "open_rate": median(rates),
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "encrypted_journal": True,
    }
    common.save_result("throughput", result)
    print_report(result)
    return 0


def print_report(result: dict[str, Any]) -> None:
    k, p, r = result["kamen_router"], result["passthrough"], result["ratios"]
    rows = []
    phases = (
        ("c1", "closed C=1"),
        ("c32", f"closed C={result['concurrency']}"),
        ("open", f"open {result['open_rate']:g}/s"),
    )
    for phase, label in phases:
        for name, side in (("kamen-router", k), ("pass-through", p)):
            s = side[phase]
            rows.append(
                [
                    label,
                    name,
                    fmt(s["orders_per_s"], 0),
                    fmt(s["p50_ms"], 2),
                    fmt(s["p99_ms"], 2),
                    fmt(s["p999_ms"], 2),
                    fmt(s["added_p50_ms"], 2),
                    fmt(s["added_p99_ms"], 2),
                ]
            )
    print()
    common.print_table(
        rows, ["phase", "server", "orders/s", "p50 ms", "p99 ms", "p99.9 ms", "added p50", "added p99"]
    )
    print()
    print(
        f"CPU s/1000 orders: kamen-router {fmt(k['cpu_s_per_1000'], 3)}, pass-through"
        f" {fmt(p['cpu_s_per_1000'], 3)}; peak RSS MB: {fmt(k['peak_rss_mb'], 0)}"
        f" vs {fmt(p['peak_rss_mb'], 0)}"
    )
    print(
        f"ratios (median of rounds): C=32 throughput {fmt(r['c32_throughput'])}x (target >= 0.8),"
        f" C=1 router-added p50 {fmt(r['c1_added_p50'])}x (target <= 1.3),"
        f" CPU per order {fmt(r['cpu_per_order'])}x"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
