"""Operating the daemon: reloads that apply or are refused, graceful shutdown
under load, sd_notify, socket activation and the systemd unit.

In-process tests run a ``Daemon`` in the test's nursery; the others run
``python -m kamen_router run`` as a subprocess, with simulated suppliers in
processes of their own so that they outlive the daemon. Every subprocess is
stopped in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from conftest import RunningDaemon, _prices_as_numbers, ledger, supplier, until, write_config
from prometheus_client.parser import text_string_to_metric_families

import kamen_router.daemon as daemon_module
from kamen_router.config import load_config
from kamen_router.daemon import Daemon, DaemonInfo, serve_simulated_supplier
from kamen_router.logs import LogfmtFormatter
from kamen_router.plugin import load_plugins

SKU = "mobile-cmcc-100"
SKUS = {SKU: {}}
ACCOUNT = "13800138000"
CHEAP, MID, CHEAPER = "98.20", "98.90", "90.00"
FINAL = {"delivered", "failed", "attention"}
ROOT = Path(__file__).resolve().parent.parent
#: variables of a service manager that must not leak from the test's own
#: environment into the daemons it starts
_MANAGER_VARS = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)


def two(**faults: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "cheap": supplier({SKU: CHEAP}, simulate=faults.get("cheap")),
        "mid": supplier({SKU: MID}, simulate=faults.get("mid")),
    }


def write_supplier(root: Path, name: str, data: Mapping[str, Any] | str) -> Path:
    """Write suppliers.d/NAME.yaml atomically (a poll never sees half a file)."""
    path = root / "suppliers.d" / f"{name}.yaml"
    text = data if isinstance(data, str) else yaml.safe_dump(_prices_as_numbers(data), sort_keys=False)
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "sku": SKU, "account": ACCOUNT, **extra}


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not in the scrape")


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = LogfmtFormatter()
    return [
        formatter.format(r)
        for r in caplog.records
        if r.name == "kamen_router.daemon" and r.getMessage() == "reload refused"
    ]


@contextlib.asynccontextmanager
async def running(path: Path, *, poll_s: float | None = 0.2) -> AsyncIterator[RunningDaemon]:
    """A ``Daemon`` on ``path`` in its own nursery; stopped gracefully."""
    config = load_config(path)
    daemon = Daemon(config, load_plugins(config.plugins_dir), poll_s=poll_s)
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await daemon.run(task_status=task_status)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        info: DaemonInfo = await nursery.start(run)
        assert info.daemon is daemon
        live = RunningDaemon(info, nursery.cancel_scope, done)
        try:
            yield live
        finally:
            await live.http.aclose()
            daemon.shutdown()
            with trio.move_on_after(10):
                await done.wait()
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- 1. reload


async def test_reload_adds_a_cheaper_supplier(tmp_path: Path) -> None:
    with trio.fail_after(30):
        path = write_config(tmp_path, two(), skus=SKUS)
        async with running(path, poll_s=None) as d:
            assert (await d.order(order("a1")))["supplier"] == "cheap"
            write_supplier(tmp_path, "cheaper", supplier({SKU: CHEAPER}))
            assert await d.info.daemon.reload() is True
            reply = await d.order(order("a2"))
            assert (reply["state"], reply["supplier"], reply["unit_price"]) == (
                "delivered",
                "cheaper",
                CHEAPER,
            )
            assert len(await d.ledger("cheaper")) == 1


async def test_file_polling_picks_up_a_new_supplier(tmp_path: Path) -> None:
    with trio.fail_after(30):
        path = write_config(tmp_path, two(), skus=SKUS)
        async with running(path, poll_s=0.2) as d:
            assert (await d.order(order("p1")))["supplier"] == "cheap"
            write_supplier(tmp_path, "cheaper", supplier({SKU: CHEAPER}))
            await until(lambda: "cheaper" in d.info.daemon.config.suppliers, 5, "the poll to reload")
            reply = await d.order(order("p2"))
            assert (reply["state"], reply["supplier"]) == ("delivered", "cheaper")


BROKEN = {
    "bad_yaml": ("plugin: sim\noffers: {mobile-cmcc-100: {price: 90\n", "", "not valid YAML"),
    "unknown_key": (None, "colour", "unknown key"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
async def test_broken_supplier_file_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.INFO)
    text, key, problem = BROKEN[kind]
    good = supplier({SKU: CHEAPER})
    with trio.fail_after(30):
        path = write_config(tmp_path, two(), skus=SKUS)
        async with running(path, poll_s=0.2) as d:
            assert metric(await d.scrape(), "kamen_router_config_last_reload_successful") == 1
            # cheaper than everyone, so routing would show it if it were applied
            write_supplier(tmp_path, "newbie", text if text is not None else {**good, key: "red"})

            async def failures() -> float:
                return metric(await d.scrape(), "kamen_router_config_reload_failures_total")

            # the poll sees the change and refuses it ...
            await until(lambda: failures(), 5, "the poll to refuse the file")
            assert await failures() == 1
            # ... and so does an explicit reload (SIGHUP does the same)
            assert await d.info.daemon.reload() is False
            text_after = await d.scrape()
            assert metric(text_after, "kamen_router_config_last_reload_successful") == 0
            assert metric(text_after, "kamen_router_config_reload_failures_total") == 2
            assert "newbie" not in d.info.daemon.config.suppliers
            reply = await d.order(order("b1"))
            assert (reply["state"], reply["supplier"]) == ("delivered", "cheap")

            lines = refusals(caplog)
            assert len(lines) == 2, lines
            for line in lines:
                assert "newbie.yaml" in line, line
                assert problem in line, line
                if key:
                    assert f"key={key} " in line, line
                assert "test-key-0123456789" not in line

            # fixed: the next reload applies it and the gauge is back to 1
            write_supplier(tmp_path, "newbie", good)
            await until(lambda: "newbie" in d.info.daemon.config.suppliers, 5, "the poll to apply the fix")
            assert await d.info.daemon.reload() is True
            text_fixed = await d.scrape()
            assert metric(text_fixed, "kamen_router_config_last_reload_successful") == 1
            assert metric(text_fixed, "kamen_router_config_reload_failures_total") == 2
            assert (await d.order(order("b2")))["supplier"] == "newbie"


async def test_removed_supplier_still_reconciles_its_live_attempt(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        sim_path = write_config(
            tmp_path / "sim",
            {"slow": supplier({SKU: CHEAP}, simulate={"pending_rate": 1, "pending_s": 2})},
            skus=SKUS,
        )
        url = await nursery.start(
            serve_simulated_supplier, load_plugins(None)["sim"], load_config(sim_path).suppliers["slow"]
        )
        root = tmp_path / "d"
        path = write_config(
            root, {"slow": supplier({SKU: CHEAP}, endpoint=url), "other": supplier({SKU: MID})}, skus=SKUS
        )
        async with running(path, poll_s=None) as d:
            first = await d.post({**order("r1"), "wait_s": 0.5})
            assert first.status_code == 202, first.text
            pending = first.json()
            assert pending["state"] == "pending"
            assert [(a["supplier"], a["outcome"]) for a in pending["attempts"]] == [("slow", "pending")]

            (root / "suppliers.d" / "slow.yaml").unlink()
            assert await d.info.daemon.reload() is True
            route = (await d.http.get("/v1/route", params={"sku": SKU})).json()
            # new orders no longer go there: it is not a candidate
            assert [c["supplier"] for c in route["candidates"]] == ["other"], route
            assert (await d.order(order("r2")))["supplier"] == "other"

            final = (await d.get("r1", wait_s=15)).json()
            assert (final["state"], final["supplier"]) == ("delivered", "slow"), final
            assert [a["supplier"] for a in final["attempts"]] == ["slow"]
            assert len(await ledger(url)) == 1
            assert len(await d.ledger("other")) == 1  # r2 only


async def test_listener_changes_wait_for_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(30):
        path = write_config(tmp_path, two(), skus=SKUS)
        async with running(path, poll_s=None) as d:
            old_url = d.info.metrics_url
            assert old_url is not None
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            write_config(
                tmp_path,
                two(),
                skus=SKUS,
                metrics={"listen": f"127.0.0.1:{port}"},
                api={"socket": "run/elsewhere.sock"},
            )
            assert await d.info.daemon.reload() is True
            warned = {
                getattr(r, "kr_fields", {}).get("key")
                for r in caplog.records
                if r.levelno == logging.WARNING and "restart" in r.getMessage()
            }
            assert {"metrics.listen", "api.socket"} <= warned, warned
            # the old listeners keep working; nothing listens on the new ones
            async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
                assert (await http.get(old_url)).status_code == 200
                with pytest.raises(httpx.ConnectError):
                    await http.get(f"http://127.0.0.1:{port}/metrics")
            assert not (tmp_path / "run/elsewhere.sock").exists()
            assert (await d.order(order("l1")))["state"] == "delivered"
            assert metric(await d.scrape(), "kamen_router_config_last_reload_successful") == 1


NOCAT_PLUGIN = '''
from kamen_router.sim.plugin import SimPlugin


class NoCatalog(SimPlugin):
    """The sim protocol without a catalog: routing uses the configured prices."""

    name = "nocat"
    catalog = None


PLUGIN = NoCatalog
'''


async def test_changed_price_applies_to_the_next_decision(tmp_path: Path) -> None:
    """With a plugin that has no catalog, the configured price is the price."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "nocat.py").write_text(NOCAT_PLUGIN)
    suppliers = {name: {**data, "plugin": "nocat"} for name, data in two().items()}
    with trio.fail_after(30):
        path = write_config(tmp_path, suppliers, skus=SKUS, plugins_dir="plugins")
        async with running(path, poll_s=None) as d:
            assert (await d.order(order("e1")))["supplier"] == "cheap"
            write_supplier(
                tmp_path,
                "cheap",
                {**suppliers["cheap"], "offers": {SKU: {"product_id": f"P-{SKU}", "price": 99.5}}},
            )
            assert await d.info.daemon.reload() is True
            route = (await d.http.get("/v1/route", params={"sku": SKU})).json()
            assert [(c["supplier"], c["unit_price"]) for c in route["candidates"]] == [
                ("mid", MID),
                ("cheap", "99.50"),
            ]
            reply = await d.order(order("e2"))
            assert (reply["supplier"], reply["unit_price"]) == ("mid", MID)


