#!/usr/bin/env python
"""Routing decision time against the number of candidates and of skus.

One decision is what the dispatcher does for every attempt:
``Router.choose(sku, now, ...)`` (find the best candidate for the sku, or a
near-tie, and take its limits; it scores the offers near the top of the
ranking, not all of them), timed alone with ``perf_counter_ns``, then
``release``. Pure code, no I/O, in this process.

The catalogue: S skus (1,000 or 100,000) over N suppliers (10, 100 or
1,000). Decisions are for 64 "hot" skus that every supplier offers, so
each has N candidates; every other sku is offered by 3 suppliers drawn at
random, so the offer tables and the scoreboard hold S x 3 entries besides.
Every supplier and offer has learnt statistics (deliveries, failures,
latency) and a known balance, prices differ (95.00-105.00), so the ranking
does real work; limits never bind. One extra cell has 1,000 suppliers of
which 10 offer the hot skus: the cost of suppliers that are configured but
are not candidates.

Decisions are made as in the daemon: the router's clock advances 2 ms per
decision (500 decisions a second), every outcome is learnt (untimed), and
the cyclic garbage collector is tuned as ``kamen-router run`` tunes it
(``cli.tune_gc``: what is built at start frozen out of it, collections less
often). Without that, the collector's walks over a million objects (100,000
skus' offers) are what a tenfold number of candidates mostly adds.
Prints median and p99 per cell and whether time grows no worse than
linearly with N (a tenfold N may cost at most 12x; S may not matter).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# --source DIR: decide with the router from another source tree (to measure
# a patch); it must be importable before kamen_router is
if "--source" in sys.argv[:-1]:
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--source") + 1]).resolve()))

from bench import common
from bench.common import fmt, percentile
from kamen_router.cli import tune_gc
from kamen_router.config import Limits, Offer, SupplierConfig
from kamen_router.outcome import Deliverables, Delivered, Failed
from kamen_router.routing import Choice, Router

HOT = 64
COLD_OFFERS = 3
#: a tenfold number of candidates may cost at most this many times more
LINEAR_SLACK = 1.2


def build(
    suppliers: int, skus: int, candidates: int | None = None, seed: int = 1
) -> tuple[Router, list[str]]:
    """A router over ``suppliers`` suppliers and ``skus`` skus, with learnt
    state; the hot skus have ``candidates`` candidates (default: all)."""
    rng = random.Random(seed)
    names = [f"s{j:04d}" for j in range(suppliers)]
    offers: dict[str, dict[str, Offer]] = {name: {} for name in names}
    hot = [f"sku-{i:06d}" for i in range(HOT)]
    offering = names[: candidates or suppliers]
    for sku in hot:
        for name in offering:
            offers[name][sku] = Offer(sku, f"P-{sku}", Decimal(rng.randint(9500, 10500)) / 100)
    for i in range(HOT, skus):
        sku = f"sku-{i:06d}"
        for name in rng.sample(names, min(COLD_OFFERS, suppliers)):
            offers[name][sku] = Offer(sku, f"P-{sku}", Decimal(rng.randint(900, 11000)) / 100)
    configs = {
        name: SupplierConfig(
            name=name,
            file=Path(f"suppliers.d/{name}.yaml"),
            plugin="sim",
            enabled=True,
            endpoint="http://127.0.0.1:9",
            credentials={},
            limits=Limits(rate_per_s=1e9, max_in_flight=10**9, timeout_s=10),
            offers=offers[name],
        )
        for name in names
    }
    router = Router(configs, rng=random.Random(seed))
    board = router.board
    now = 1000.0
    delivered = Delivered(Deliverables((), "R-1"), None)
    failed = Failed("failed", "failed")
    for name in names:
        board.set_balance(name, Decimal(10**9), now)
        for sku in offers[name]:
            # a few outcomes per offer, some of them failures, with latency
            for k in range(3 if sku in hot else 1):
                outcome = failed if rng.random() < 0.05 else delivered
                board.observe(name, sku, outcome, now - k, latency_s=rng.uniform(0.05, 2.0))
    return router, hot


def time_decisions(
    router: Router, hot: list[str], budget_s: float, step_s: float, max_n: int = 20000
) -> list[int]:
    """Decisions as the daemon makes them: the router's clock advances by
    ``step_s`` per decision, and each outcome is learnt (untimed)."""
    delivered = Delivered(Deliverables((), "R-1"), None)
    times: list[int] = []
    clock = time.perf_counter_ns
    gc.collect()
    deadline = time.perf_counter() + budget_s
    i = 0
    while (time.perf_counter() < deadline or len(times) < 200) and len(times) < max_n:
        sku = hot[i % len(hot)]
        now = 1000.0 + i * step_s
        i += 1
        t0 = clock()
        choice = router.choose(sku, now)
        t1 = clock()
        if not isinstance(choice, Choice):
            raise RuntimeError(f"no choice for {sku}: {choice}")
        router.release(choice.candidate.supplier)
        router.board.observe(choice.candidate.supplier, sku, delivered, now, latency_s=0.2)
        times.append(t1 - t0)
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=1.5, help="timing per cell")
    parser.add_argument("--candidates", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--skus", type=int, nargs="*", default=[1000, 100_000])
    parser.add_argument(
        "--step-ms", type=float, default=2.0, help="the router's clock advances this much per decision"
    )
    parser.add_argument("--source", type=Path, default=None, help="use the router from this source tree")
    args = parser.parse_args(argv)

    cells: list[dict[str, Any]] = []
    rows = []
    for skus in args.skus:
        for n in args.candidates:
            router, hot = build(n, skus)
            tune_gc()  # as the daemon does once its configuration is loaded
            times = time_decisions(router, hot, args.budget_s, args.step_ms / 1000)
            cell = {
                "candidates": n,
                "suppliers": n,
                "skus": skus,
                "decisions": len(times),
                "median_us": percentile(times, 0.5) / 1000,
                "p99_us": percentile(times, 0.99) / 1000,
            }
            cells.append(cell)
            rows.append(_row(cell))
            print("  ".join(rows[-1]), flush=True)
            del router
    router, hot = build(1000, args.skus[0], candidates=10)
    tune_gc()
    extra = {
        "candidates": 10,
        "suppliers": 1000,
        "skus": args.skus[0],
        "decisions": 0,
        "median_us": 0.0,
        "p99_us": 0.0,
    }
    times = time_decisions(router, hot, args.budget_s, args.step_ms / 1000)
    extra.update(
        decisions=len(times), median_us=percentile(times, 0.5) / 1000, p99_us=percentile(times, 0.99) / 1000
    )
    rows.append(_row(extra))

    by = {(c["candidates"], c["skus"]): c["median_us"] for c in cells}
    linear = True
    growth = []
    for skus in args.skus:
        ns = sorted(n for n, s in by if s == skus)
        for a, b in itertools.pairwise(ns):
            factor = by[(b, skus)] / by[(a, skus)]
            allowed = b / a * LINEAR_SLACK
            growth.append(f"{a}->{b} candidates at {skus:,} skus: x{factor:.1f} (linear: x{b / a:g})")
            linear &= factor <= allowed
    sku_effect = [by[(n, args.skus[-1])] / by[(n, args.skus[0])] for n in args.candidates]
    result = {
        "cells": cells,
        "extra": extra,
        "linear": linear,
        "growth": growth,
        "sku_effect": sku_effect,
        "per_candidate_us": by.get((1000, args.skus[0]), 0) / 1000,
    }
    common.save_result("decision", result)
    print()
    common.print_table(rows, ["candidates", "suppliers", "skus", "decisions", "median us", "p99 us"])
    print()
    for line in growth:
        print(line)
    print(
        "sku count effect (100k / 1k skus, per candidate count): "
        + ", ".join(f"x{e:.2f}" for e in sku_effect)
    )
    c100 = max(c["median_us"] for c in cells if c["candidates"] == 100)
    print(
        f"median with 100 candidates: {fmt(c100, 1)} us (target < 50 us);"
        f" growth {'no worse than' if linear else 'WORSE than'} linear"
    )
    return 0


def _row(cell: dict[str, Any]) -> list[str]:
    return [
        str(cell["candidates"]),
        str(cell["suppliers"]),
        f"{cell['skus']:,}",
        str(cell["decisions"]),
        fmt(cell["median_us"], 1),
        fmt(cell["p99_us"], 1),
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
