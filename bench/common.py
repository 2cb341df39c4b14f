#!/usr/bin/env python
"""Shared helpers for the benchmarks: configs, servers in child processes,
process statistics, the load generator and the summary table.

Every benchmark drives the real daemon (``python -m kamen_router run``) in a
child process and measures it from outside: readiness by sd_notify
(``NOTIFY_SOCKET``, as systemd would see it), CPU time and RSS from
``/proc/PID``. Load comes from a separate process (``python
bench/common.py loadgen``) that speaks HTTP/1.1 on the order socket with a
hand-written client, so the generator costs far less CPU per request than
the server it measures: on a two-core machine its CPU is taken from the
server's. The journal is encrypted (``journal.key_file``), as in production.

Statistics: the machine is shared and noisy, so every comparison is a ratio
between measurements taken in the same run, alternating the two sides, and
every figure quoted is a median over repeats.

Run ``python bench/common.py summary`` to print the table of the last
results in ``bench/out/*.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

API_KEY = "bench-key-0123456789abcdef"
ACCOUNT = "13800138000"


# ------------------------------------------------------------------ configs


def fresh_dir(name: str) -> Path:
    """An empty working directory ``bench/out/NAME`` (its old content removed)."""
    path = OUT / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def supplier_yaml(
    skus: Iterable[str],
    *,
    price: float = 100.0,
    simulate: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """A ``sim`` supplier with generous limits (the benchmarks measure the
    router, not its throttles)."""
    data: dict[str, Any] = {
        "plugin": "sim",
        "enabled": True,
        "credentials": {"api_key": API_KEY},
        "limits": {"rate_per_s": 1_000_000, "max_in_flight": 100_000, "timeout_s": 10},
        "offers": {sku: {"product_id": f"P-{sku}", "price": price} for sku in skus},
    }
    if endpoint is not None:
        data["endpoint"] = endpoint
    else:
        # balance enough for any run: a drained supplier would measure failover
        data["simulate"] = {"latency_ms": [0, 0], "seed": 7, "balance": 10**12, **(simulate or {})}
    return data


def write_config(
    root: Path,
    suppliers: Mapping[str, Mapping[str, Any]],
    *,
    skus: Iterable[str],
    callbacks: bool = False,
    log_level: str = "info",
    orders: Mapping[str, Any] | None = None,
    encrypted: bool = True,
) -> Path:
    """Write router.yaml, suppliers.d/ and the journal key under ``root``;
    returns router.yaml. Encryption is on unless ``encrypted`` is False."""
    import yaml

    from kamen_router.crypto import write_new_key

    sdir = root / "suppliers.d"
    sdir.mkdir(parents=True, exist_ok=True)
    for name, data in suppliers.items():
        (sdir / f"{name}.yaml").write_text(yaml.safe_dump(dict(data), sort_keys=False))
    config: dict[str, Any] = {
        "api": {"socket": "run/orders.sock"},
        "metrics": {"listen": "127.0.0.1:0"},
        "journal": {"path": "var/journal.sqlite3"},
        "suppliers_dir": "suppliers.d",
        "logging": {"level": log_level},
        "skus": {sku: {"name": sku} for sku in skus},
    }
    if encrypted:
        key = root / "var" / "journal.key"
        if not key.exists():
            write_new_key(key)
        config["journal"]["key_file"] = "var/journal.key"
    else:
        config["journal"]["plaintext"] = True
    if callbacks:
        port = free_port()
        config["callbacks"] = {"listen": f"127.0.0.1:{port}"}
    if orders:
        config["orders"] = dict(orders)
    path = root / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def accepts(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def scrape(url: str) -> dict[str, float]:
    """A Prometheus endpoint's samples, ``name{labels}`` -> value."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metrics_url(server: Server) -> str:
    """The daemon's metrics URL, from its "ready" log line."""
    import re

    for _ in range(100):
        found = re.search(r"metrics=(http\S+)", server.log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"no metrics URL in {server.log_path}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark that started it dies, so an
    interrupted run leaves no daemon behind."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Server:
    """A server in a child process that reports ``READY=1`` by sd_notify.

    ``ready_s`` is the time from spawning it to READY=1. ``cpu_s`` and the
    RSS figures read ``/proc``; ``stop`` sends SIGTERM and waits.
    """

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        *,
        name: str,
        ready_timeout_s: float = 120,
        cwd: Path = ROOT,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """``ready``: a check polled instead of waiting for READY=1."""
        self.name = name
        notify_path = workdir / f"{name}.notify"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1")
        env.pop("WATCHDOG_USEC", None)
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        start = time.perf_counter()
        # the log goes through a pipe, as it goes to journald in production:
        # a write to a file on the journal's disk can wait behind its fsyncs
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.proc.pid
        self._drain = threading.Thread(target=self._copy_log, daemon=True)
        self._drain.start()
        self._notify.settimeout(0.2)
        deadline = start + ready_timeout_s
        while True:
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                message = b""
            if (ready is None and b"READY=1" in message.split(b"\n")) or (ready is not None and ready()):
                self.ready_s = time.perf_counter() - start
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}; see {self.log_path}")
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after {ready_timeout_s} s; see {self.log_path}")

    def _copy_log(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while chunk := os.read(stream.fileno(), 65536):
            self._log.write(chunk)
            self._log.flush()

    def cpu_s(self) -> float:
        """User plus system CPU seconds used so far (threads included)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def _status_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        return self._status_kb("VmHWM") / 1024

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(5)
        self._notify.close()
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_daemon(config: Path, workdir: Path, name: str = "daemon", **kw: Any) -> Server:
    return Server([PYTHON, "-m", "kamen_router", "run", "-c", str(config)], workdir, name=name, **kw)


def socket_of(config: Path) -> Path:
    return config.parent / "run" / "orders.sock"


# ----------------------------------------------------------- load generator


def run_load(
    targets: Sequence[tuple[Path, Server | None]] | Path,
    *,
    orders: int,
    prefix: str,
    sku: str,
    concurrency: int = 1,
    rate: float | None = None,
    blocks: int = 1,
    wait_s: float = 30,
    account: str | None = ACCOUNT,
    expect: str = "delivered",
    time_limit_s: float | None = None,
) -> list[list[dict[str, Any]]]:
    """Drive orders through each target's socket from a separate process:
    closed loop at ``concurrency``, or open loop at ``rate`` orders a second
    when given. ``blocks`` blocks of ``orders`` orders per target, the
    targets taking turns block by block (the first target of each turn
    alternating), so that two servers are compared over the same minutes
    of a noisy machine. Returns, per target, one result per block; a
    target's server (when given) has its CPU seconds read around each of
    its blocks.
    """
    if isinstance(targets, Path):
        targets = [(targets, None)]
    argv = [
        PYTHON,
        str(Path(__file__)),
        "loadgen",
        "--orders",
        str(orders),
        "--prefix",
        prefix,
        "--sku",
        sku,
        "--concurrency",
        str(concurrency),
        "--blocks",
        str(blocks),
        "--wait-s",
        str(wait_s),
        "--expect",
        expect,
    ]
    for sock, server in targets:
        argv += ["--target", f"{sock}={server.pid if server is not None else 0}"]
    if rate is not None:
        argv += ["--rate", str(rate)]
    if time_limit_s is not None:
        argv += ["--time-limit-s", str(time_limit_s)]
    if account is not None:
        argv += ["--account", account]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr.decode()[-3000:]}")
    result: list[list[dict[str, Any]]] = json.loads(done.stdout)
    return result


def run_one(sock: Path, **kw: Any) -> dict[str, Any]:
    """``run_load`` against one socket, one block: its result."""
    return run_load(sock, **kw)[0][0]


def _proc_cpu_s(pid: int) -> float:
    if not pid:
        return math.nan
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def _loadgen(args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    import trio

    head = b"POST /v1/orders HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: "

    class Conn:
        def __init__(self, path: str) -> None:
            self.path = path
            self.sock: Any = None
            self.buf = b""

        async def _open(self) -> None:
            self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await self.sock.connect(self.path)
            self.buf = b""

        def close(self) -> None:
            if self.sock is not None:
                self.sock.close()
                self.sock = None

        async def post(self, body: bytes) -> tuple[int, bytes]:
            for attempt in (1, 2):
                fresh = self.sock is None
                if fresh:
                    await self._open()
                try:
                    return await self._exchange(body)
                except (ConnectionError, EOFError):
                    # a keep-alive connection the server closed while idle;
                    # POSTing the same order id again is idempotent
                    self.close()
                    if fresh or attempt == 2:
                        raise
            raise AssertionError("unreachable")

        async def _exchange(self, body: bytes) -> tuple[int, bytes]:
            data = head + str(len(body)).encode() + b"\r\n\r\n" + body
            while data:
                sent = await self.sock.send(data)
                data = data[sent:]
            buf = self.buf
            while (end := buf.find(b"\r\n\r\n")) < 0:
                chunk = await self.sock.recv(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
            lines = buf[:end].split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            buf = buf[end + 4 :]
            while len(buf) < length:
                chunk = await self.sock.recv(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
            reply, self.buf = buf[:length], buf[length:]
            if close:
                self.close()
            return status, reply

    async def block(path: str, prefix: str) -> dict[str, Any]:
        n = args.orders
        e2e = [math.nan] * n
        supplier = [math.nan] * n
        statuses: dict[str, int] = {}
        states: dict[str, int] = {}
        errors: list[str] = []

        def body_for(i: int) -> bytes:
            order: dict[str, Any] = {"order_id": f"{prefix}-{i}", "sku": args.sku}
            if args.account:
                order["account"] = args.account
            if args.wait_s:
                order["wait_s"] = args.wait_s
            return json.dumps(order, separators=(",", ":")).encode()

        async def one(conn: Conn, i: int, t0: float) -> None:
            try:
                status, reply = await conn.post(body_for(i))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                return
            end = time.perf_counter()
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            try:
                data = json.loads(reply)
            except ValueError:
                data = {}
            state = data.get("state", "-")
            states[state] = states.get(state, 0) + 1
            if state != args.expect and not (args.expect == "*" and 200 <= status < 300):
                return
            e2e[i] = end - t0
            attempts = data.get("attempts") or []
            if attempts and attempts[-1].get("latency_ms") is not None:
                supplier[i] = attempts[-1]["latency_ms"] / 1000

        start = time.perf_counter()
        stop_at = math.inf if args.time_limit_s is None else start + args.time_limit_s
        sent = 0
        if args.rate is None:
            counter = iter(range(n))

            async def worker() -> None:
                nonlocal sent
                conn = Conn(path)
                for i in counter:
                    if time.perf_counter() > stop_at:
                        break
                    sent += 1
                    await one(conn, i, time.perf_counter())
                conn.close()

            async with trio.open_nursery() as nursery:
                for _ in range(args.concurrency):
                    nursery.start_soon(worker)
        else:
            free: list[Conn] = []
            interval = 1.0 / args.rate
            base = trio.current_time()
            # latency counts from when each order was due, not from when it
            # could be sent: a stalled server cannot hide its backlog
            # (no coordinated omission)
            offset = time.perf_counter() - trio.current_time()

            # at most max_conns connections: beyond that an order waits for
            # one (its latency still counts from when it was due)
            conns = trio.Semaphore(args.max_conns)

            async def send(i: int, due: float) -> None:
                async with conns:
                    conn = free.pop() if free else Conn(path)
                    await one(conn, i, due + offset)
                    free.append(conn)

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    due = base + i * interval
                    await trio.sleep_until(due)
                    if time.perf_counter() > stop_at:
                        break
                    sent += 1
                    nursery.start_soon(send, i, due)
            for conn in free:
                conn.close()
        return {
            "orders": n,
            "sent": sent,
            "wall_s": time.perf_counter() - start,
            "statuses": statuses,
            "states": states,
            "errors": errors[:10],
            "error_count": len(errors),
            "e2e_s": e2e,
            "supplier_s": supplier,
        }

    targets = [t.rsplit("=", 1) for t in args.target]
    results: list[list[dict[str, Any]]] = [[] for _ in targets]
    for b in range(args.blocks):
        turn = list(range(len(targets)))
        if b % 2:
            turn.reverse()
        for t in turn:
            path, pid = targets[t][0], int(targets[t][1])
            cpu = _proc_cpu_s(pid)
            result = await block(path, f"{args.prefix}-t{t}-b{b}")
            result["cpu_s"] = _proc_cpu_s(pid) - cpu
            results[t].append(result)
    return results


def _loadgen_main(argv: Sequence[str]) -> int:
    import trio

    parser = argparse.ArgumentParser(prog="loadgen")
    parser.add_argument("--target", action="append", required=True, help="SOCKET=PID (PID 0: none)")
    parser.add_argument("--orders", type=int, required=True, help="orders per block")
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--sku", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--wait-s", type=float, default=30)
    parser.add_argument("--account", default=None)
    parser.add_argument("--expect", default="delivered", help='the state a reply must have ("*": any 2xx)')
    parser.add_argument("--max-conns", type=int, default=256, help="open loop: connections at most")
    parser.add_argument(
        "--time-limit-s", type=float, default=None, help="send no order after this long (per block)"
    )
    args = parser.parse_args(argv)
    result = trio.run(_loadgen, args)
    json.dump(result, sys.stdout)
    return 0


def merge_blocks(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from several blocks of one target (samples pooled, wall
    and CPU time summed)."""
    out: dict[str, Any] = {
        "orders": sum(b["orders"] for b in blocks),
        "sent": sum(b["sent"] for b in blocks),
        "wall_s": sum(b["wall_s"] for b in blocks),
        "cpu_s": sum(b["cpu_s"] for b in blocks),
        "statuses": {},
        "states": {},
        "errors": [e for b in blocks for e in b["errors"]][:10],
        "error_count": sum(b["error_count"] for b in blocks),
        "e2e_s": [v for b in blocks for v in b["e2e_s"]],
        "supplier_s": [v for b in blocks for v in b["supplier_s"]],
    }
    for b in blocks:
        for key in ("statuses", "states"):
            for k, v in b[key].items():
                out[key][k] = out[key].get(k, 0) + v
    return out


# --------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of the finite values, by nearest rank."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    rank = max(1, math.ceil(q * len(data)))
    return data[rank - 1]


def median(values: Iterable[float]) -> float:
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def latency_summary(result: Mapping[str, Any]) -> dict[str, float]:
    """Percentiles (ms) of end-to-end and router-added latency, and orders/s."""
    e2e = result["e2e_s"]
    added = [
        e - s if not (math.isnan(e) or math.isnan(s)) else math.nan
        for e, s in zip(e2e, result["supplier_s"], strict=True)
    ]
    ok = sum(1 for v in e2e if not math.isnan(v))
    return {
        "orders_per_s": ok / result["wall_s"],
        "ok": ok,
        "p50_ms": percentile(e2e, 0.5) * 1000,
        "p99_ms": percentile(e2e, 0.99) * 1000,
        "p999_ms": percentile(e2e, 0.999) * 1000,
        "added_p50_ms": percentile(added, 0.5) * 1000,
        "added_p99_ms": percentile(added, 0.99) * 1000,
        "supplier_p50_ms": percentile(result["supplier_s"], 0.5) * 1000,
    }


def check_complete(result: Mapping[str, Any], what: str, *, cut_short: bool = False) -> None:
    """Fail loudly when orders went missing: a fast wrong answer is no result.
    With ``cut_short``, a time limit may have left orders unsent; every
    order sent must still have completed."""
    ok = sum(1 for v in result["e2e_s"] if not math.isnan(v))
    expected = result["sent"] if cut_short else result["orders"]
    if ok != expected:
        raise RuntimeError(
            f"{what}: {expected - ok} of {expected} orders did not complete"
            f" (statuses {result['statuses']}, states {result['states']}, errors {result['errors']})"
        )


def save_result(name: str, data: Mapping[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def load_result(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


# ------------------------------------------------------------------ summary


def summary_rows() -> list[list[str]]:
    """One row per target: what was measured, the target, and whether it held."""
    rows: list[list[str]] = []

    def row(name: str, value: str, target: str, ok: bool | None) -> None:
        verdict = "-" if ok is None else ("ok" if ok else "MISSED")
        rows.append([name, value, target, verdict])

    tp = load_result("throughput")
    if tp is not None:
        k, p, r = tp["kamen_router"], tp["passthrough"], tp["ratios"]
        row(
            "throughput C=32 (orders/s)",
            f"{fmt(k['c32']['orders_per_s'], 0)} vs {fmt(p['c32']['orders_per_s'], 0)}"
            f" = {fmt(r['c32_throughput'])}x",
            ">= 0.8x pass-through",
            r["c32_throughput"] >= 0.8,
        )
        row(
            "router-added p50 C=1 (ms)",
            f"{fmt(k['c1']['added_p50_ms'], 3)} vs {fmt(p['c1']['added_p50_ms'], 3)}"
            f" = {fmt(r['c1_added_p50'])}x",
            "<= 1.3x pass-through",
            r["c1_added_p50"] <= 1.3,
        )
        row(
            "e2e p50/p99/p99.9 C=32 (ms)",
            f"{fmt(k['c32']['p50_ms'], 1)}/{fmt(k['c32']['p99_ms'], 1)}/{fmt(k['c32']['p999_ms'], 1)}"
            f" vs {fmt(p['c32']['p50_ms'], 1)}/{fmt(p['c32']['p99_ms'], 1)}/{fmt(p['c32']['p999_ms'], 1)}",
            "(pass-through second)",
            None,
        )
        row(
            f"open loop {fmt(tp['open_rate'], 0)}/s p50/p99/p99.9 (ms)",
            f"{fmt(k['open']['p50_ms'], 1)}/{fmt(k['open']['p99_ms'], 1)}/{fmt(k['open']['p999_ms'], 1)}"
            f" vs {fmt(p['open']['p50_ms'], 1)}/{fmt(p['open']['p99_ms'], 1)}/{fmt(p['open']['p999_ms'], 1)}",
            "(pass-through second)",
            None,
        )
        row(
            "CPU s per 1,000 orders (C=32)",
            f"{fmt(k['cpu_s_per_1000'], 3)} vs {fmt(p['cpu_s_per_1000'], 3)} = {fmt(r['cpu_per_order'])}x",
            "(report)",
            None,
        )
        row(
            "peak RSS (MB)",
            f"{fmt(k['peak_rss_mb'], 0)} vs {fmt(p['peak_rss_mb'], 0)}",
            "(report)",
            None,
        )
    inf = load_result("inflight")
    if inf is not None:
        row(
            "RSS per 10,000 pending orders (MB)",
            f"{fmt(inf['rss_for_10k_mb'], 1)} ({fmt(inf['rss_per_pending_kb'], 2)} KB each;"
            f" {inf['open_at_peak']:,.0f} open)",
            "<= 50 MB",
            inf["rss_for_10k_mb"] <= 50,
        )
        row(
            "intake with them pending",
            f"{fmt(inf['intake_busy'], 0)} vs {fmt(inf['intake_idle'], 0)}/s = {fmt(inf['intake_ratio'])}x",
            ">= 0.7x idle",
            inf["intake_ratio"] >= 0.7,
        )
    dec = load_result("decision")
    if dec is not None:
        cells = {(c["candidates"], c["skus"]): c for c in dec["cells"]}
        c100 = max(
            (c for (n, _s), c in cells.items() if n == 100), key=lambda c: c["median_us"], default=None
        )
        if c100 is not None:
            row(
                "routing decision, 100 candidates (us)",
                f"{fmt(c100['median_us'], 1)} (p99 {fmt(c100['p99_us'], 1)})",
                "median < 50 us",
                c100["median_us"] < 50,
            )
        skus = sorted({s for _n, s in cells})
        grid = " ".join(
            f"{n}:" + "/".join(fmt(cells[(n, s)]["median_us"], 0) for s in skus if (n, s) in cells)
            for n in sorted({n for n, _s in cells})
        )
        row(
            "decision us by candidates (" + "/".join(f"{s // 1000}k" for s in skus) + " skus)",
            grid,
            "no worse than linear",
            dec["linear"],
        )
    rec = load_result("recovery")
    if rec is not None:
        for n, cell in sorted(rec["ready"].items(), key=lambda kv: int(kv[0])):
            target = int(n) >= 100_000
            row(
                f"ready with {int(n):,} open orders (s)",
                f"{fmt(cell['ready_s'], 2)} (empty {fmt(rec['ready_empty_s'], 2)};"
                f" all read {fmt(cell.get('all_read_s'), 2)})",
                "<= 5 s" if target else "(report)",
                cell["ready_s"] <= 5 if target else None,
            )
        row(
            f"intake, {rec['final_orders']:,} final orders in journal",
            f"{fmt(rec['intake_full'], 0)} vs {fmt(rec['intake_empty'], 0)}/s = {fmt(rec['intake_ratio'])}x",
            ">= 0.9x empty",
            rec["intake_ratio"] >= 0.9,
        )
    return rows


def print_summary() -> None:
    rows = summary_rows()
    print()
    print("kamen-router benchmarks (medians; journal encrypted; 'vs' = kamen-router vs baseline)")
    print()
    print_table(rows, ["measure", "kamen-router", "target", "result"])


BENCHMARKS = ("throughput", "inflight", "decision", "recovery")


def run_all(extra: Sequence[str] = ()) -> int:
    """Every benchmark in turn (``make bench``), then the summary table.
    ``extra`` goes to every benchmark (``--source DIR``)."""
    start = time.perf_counter()
    failed = []
    times = {}
    for name in BENCHMARKS:
        (OUT / f"{name}.json").unlink(missing_ok=True)
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run([PYTHON, str(ROOT / "bench" / f"{name}.py"), *extra], cwd=ROOT, check=False)
        times[name] = time.perf_counter() - t0
        if done.returncode != 0:
            failed.append(name)
    print_summary()
    wall = time.perf_counter() - start
    each = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items())
    print(f"\nmake bench: {wall / 60:.1f} min ({each})")
    if failed:
        print(f"failed: {', '.join(failed)} (see above)")
    return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "loadgen":
        return _loadgen_main(argv[1:])
    if argv and argv[0] == "summary":
        print_summary()
        return 0
    if argv and argv[0] == "all":
        return run_all(argv[1:])
    print("usage: common.py loadgen ... | summary | all [--source DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