async def test_changed_price_applies_with_a_catalog_plugin(tmp_path: Path) -> None:
    """The sim plugin has a catalog, which the docs say replaces the
    configured price; a reload that changes the price must still reach the
    next routing decision (issue 5), e.g. by reading the catalog again."""
    with trio.fail_after(30):
        path = write_config(tmp_path, two(), skus=SKUS)
        async with running(path, poll_s=None) as d:
            assert (await d.order(order("c1")))["supplier"] == "cheap"
            changed = supplier({SKU: "99.50"})
            write_supplier(tmp_path, "cheap", changed)
            assert await d.info.daemon.reload() is True
            reply = await d.order(order("c2"))
            assert (reply["supplier"], reply["unit_price"]) == ("mid", MID), reply


async def test_changed_endpoint_moves_the_balance_refresh_too(nursery: trio.Nursery, tmp_path: Path) -> None:
    """After a reload points a supplier at another endpoint, every request
    for it goes there, the background balance refresh included."""
    with trio.fail_after(30):
        urls = {}
        for name, balance in (("old", 100000), ("new", 777)):
            sim_path = write_config(
                tmp_path / f"sim-{name}",
                {"moving": supplier({SKU: CHEAP}, simulate={"balance": balance})},
                skus=SKUS,
            )
            urls[name] = await nursery.start(
                serve_simulated_supplier, load_plugins(None)["sim"], load_config(sim_path).suppliers["moving"]
            )
        root = tmp_path / "d"
        suppliers = {"moving": supplier({SKU: CHEAP}, endpoint=urls["old"]), "other": supplier({SKU: MID})}
        path = write_config(
            root, suppliers, skus=SKUS, routing={"refresh": {"balance_s": 1}, "exploration": {"share": 0}}
        )

        async def balance() -> str | None:
            rows = (await d.http.get("/v1/suppliers")).json()["suppliers"]
            return next(r["balance"] for r in rows if r["name"] == "moving")

        async with running(path, poll_s=None) as d:
            await until(lambda: balance(), 5, "the first balance read")
            assert await balance() == "100000.00"
            write_supplier(root, "moving", supplier({SKU: CHEAP}, endpoint=urls["new"]))
            assert await d.info.daemon.reload() is True
            reply = await d.order(order("m1", max_price=CHEAP))
            assert reply["supplier"] == "moving"
            assert len(await ledger(urls["new"])) == 1 and await ledger(urls["old"]) == []

            async def from_new() -> bool:
                # 777 less what m1 cost there; the old endpoint holds ~100000
                return Decimal(await balance() or "0") < 1000

            await until(from_new, 4, "the balance refresh to read the new endpoint")


