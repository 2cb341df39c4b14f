"""``make demo``: start the daemon on the shipped configuration, submit a few
hundred orders through its socket, and print what happened.

The daemon runs as a real subprocess (``kamen-router run``); the orders go
over the real Unix socket; the suppliers are the simulated upstreams of
``suppliers.d/``. The tables are built from the order API's own replies.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import trio

from .client import AsyncOrderClient
from .config import load_config
from .errors import ApiError, ConfigError
from .money import CENT, format_money

ACCOUNTS = ["13800138000", "13912345678", "18600001111", "15011112222", "13700009999"]


def _wait_ready(socket: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://demo", timeout=2, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited with code {proc.returncode} before it was ready")
            try:
                if http.get("/healthz").status_code == 200:
                    return
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.1)
    raise SystemExit(f"the daemon was not ready within {timeout_s:g} s")


async def _drive(
    socket: Path, skus: list[str], count: int, concurrency: int, run_id: str
) -> list[dict[str, Any]]:
    rng = random.Random(7)
    plan = []
    for i in range(count):
        sku = rng.choice(skus)
        account = None if sku.startswith(("steam", "qq")) else rng.choice(ACCOUNTS)
        plan.append((f"demo-{run_id}-{i:04d}", sku, account))
    results: list[dict[str, Any]] = []
    limiter = trio.Semaphore(concurrency)

    async def one(client: AsyncOrderClient, order_id: str, sku: str, account: str | None) -> None:
        async with limiter:
            try:
                reply = await client.submit(order_id, sku, account=account, wait_s=30)
                if reply["state"] not in ("delivered", "failed", "attention"):
                    reply = await client.get(order_id, wait_s=30)
            except ApiError as exc:
                reply = {"order_id": order_id, "state": f"error {exc.status}", "attempts": []}
            results.append(reply)

    async with AsyncOrderClient(socket) as client, trio.open_nursery() as nursery:
        for order_id, sku, account in plan:
            nursery.start_soon(one, client, order_id, sku, account)
    return results


def _tables(results: list[dict[str, Any]], elapsed: float, plugins: dict[str, str]) -> str:
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"taken": 0, "delivered": 0, "failed": 0, "latency": []}
    )
    for order in results:
        for attempt in order["attempts"]:
            row = per[attempt["supplier"]]
            row["taken"] += 1
            if attempt["state"] == "delivered":
                row["delivered"] += 1
            elif attempt["state"] in ("failed", "rejected", "invalid"):
                row["failed"] += 1
            if attempt["latency_ms"] is not None:
                row["latency"].append(attempt["latency_ms"])
    lines = ["", "Per supplier (attempts the router made there):", ""]
    lines.append(
        f"  {'supplier':<14} {'protocol':<10} {'taken':>6} {'delivered':>10}"
        f" {'failed':>7} {'mean latency':>13}"
    )
    for name in sorted(per):
        row = per[name]
        mean = f"{statistics.fmean(row['latency']):.0f} ms" if row["latency"] else "-"
        lines.append(
            f"  {name:<14} {plugins.get(name, '?'):<10} {row['taken']:>6} {row['delivered']:>10}"
            f" {row['failed']:>7} {mean:>13}"
        )
    states: dict[str, int] = defaultdict(int)
    for order in results:
        states[order["state"]] += 1
    delivered = [o for o in results if o["state"] == "delivered"]
    prices = [Decimal(o["unit_price"]) for o in delivered if o.get("unit_price")]
    mean_price = format_money((sum(prices, Decimal(0)) / len(prices)).quantize(CENT)) if prices else "-"
    failovers = sum(1 for o in results if len(o["attempts"]) > 1)
    lines += [
        "",
        "Overall:",
        "",
        f"  orders submitted      {len(results)}",
        f"  delivered             {states.pop('delivered', 0)}",
        f"  failed                {states.pop('failed', 0)}",
        f"  attention             {states.pop('attention', 0)}",
    ]
    lines += [f"  {state:<21} {n}" for state, n in sorted(states.items())]
    lines += [
        f"  failed over           {failovers}",
        f"  mean unit price paid  {mean_price}",
        f"  wall time             {elapsed:.1f} s",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kamen_router.demo", description=__doc__)
    parser.add_argument("-c", "--config", default="router.yaml")
    parser.add_argument("-n", "--orders", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=24)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("configuration errors:\n  " + "\n  ".join(str(p) for p in exc.problems), file=sys.stderr)
        return 1
    skus = list(config.skus)
    print(f"kamen-router demo: {len(config.suppliers)} suppliers, {len(skus)} skus, {args.orders} orders")
    env = dict(os.environ)
    log_path = config.journal.path.parent / "demo-daemon.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed after the daemon exits
    print(f"daemon log: {log_path}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kamen_router", "--log-level", "info", "run", "-c", args.config],
        env=env,
        stderr=log_file,
    )
    try:
        _wait_ready(config.api.socket, proc)
        start = time.monotonic()
        results = trio.run(
            _drive, config.api.socket, skus, args.orders, args.concurrency, f"{int(time.time())}"
        )
        elapsed = time.monotonic() - start
        if config.metrics.listen is not None:
            scrape = httpx.get(f"http://{config.metrics.listen}/metrics", timeout=5, trust_env=False).text
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in scrape.splitlines()
                if line.startswith("kamen_router_orders_total{")
            )
            print(f"metrics: kamen_router_orders_total sums to {counted:g} since the daemon started")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
    print(_tables(results, elapsed, {name: sup.plugin for name, sup in config.suppliers.items()}))
    unsettled = [o for o in results if o["state"] not in ("delivered", "failed", "attention")]
    return 1 if unsettled else 0


if __name__ == "__main__":
    raise SystemExit(main())
