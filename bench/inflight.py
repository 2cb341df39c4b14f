#!/usr/bin/env python
"""Orders in flight: what 10,000 orders held PENDING cost the daemon.

Two ``sim`` suppliers, each simulated in its own process (``kamen-router
sim``) so that the daemon's RSS is the router's alone: ``fast`` delivers at
once; ``held`` answers every order PENDING and reports its delivery by
callback. The daemon runs with its callback listener; the journal is
encrypted.

1. idle intake: orders for ``fast``, closed loop at C=32, each POST waiting
   for its delivery (orders delivered per second), in blocks;
2. 10,000 orders for ``held`` are posted without waiting, open loop at 60%
   of the idle intake rate (a backlog of orders waiting for their submit
   would measure overload, not orders in flight). On two cores that takes
   longer than 20 s, so ``held`` keeps each order pending for
   ``pending_s`` = 1.3 x the planned posting time + 20 s, then calls back
   after a further 0-40 s: every order is still pending when the last is
   posted, and the callbacks come 20-60 s and more after that. Once every
   order has been submitted (the simulator answered PENDING), the daemon's
   RSS is read again: the growth over (1), per order open;
3. busy intake: (1) again while they wait (the router follows them on the
   plugin's query schedule).

Prints RSS growth per pending order and busy/idle intake (medians of
blocks). The run ends before the deliveries: what they cost is not
measured here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from bench.common import fmt, median

HELD, FAST = "held-card", "fast-card"
#: bounds on a run that falls far behind (so make bench still ends in time)
BLOCK_LIMIT_S = 15
POST_LIMIT_S = 120


def setup(root: Path) -> tuple[Path, dict[str, tuple[Path, int]]]:
    """router.yaml (suppliers at external endpoints) and each simulator's
    supplier file and port (``held``'s file is written by ``write_held``)."""
    import yaml

    sims = {}
    daemon_suppliers = {}
    for name, sku in (("held", HELD), ("fast", FAST)):
        port = common.free_port()
        sim_file = root / "sims.d" / f"{name}.yaml"
        sim_file.parent.mkdir(parents=True, exist_ok=True)
        if name == "fast":
            sim_file.write_text(yaml.safe_dump(common.supplier_yaml([sku]), sort_keys=False))
        sims[name] = (sim_file, port)
        daemon_suppliers[name] = common.supplier_yaml([sku], endpoint=f"http://127.0.0.1:{port}")
    config = common.write_config(
        root,
        daemon_suppliers,
        skus=[HELD, FAST],
        callbacks=True,
        orders={"max_open": 200_000},
    )
    return config, sims


def write_held(sim_file: Path, pending_s: float) -> None:
    import yaml

    simulate = {"pending_rate": 1.0, "pending_s": pending_s, "callback_delay_s": [0, 40]}
    data = common.supplier_yaml([HELD], simulate=simulate)
    sim_file.write_text(yaml.safe_dump(data, sort_keys=False))


def start_sim(name: str, sim_file: Path, port: int, root: Path) -> common.Server:
    argv = [common.PYTHON, "-m", "kamen_router", "sim", "-c", str(sim_file), "--listen", f"127.0.0.1:{port}"]
    return common.Server(argv, root, name=f"sim-{name}", ready=lambda: common.accepts(port))


def intake(sock: Path, blocks: int, orders: int, prefix: str) -> tuple[list[float], list[dict[str, Any]]]:
    runs = common.run_load(
        sock,
        orders=orders,
        blocks=blocks,
        prefix=prefix,
        sku=FAST,
        concurrency=32,
        time_limit_s=BLOCK_LIMIT_S,
    )[0]
    for run in runs:
        common.check_complete(run, f"intake {prefix}", cut_short=True)
    return [common.latency_summary(run)["orders_per_s"] for run in runs], runs


def submitted_count(sample: dict[str, float]) -> float:
    return sum(
        v
        for k, v in sample.items()
        if k.startswith("kamen_router_attempts_total{")
        and 'supplier="held"' in k
        and 'operation="submit"' in k
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--orders", type=int, default=500, help="orders per intake block")
    parser.add_argument(
        "--post-share", type=float, default=0.6, help="held orders are posted at this share of idle intake"
    )
    parser.add_argument(
        "--source", type=Path, default=common.ROOT, help="run the daemon from this source tree"
    )
    args = parser.parse_args(argv)

    root = common.fresh_dir("inflight")
    config, sims = setup(root)
    servers: list[common.Server] = []
    try:
        servers.append(start_sim("fast", *sims["fast"], root))
        daemon = common.start_daemon(config, root, cwd=args.source)
        servers.append(daemon)
        sock = common.socket_of(config)
        metrics = common.metrics_url(daemon)

        common.run_one(sock, orders=1000, prefix="warm", sku=FAST, concurrency=16)
        idle, _ = intake(sock, args.blocks, args.orders, "idle")
        rss_before = daemon.rss_mb()
        print(f"idle intake: {[round(x) for x in idle]} orders/s; RSS {rss_before:.1f} MB", flush=True)

        # posted open loop below the daemon's capacity: a backlog of
        # thousands of orders waiting for a submit would measure overload
        # instead of orders in flight
        rate = round(args.post_share * median(idle))
        # long enough that every order is still pending when the last is
        # posted: callbacks start about 20 s after that
        pending_s = round(args.pending / rate * 1.3 + 20)
        write_held(sims["held"][0], pending_s)
        servers.insert(0, start_sim("held", *sims["held"], root))
        start = time.perf_counter()
        held = common.run_one(
            sock,
            orders=args.pending,
            prefix="held",
            sku=HELD,
            rate=rate,
            wait_s=0,
            expect="*",
            time_limit_s=min(POST_LIMIT_S, max(60, 1.5 * args.pending / rate)),
        )
        posted_ok = sum(1 for v in held["e2e_s"] if v == v)
        if held["error_count"] or posted_ok != args.pending:
            print(
                f"posting the held orders: {posted_ok} of {args.pending} taken in time;"
                f" statuses {held['statuses']}, errors {held['errors'][:3]}"
            )
        held_rate = common.latency_summary(held)["orders_per_s"]
        posted = time.perf_counter()
        # every held order submitted and answered PENDING by the simulator
        while True:
            sample = common.scrape(metrics)
            submitted = submitted_count(sample)
            if submitted >= posted_ok:
                break
            if time.perf_counter() - posted > 30:
                print(f"only {submitted:.0f} of {posted_ok} held orders submitted 30 s after posting")
                break
            time.sleep(0.2)
        loaded_s = time.perf_counter() - start
        open_orders = sample.get("kamen_router_open_orders", float("nan"))
        rss_after = daemon.rss_mb()
        growth = rss_after - rss_before
        print(
            f"{posted_ok} of {args.pending} held orders posted at {held_rate:.0f}/s (planned {rate}/s),"
            f" {submitted:.0f} submitted after {loaded_s:.1f} s; {open_orders:.0f} open;"
            f" RSS {rss_after:.1f} MB (+{growth:.1f})",
            flush=True,
        )

        busy, _ = intake(sock, args.blocks, args.orders, "busy")
        open_after = common.scrape(metrics).get("kamen_router_open_orders", float("nan"))
        print(f"busy intake: {[round(x) for x in busy]} orders/s; {open_after:.0f} still open", flush=True)
        queries = sum(
            v
            for k, v in common.scrape(metrics).items()
            if k.startswith("kamen_router_attempts_total{") and 'operation="query"' in k
        )
    finally:
        for server in reversed(servers):
            server.stop()

    result = {
        "pending": args.pending,
        "open_at_peak": open_orders,
        "submitted": submitted,
        "posted": posted_ok,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_growth_mb": growth,
        "rss_per_pending_kb": growth * 1024 / max(open_orders, 1),
        "rss_for_10k_mb": growth / max(open_orders, 1) * 10_000,
        "held_post_rate": held_rate,
        "held_pending_s": pending_s,
        "loaded_s": loaded_s,
        "intake_idle": median(idle),
        "intake_busy": median(busy),
        "intake_ratio": median(busy) / median(idle),
        "idle_blocks": idle,
        "busy_blocks": busy,
        "queries_sent": queries,
        "open_after_busy": open_after,
        "encrypted_journal": True,
    }
    common.save_result("inflight", result)
    print()
    print(
        f"RSS for {open_orders:.0f} pending orders: +{fmt(growth, 1)} MB"
        f" ({fmt(result['rss_per_pending_kb'], 2)} KB each, {fmt(result['rss_for_10k_mb'], 1)} MB per 10,000;"
        " target <= 50 MB)"
    )
    print(
        f"intake: {fmt(result['intake_busy'], 0)}/s with them pending"
        f" vs {fmt(result['intake_idle'], 0)}/s idle = {fmt(result['intake_ratio'])}x (target >= 0.7);"
        f" {queries:.0f} queries sent meanwhile"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