async def test_a_change_during_a_reload_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supplier file written while a reload is reading the directory must
    be picked up by the next poll, not hidden by the reload's bookkeeping."""
    real = daemon_module.load_config
    written: list[Path] = []

    def load_then_operator_writes(path: Any, *a: Any, **kw: Any) -> Any:
        config = real(path, *a, **kw)
        if not written:
            written.append(write_supplier(tmp_path, "late", supplier({SKU: CHEAPER})))
        return config

    monkeypatch.setattr(daemon_module, "load_config", load_then_operator_writes)
    with trio.fail_after(30):
        path = write_config(tmp_path, two(), skus=SKUS)
        async with running(path, poll_s=0.2) as d:
            write_supplier(tmp_path, "cheaper", supplier({SKU: "95.00"}))
            await until(lambda: "cheaper" in d.info.daemon.config.suppliers, 5, "the first reload")
            assert written
            await until(lambda: "late" in d.info.daemon.config.suppliers, 3, "the file written mid-reload")


# ------------------------------------------------------------- subprocesses


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _MANAGER_VARS}
    env.update(extra)
    return env


class Proc:
    """A subprocess with its output in a file; ``stop()`` is idempotent."""

    def __init__(
        self, args: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            list(args), stdout=self._out, stderr=subprocess.STDOUT, env=dict(env or _env()), cwd=ROOT, **kw
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    async def wait(self, within: float) -> int:
        """The exit code, once the process exits (at most ``within`` s)."""
        for _ in range(int(within / 0.02) + 1):
            if (code := self.popen.poll()) is not None:
                return code
            await trio.sleep(0.02)
        raise AssertionError(f"pid {self.pid} still running after {within} s:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._out.close()


@contextlib.contextmanager
def processes() -> Any:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


async def start_sim(procs: list[Proc], tmp_path: Path, name: str, data: Mapping[str, Any]) -> str:
    """Run ``kamen_router sim`` for one supplier file; returns its URL."""
    folder = tmp_path / "sims"
    folder.mkdir(exist_ok=True)
    file = folder / f"{name}.yaml"
    file.write_text(yaml.safe_dump(_prices_as_numbers(data), sort_keys=False))
    proc = Proc(
        [sys.executable, "-m", "kamen_router", "sim", "-c", str(file), "--listen", "127.0.0.1:0"],
        tmp_path / f"sim-{name}.log",
    )
    procs.append(proc)
    found: list[str] = []

    def announced() -> bool:
        assert proc.popen.poll() is None, proc.output()
        found.extend(re.findall(r" on (http://127\.0\.0\.1:\d+)", proc.output()))
        return bool(found)

    await until(announced, 15, f"simulator {name} to listen")
    return found[0]


def run_daemon(procs: list[Proc], config: Path, log: Path, *, env: Mapping[str, str] | None = None) -> Proc:
    proc = Proc([sys.executable, "-m", "kamen_router", "run", "-c", str(config)], log, env=env)
    procs.append(proc)
    return proc


def uds_client(sock: Path, timeout: float = 10) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(sock)),
        base_url="http://kr",
        timeout=timeout,
        trust_env=False,
    )


