#!/usr/bin/env python
"""Recovery and a large journal: time from start to ready with many open
orders, and intake with a million settled ones.

Journals are built directly with the journal's own row code (the same rows
the daemon writes, encrypted with the run's key), then the daemon is
started on a copy:

* ready: seconds from spawning ``kamen-router run`` to its sd_notify
  READY=1 (which the daemon sends once it knows every open order by id and
  attempt key and has read the oldest; the rest are read while it takes
  orders, and anything touching one waits for it), with an empty journal
  and with 10,000 and 100,000 open orders: 98% with a live attempt
  (pending, unknown or submitted: each reconciled by query), 2% received
  (routed again). Also the seconds until its log says every open order is
  read. Median of ``--repeats`` starts.
* intake: orders delivered per second at C=32 (as in throughput.py, three
  simulated suppliers at zero think time) by a daemon whose journal holds
  1,000,000 delivered orders, against one with an empty journal; both run
  side by side and take turns block by block; the ratio is the median over
  block pairs.

Built journals are kept in ``bench/out/cache/`` (with their key) and
reused by later runs; ``--rebuild`` makes them again.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sqlite3
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.common import fmt, median

SKU = "card-100"
SUPPLIERS = ("sup-a", "sup-b", "sup-c")
CACHE = common.OUT / "cache"
#: bump when what the builder writes changes
BUILD_VERSION = 1
#: a start that takes longer is recorded as "not ready" (inf)
READY_LIMIT_S = 60


def write_config(root: Path) -> Path:
    suppliers = {name: common.supplier_yaml([SKU], price=100.0) for name in SUPPLIERS}
    return common.write_config(root, suppliers, skus=[SKU])


def _orders(kind: str, count: int, now: float) -> Any:
    """``count`` orders as the daemon would hold them: ``final`` ones
    delivered by one attempt, ``open`` ones mostly with a live attempt."""
    from kamen_router.orders import Order, OrderRequest
    from kamen_router.outcome import Card, Deliverables, Delivered, Pending, Unknown

    rng = random.Random(count)
    price = Decimal("100.00")
    for i in range(count):
        created = now - (count - i) * 0.01 - (0 if kind == "open" else 3600)
        request = OrderRequest(f"{kind}-{i:07d}", SKU, account="13800138000", deadline_s=600)
        order = Order.receive(request, created)
        if kind == "open":
            # created within the last minutes, so every deadline and the
            # reconcile limit are still ahead
            order.created_at = order.updated_at = now - rng.uniform(0, 60)
            order.deadline_at = order.created_at + 600
        draw = rng.random()
        if kind == "open" and draw < 0.02:
            yield order  # received: routed again after the start
            continue
        order.start_routing(order.created_at)
        supplier = SUPPLIERS[i % len(SUPPLIERS)]
        attempt = order.start_attempt(supplier, f"P-{SKU}", price, order.created_at)
        if kind == "final":
            card = Card(f"{rng.getrandbits(53):016d}", f"PW{rng.getrandbits(40):012d}", "2029-12-31")
            order.record(
                attempt, Delivered(Deliverables((card,)), price, f"{supplier}-{i:08d}"), created, 12.5
            )
        elif draw < 0.80:
            order.record(attempt, Pending(supplier_ref=f"{supplier}-{i:08d}"), order.created_at, 10.0)
        elif draw < 0.90:
            order.record(attempt, Unknown("no reply in time"), order.created_at, 10000.0)
        # else: submitted, the reply never seen
        yield order


def build_journal(kind: str, count: int, rebuild: bool) -> Path:
    """A journal holding ``count`` orders of ``kind``, encrypted with the
    cached key."""
    from kamen_router.crypto import FieldCipher, write_new_key
    from kamen_router.journal import _ATTEMPT_COLUMNS, _ORDER_COLUMNS, _attempt_row, _connect, _order_row

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{kind}-{count}-v{BUILD_VERSION}.sqlite3"
    cached_key = CACHE / "journal.key"
    if not cached_key.exists():
        write_new_key(cached_key)
    if path.exists() and not rebuild:
        return path
    for stale in CACHE.glob(path.name + "*"):
        stale.unlink()
    cipher = FieldCipher.from_files(cached_key)
    start = time.perf_counter()
    db = _connect(path)
    db.execute("PRAGMA synchronous=OFF")  # a scratch build: durability is not the point
    insert_order = f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    insert_attempt = f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    orders: list[tuple[Any, ...]] = []
    attempts: list[tuple[Any, ...]] = []

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany(insert_order, orders)
        db.executemany(insert_attempt, attempts)
        db.execute("COMMIT")
        orders.clear()
        attempts.clear()

    for order in _orders(kind, count, time.time()):
        orders.append(_order_row(order, cipher))
        attempts.extend(_attempt_row(order.order_id, a) for a in order.attempts)
        if len(orders) >= 20_000:
            flush()
    flush()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(f"built {path.name}: {count:,} {kind} orders in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def place(journal: Path | None, root: Path) -> Path:
    """A daemon directory with a copy of ``journal`` (None: empty)."""
    config = write_config(root)
    target = root / "var" / "journal.sqlite3"
    if journal is not None:
        shutil.copy(journal, target)
        target.chmod(0o600)
    return config


def time_ready(journal: Path | None, name: str, source: Path) -> tuple[float, float]:
    """Seconds from spawning the daemon to READY=1, and to its log line
    saying every open order has been read (the same when there are few)."""
    root = common.fresh_dir(f"recovery/{name}")
    key = root / "var" / "journal.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(CACHE / "journal.key", key)
    config = place(journal, root)
    try:
        server = common.start_daemon(config, root, name="daemon", ready_timeout_s=READY_LIMIT_S, cwd=source)
    except RuntimeError as exc:
        print(f"  {exc}", flush=True)
        return math.inf, math.inf
    spawned = time.perf_counter() - server.ready_s
    ready = server.ready_s
    read_all = ready
    if journal is not None:
        deadline = time.perf_counter() + READY_LIMIT_S
        while "recovered " not in server.log_path.read_text(errors="replace"):
            if time.perf_counter() > deadline:
                read_all = math.inf
                break
            time.sleep(0.02)
        else:
            read_all = time.perf_counter() - spawned
    server.stop(timeout_s=20)
    return ready, read_all


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--open", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--final", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--orders", type=int, default=1000, help="orders per intake block")
    parser.add_argument("--blocks", type=int, default=4, help="intake blocks per daemon")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--source", type=Path, default=common.ROOT, help="run the daemon from this source tree"
    )
    args = parser.parse_args(argv)

    journals = {n: build_journal("open", n, args.rebuild) for n in args.open}
    final = build_journal("final", args.final, args.rebuild)

    empty = [time_ready(None, "empty", args.source)[0] for _ in range(args.repeats)]
    print(f"ready, empty journal: {[round(x, 2) for x in empty]} s", flush=True)
    ready: dict[str, dict[str, Any]] = {}
    for n, journal in journals.items():
        times, all_read = [], []
        for _ in range(args.repeats):
            at_ready, at_all = time_ready(journal, f"open-{n}", args.source)
            times.append(at_ready)
            all_read.append(at_all)
            if math.isinf(at_ready):
                break  # no point waiting out the limit again
        ready[str(n)] = {
            "ready_s": median(times),
            "runs": times,
            "all_read_s": median(all_read),
            "all_read_runs": all_read,
        }
        print(
            f"ready with {n:,} open orders: {[round(x, 2) for x in times]} s;"
            f" all of them read: {[round(x, 2) for x in all_read]} s",
            flush=True,
        )

    # intake: the full journal and an empty one, side by side, in turns
    servers = []
    targets = []
    try:
        sides: list[tuple[str, Path | None]] = [("full", final), ("empty", None)]
        for name, contents in sides:
            root = common.fresh_dir(f"recovery/intake-{name}")
            key = root / "var" / "journal.key"
            key.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(CACHE / "journal.key", key)
            config = place(contents, root)
            server = common.start_daemon(config, root, name="daemon", ready_timeout_s=300, cwd=args.source)
            servers.append(server)
            targets.append((common.socket_of(config), server))
        warm = common.run_load(targets, orders=300, prefix="warm", sku=SKU, concurrency=8)
        for blocks in warm:
            common.check_complete(blocks[0], "warm-up")
        runs = common.run_load(
            targets, orders=args.orders, blocks=args.blocks, prefix="in", sku=SKU, concurrency=32
        )
    finally:
        for server in servers:
            server.stop()
    rates = []
    for blocks in runs:
        for block in blocks:
            common.check_complete(block, "intake")
        rates.append([common.latency_summary(b)["orders_per_s"] for b in blocks])
    pair_ratios = [f / e for f, e in zip(rates[0], rates[1], strict=True)]
    with sqlite3.connect(final) as db:
        held = db.execute("SELECT count(*) FROM orders").fetchone()[0]
    result = {
        "ready_empty_s": median(empty),
        "ready": ready,
        "final_orders": held,
        "final_journal_mb": final.stat().st_size / 2**20,
        "intake_full": median(rates[0]),
        "intake_empty": median(rates[1]),
        "intake_ratio": median(pair_ratios),
        "intake_blocks": rates,
        "encrypted_journal": True,
    }
    common.save_result("recovery", result)
    print()
    for n, cell in ready.items():
        print(
            f"ready with {int(n):,} open orders: {fmt(cell['ready_s'], 2)} s"
            f" (empty journal: {fmt(result['ready_empty_s'], 2)} s);"
            f" every one read after {fmt(cell['all_read_s'], 2)} s"
        )
    print(
        f"intake with {held:,} final orders in the journal ({result['final_journal_mb']:.0f} MB):"
        f" {fmt(result['intake_full'], 0)}/s vs {fmt(result['intake_empty'], 0)}/s empty"
        f" = {fmt(result['intake_ratio'])}x (target >= 0.9)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