async def wait_healthy(proc: Proc, sock: Path, within: float = 15) -> None:
    async with uds_client(sock, 2) as http:

        async def healthy() -> bool:
            assert proc.popen.poll() is None, f"daemon exited:\n{proc.output()[-3000:]}"
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(healthy, within, "the daemon to answer /healthz")


# ------------------------------------------------ 2. graceful shutdown under load


@pytest.mark.slow
# The storefront side of this test is an httpx client. When the stopping
# daemon closes a connection while a POST's body is still being sent, httpx
# drops the body's iterator half-way and trio reports it when it is
# collected: a fact about the client, not about the daemon under test.
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected:ResourceWarning"
)
async def test_sigterm_under_load_loses_no_acknowledged_order(tmp_path: Path) -> None:
    grace = 3.0
    sim = {"latency_ms": [50, 200], "pending_rate": 0.3, "pending_s": 1}
    with processes() as procs, trio.fail_after(50):
        urls = {}
        async with trio.open_nursery() as n:

            async def sim_for(name: str, seed: int) -> None:
                urls[name] = await start_sim(
                    procs, tmp_path, name, supplier({SKU: CHEAP}, simulate={**sim, "seed": seed})
                )

            n.start_soon(sim_for, "north", 1)
            n.start_soon(sim_for, "south", 2)
        root = tmp_path / "d"
        path = write_config(
            root,
            {
                "north": supplier({SKU: CHEAP}, endpoint=urls["north"]),
                "south": supplier({SKU: MID}, endpoint=urls["south"]),
            },
            skus=SKUS,
            orders={"shutdown_grace_s": grace},
        )
        sock = root / "run/orders.sock"
        first = run_daemon(procs, path, tmp_path / "first.log")
        await wait_healthy(first, sock)

        acked: dict[str, dict[str, Any]] = {}
        refused: dict[str, str] = {}
        unexpected: list[str] = []
        count = 100
        async with uds_client(sock) as http:

            async def fire(i: int) -> None:
                await trio.sleep(i * 0.01)
                oid = f"L{i:03d}"
                try:
                    reply = await http.post("/v1/orders", json=order(oid))
                except httpx.TransportError as exc:
                    refused[oid] = f"connection: {exc.__class__.__name__}"
                    return
                if reply.status_code in (200, 202):
                    acked[oid] = reply.json()
                elif reply.status_code == 503 and reply.json()["error"]["code"] in ("starting", "stopping"):
                    refused[oid] = f"503 {reply.json()['error']['code']}"
                else:
                    unexpected.append(f"{oid}: {reply.status_code} {reply.text}")

            async with trio.open_nursery() as n:
                for i in range(count):
                    n.start_soon(fire, i)
                await trio.sleep(0.5)
                sigterm_at = time.monotonic()
                first.signal(signal.SIGTERM)
        code = await first.wait(grace + 5)
        stopped_in = time.monotonic() - sigterm_at
        log = first.output()
        assert code == 0, log[-3000:]
        assert not unexpected, unexpected
        assert len(acked) + len(refused) == count
        assert acked and refused, (len(acked), refused)
        assert "Traceback" not in log, log[-3000:]
        print(
            f"acknowledged {len(acked)}, refused {len(refused)}"
            f" ({sum(v.startswith('503') for v in refused.values())} with 503 starting/stopping);"
            f" stopped {stopped_in:.2f} s after SIGTERM"
        )

        second = run_daemon(procs, path, tmp_path / "second.log")
        await wait_healthy(second, sock)
        finals: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        async with uds_client(sock, 30) as http:

            async def settle(oid: str) -> None:
                reply = await http.get(f"/v1/orders/{oid}", params={"wait_s": "25"})
                if reply.status_code == 404:
                    missing.append(oid)
                elif reply.status_code in (200, 202):
                    finals[oid] = reply.json()
                else:
                    unexpected.append(f"GET {oid}: {reply.status_code} {reply.text}")

            async with trio.open_nursery() as n:
                for i in range(count):
                    n.start_soon(settle, f"L{i:03d}")
        assert not unexpected, unexpected
        lost = sorted(set(acked) - set(finals))
        assert not lost, f"acknowledged but gone: {lost}"
        stuck = {oid: o["state"] for oid, o in finals.items() if o["state"] not in FINAL}
        assert not stuck, f"not final after the restart: {stuck}\n{second.output()[-3000:]}"
        assert set(missing) <= set(refused)
        # no order was delivered twice, here or at the suppliers
        keys = {a["attempt_key"]: oid for oid, o in finals.items() for a in o["attempts"]}
        delivered_at: dict[str, int] = {}
        for url in urls.values():
            for entry in await ledger(url):
                oid = keys.get(entry["merchant_order_no"])
                assert oid is not None, entry
                if entry["status"] == "success":
                    delivered_at[oid] = delivered_at.get(oid, 0) + 1
        assert all(n == 1 for n in delivered_at.values()), delivered_at
        for oid, o in finals.items():
            assert (o["state"] == "delivered") == (delivered_at.get(oid) == 1), o
        second.signal(signal.SIGTERM)
        assert await second.wait(grace + 5) == 0, second.output()[-3000:]


# --------------------------------------------------------------- 3. sd_notify


async def test_sd_notify_ready_watchdog_reload_stopping(tmp_path: Path) -> None:
    path = write_config(tmp_path, two(), skus=SKUS)
    sock = tmp_path / "run/orders.sock"
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    notify = trio.socket.from_stdlib_socket(listener)
    messages: list[tuple[float, str]] = []
    with notify, processes() as procs, trio.fail_after(30):
        env = _env(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
        proc = run_daemon(procs, path, tmp_path / "daemon.log", env=env)

        async def next_message(within: float = 10) -> str:
            with trio.fail_after(within):
                data = await notify.recv(4096)
            text = data.decode()
            messages.append((time.monotonic(), text))
            return text

        async def until_message(wanted: str, within: float = 10) -> str:
            deadline = trio.current_time() + within
            while True:
                text = await next_message(max(0.01, deadline - trio.current_time()))
                if wanted in text.split("\n"):
                    return text

        ready = await until_message("READY=1")
        # READY only once the order socket answers
        async with uds_client(sock, 2) as http:
            health = await http.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert any(line.startswith("STATUS=") for line in ready.split("\n")), ready

        # the watchdog is pinged at half its 0.4 s interval, well within it
        pings = []
        for _ in range(4):
            await until_message("WATCHDOG=1", 1)
            pings.append(messages[-1][0])
        gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
        assert max(gaps) < 0.4, gaps

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.signal(signal.SIGHUP)
        reloading = await until_message("RELOADING=1")
        fields = dict(line.split("=", 1) for line in reloading.split("\n"))
        usec = int(fields["MONOTONIC_USEC"])
        assert before <= usec <= before + 5_000_000, (before, usec)
        await until_message("READY=1")

        proc.signal(signal.SIGTERM)
        await until_message("STOPPING=1")
        assert await proc.wait(10) == 0, proc.output()[-3000:]
        kinds = [
            line
            for _, text in messages
            for line in text.split("\n")
            if not line.startswith(("STATUS=", "MONOTONIC_USEC="))
        ]
        meaningful = [k for k in kinds if k != "WATCHDOG=1"]
        assert meaningful == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], meaningful
        assert not sock.exists()


# ------------------------------------------------------- 4. socket activation


async def test_socket_activation_serves_on_the_inherited_socket(tmp_path: Path) -> None:
    path = write_config(tmp_path, two(), skus=SKUS, api={"socket": "run/unused.sock"})
    sock_path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(16)
    fd = listener.fileno()
    wrapper = (
        "import os, sys\n"
        f"fd = {fd}\n"
        "if fd != 3:\n"
        "    os.dup2(fd, 3)\n"
        "    os.close(fd)\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.environ['LISTEN_FDNAMES'] = 'orders'\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        f"os.execv(sys.executable, [sys.executable, '-m', 'kamen_router', 'run', '-c', {str(path)!r}])\n"
    )
    with listener, processes() as procs, trio.fail_after(30):
        proc = Proc([sys.executable, "-c", wrapper], tmp_path / "daemon.log", pass_fds=[fd])
        procs.append(proc)
        await wait_healthy(proc, sock_path)
        async with uds_client(sock_path, 20) as http:
            reply = await http.post("/v1/orders", json={**order("s1"), "wait_s": 10})
        assert reply.status_code == 200, reply.text
        assert (reply.json()["state"], reply.json()["supplier"]) == ("delivered", "cheap")
        assert not (tmp_path / "run/unused.sock").exists(), "bound its own socket despite the inherited one"
        proc.signal(signal.SIGTERM)
        assert await proc.wait(10) == 0, proc.output()[-3000:]
        # the socket belongs to the service manager: the daemon leaves it
        assert sock_path.exists()


# ------------------------------------------------------------------ 6. systemd


UNIT = ROOT / "systemd" / "kamen-router.service"


@pytest.mark.skipif(not UNIT.exists(), reason="systemd/kamen-router.service does not exist")
def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian: apt-get install systemd)")
    # ExecStart names the installed path; point it at this checkout's entry
    # point so that verify checks the units, not this machine's /opt
    text = UNIT.read_text()
    installed = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert installed, "no ExecStart"
    assert re.search(r"^Type=notify", text, re.M), "the daemon speaks sd_notify: Type=notify"
    local = Path(sys.executable).with_name("kamen-router")
    units = []
    for source in sorted(UNIT.parent.glob("kamen-router.*")):
        unit = tmp_path / source.name
        unit.write_text(source.read_text().replace(installed.group(1), str(local)))
        units.append(str(unit))
    result = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).strip()
    names = ", ".join(Path(u).name for u in units)
    print(f"systemd-analyze verify {names} (exit {result.returncode}):\n{output or '(no findings)'}")
    assert result.returncode == 0 and "kamen-router." not in output, output
