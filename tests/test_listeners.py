"""The hostile edge of every listener (order socket, callbacks, metrics):
header and body limits, read timeouts, the connection cap and the
keep-alive request cap, each answered with a clear JSON error while another
client's orders keep being delivered; the order socket's permissions and
its stale/live/foreign file handling; and the journal's key and file mode.

Most tests run a real daemon in-process with its shipped limits. Where a
shipped limit would make a test slow (a 10 s read timeout, 512 connections,
1000 requests), a second ``HttpServer`` with small ``HttpLimits`` serves the
same daemon's order API on a socket of its own.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import re
import resource
import socket as stdsocket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from conftest import RunningDaemon, start_daemon, supplier, write_config

from kamen_router.api import OrderApi
from kamen_router.config import load_config
from kamen_router.crypto import key_id, read_key, write_new_key
from kamen_router.daemon import Daemon
from kamen_router.errors import ListenerError
from kamen_router.http import HttpLimits, HttpServer, open_unix_listener
from kamen_router.plugin import load_plugins

ACCOUNT = "13800138000"
DEFAULTS = HttpLimits()
TEN_MB = 10_000_000

Address = str | tuple[str, int]


def _suppliers() -> dict[str, dict[str, Any]]:
    return {
        "cheap": supplier({"mobile-cmcc-100": "98.20", "steam-50": 47.9}),
        "dear": supplier({"mobile-cmcc-100": "99.60"}),
    }


_STARTED: list[RunningDaemon] = []


async def _daemon(nursery: trio.Nursery, root: Path, **router: Any) -> RunningDaemon:
    """A daemon on a config under ``root``; its client is closed after the
    test (by ``clients``, which every async test here uses)."""
    router.setdefault("callbacks", {"listen": "127.0.0.1:0"})
    daemon = await start_daemon(nursery, write_config(root, _suppliers(), **router))
    _STARTED.append(daemon)
    return daemon


@pytest.fixture
async def nursery(nursery: trio.Nursery) -> AsyncIterator[trio.Nursery]:
    """pytest-trio's nursery; the daemons' HTTP clients are closed after."""
    yield nursery
    while _STARTED:
        await _STARTED.pop().http.aclose()


def _tcp(url: str | None) -> tuple[str, int]:
    assert url is not None
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def listeners(daemon: RunningDaemon) -> dict[str, Address]:
    return {
        "orders": str(daemon.info.socket),
        "callbacks": _tcp(daemon.info.callbacks_url),
        "metrics": _tcp(daemon.info.metrics_url),
    }


# ------------------------------------------------------------- raw wire


async def connect(address: Address) -> trio.SocketStream:
    if isinstance(address, str):
        return await trio.open_unix_socket(address)
    return await trio.open_tcp_stream(*address)


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    out = bytearray()
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some(65536):
            out += chunk
    return bytes(out)


def parse(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every complete response in ``raw``; fails on anything malformed."""
    out = []
    rest = raw
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"a truncated response: {head[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", lines[0])
        assert m, lines[0]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        body, rest = rest[:length], rest[length:]
        out.append((int(m.group(1)), headers, body))
    return out


def json_error(response: tuple[int, dict[str, str], bytes], status: int, code: str) -> str:
    """Check a response is the JSON error ``status``/``code``; return its message."""
    got, headers, body = response
    assert got == status, (got, body[:300])
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


async def exchange(address: Address, data: bytes, *, limit_s: float = 10) -> bytes:
    """Send ``data`` while reading; return all the server sent before closing."""
    with trio.fail_after(limit_s):
        stream = await connect(address)
        async with stream:
            got = b""

            async def reader() -> None:
                nonlocal got
                got = await read_until_closed(stream)
                tasks.cancel_scope.cancel()

            async with trio.open_nursery() as tasks:
                tasks.start_soon(reader)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(data)
                await trio.sleep_forever()
            return got


async def send_big(address: Address, head: bytes, body_size: int, *, limit_s: float = 20) -> bytes:
    """Send ``head`` then ``body_size`` bytes of body in chunks, reading all
    the while, as curl does; returns what the server sent before closing."""
    chunk = b"a" * 65536
    with trio.fail_after(limit_s):
        stream = await connect(address)
        async with stream:
            got = b""

            async def reader() -> None:
                nonlocal got
                got = await read_until_closed(stream)
                tasks.cancel_scope.cancel()

            async with trio.open_nursery() as tasks:
                tasks.start_soon(reader)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(head)
                    sent = 0
                    while sent < body_size:
                        piece = chunk[: body_size - sent]
                        await stream.send_all(piece)
                        sent += len(piece)
                await trio.sleep_forever()
            return got


async def drip(address: Address, data: bytes, every_s: float, *, limit_s: float) -> tuple[bytes, float]:
    """Write ``data`` one byte every ``every_s``; return what the server
    sent and how long until it closed the connection."""
    start = trio.current_time()
    with trio.fail_after(limit_s):
        stream = await connect(address)
        async with stream:
            got = b""

            async def reader() -> None:
                nonlocal got
                got = await read_until_closed(stream)
                tasks.cancel_scope.cancel()

            async with trio.open_nursery() as tasks:
                tasks.start_soon(reader)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    for i in range(len(data)):
                        await stream.send_all(data[i : i + 1])
                        await trio.sleep(every_s)
                await trio.sleep_forever()
    return got, trio.current_time() - start


class HttpConn:
    """One keep-alive client connection, one request at a time (h11)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, address: Address) -> HttpConn:
        return cls(await connect(address))

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        headers = [("host", "t"), ("content-length", str(len(body)))]
        data = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        data += self.h11.send(h11.Data(data=body)) if body else b""
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status, out_headers, out = 0, {}, bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                out_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise EOFError(f"the server closed the connection ({event!r})")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return status, out_headers, bytes(out)

    async def closed_by_server(self) -> bool:
        with trio.move_on_after(5):
            return await self.stream.receive_some(1) == b""
        return False

    async def aclose(self) -> None:
        await self.stream.aclose()


# ------------------------------------------------ another client's orders


class OrderFlow:
    """A storefront that keeps submitting orders (over its own keep-alive
    connection) and checks every one is delivered."""

    def __init__(self, daemon: RunningDaemon, prefix: str) -> None:
        self.daemon = daemon
        self.prefix = prefix
        self.delivered = 0
        self.failures: list[str] = []
        self._stop = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._one()  # the connection is open before the test starts abusing the listener
        task_status.started()
        while not self._stop.is_set():
            await self._one()
            with trio.move_on_after(0.05):
                await self._stop.wait()

    async def _one(self) -> None:
        order_id = f"{self.prefix}-{self.delivered + len(self.failures)}"
        try:
            reply = await self.daemon.order(
                {"order_id": order_id, "sku": "mobile-cmcc-100", "account": ACCOUNT}
            )
        except AssertionError as exc:
            self.failures.append(f"{order_id}: {exc}")
            return
        if reply["state"] == "delivered":
            self.delivered += 1
        else:
            self.failures.append(f"{order_id}: {reply['state']}")

    async def progress(self, more: int = 3, limit_s: float = 10) -> None:
        """Wait until ``more`` further orders were delivered."""
        target = self.delivered + more
        with trio.fail_after(limit_s):
            while self.delivered < target:
                assert not self.failures, self.failures
                await trio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        assert not self.failures, self.failures
        assert self.delivered > 0


@contextlib.asynccontextmanager
async def order_flow(daemon: RunningDaemon, prefix: str = "flow") -> AsyncIterator[OrderFlow]:
    flow = OrderFlow(daemon, prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(flow.run)
        yield flow
        await flow.progress()
        flow.stop()


# ------------------------------------------- the shipped limits, end to end


#: the start of a request to each listener; "connection: close" so that a
#: request the server wrongly accepts ends with its reply, not a hang
HEADS = {
    "orders": b"POST /v1/orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\n",
    "callbacks": b"POST /callbacks/cheap HTTP/1.1\r\nhost: t\r\nconnection: close\r\n",
    "metrics": b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n",
}


async def test_oversized_headers_get_431_on_every_listener(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        async with order_flow(daemon) as flow:
            for name, address in listeners(daemon).items():
                for big in (
                    b"x-big: " + b"v" * (DEFAULTS.max_header_bytes + 1) + b"\r\n",
                    b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 100) for i in range(200)),
                ):
                    raw = await exchange(address, HEADS[name] + big + b"\r\n")
                    [reply] = parse(raw)
                    json_error(reply, 431, "headers_too_large")
                    assert reply[1].get("connection") == "close"
                await flow.progress(1)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_10_mb_body_gets_413_on_every_listener(
    nursery: trio.Nursery, tmp_path: Path, framing: str
) -> None:
    with trio.fail_after(90):
        daemon = await _daemon(nursery, tmp_path)
        async with order_flow(daemon) as flow:
            for name, address in listeners(daemon).items():
                if framing == "content-length":
                    head = HEADS[name] + f"content-length: {TEN_MB}\r\n\r\n".encode()
                    raw = await send_big(address, head, TEN_MB)
                else:
                    # no length up front: the server must count as it reads
                    head = HEADS[name] + b"transfer-encoding: chunked\r\n\r\n"
                    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
                    raw = await exchange(address, head + chunk * (TEN_MB // 0x10000), limit_s=30)
                [reply] = parse(raw)
                message = json_error(reply, 413, "body_too_large")
                assert str(DEFAULTS.max_body_bytes) in message
                await flow.progress(1)
        # nothing got into the journal but the flow's own orders
        for state in ("received", "routing", "submitted", "pending", "unknown", "attention", "failed"):
            listed = await daemon.http.get("/v1/orders", params={"state": state})
            assert listed.json()["orders"] == [], state


@pytest.mark.slow
async def test_a_slow_drip_of_headers_gets_408_after_the_read_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The shipped 10 s read timeout, on all three listeners at once, a
    header byte every half second, while orders keep being delivered."""
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        results: dict[str, tuple[bytes, float]] = {}
        async with order_flow(daemon) as flow:

            async def one(name: str, address: Address) -> None:
                data = HEADS[name] + b"x-drip: " + b"d" * 100 + b"\r\n\r\n"
                results[name] = await drip(address, data, 0.5, limit_s=30)

            async with trio.open_nursery() as drips:
                for name, address in listeners(daemon).items():
                    drips.start_soon(one, name, address)
                await flow.progress(5)
        for name, (raw, elapsed) in results.items():
            [reply] = parse(raw)
            json_error(reply, 408, "request_timeout")
            assert DEFAULTS.read_timeout_s - 0.5 <= elapsed <= DEFAULTS.read_timeout_s + 3, (name, elapsed)


async def test_the_connection_cap_answers_503_while_open_connections_keep_working(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The shipped cap of 512 on the order socket: the next connection gets
    a 503 at once, the storefront's open keep-alive connection keeps
    delivering orders, and new connections work again once the hogs leave."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * DEFAULTS.max_connections:
        pytest.skip(f"needs {3 * DEFAULTS.max_connections} file descriptors, the limit is {soft}")
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        socket_path = str(daemon.info.socket)
        hogs: list[trio.SocketStream] = []
        try:
            async with order_flow(daemon) as flow:
                for _ in range(DEFAULTS.max_connections):
                    stream = await connect(socket_path)
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\n")  # and never finish
                    hogs.append(stream)
                await trio.sleep(0.2)
                started = trio.current_time()
                raw = await exchange(socket_path, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
                assert trio.current_time() - started < 5, "the refusal was not immediate"
                [reply] = parse(raw)
                json_error(reply, 503, "overloaded")
                await flow.progress(3)  # the established connection is still served
            for stream in hogs:
                await stream.aclose()
            hogs.clear()
            with trio.fail_after(10):
                while True:  # the slots come back
                    conn = await HttpConn.open(socket_path)
                    try:
                        status, _h, _b = await conn.request("GET", "/healthz")
                    except (EOFError, trio.BrokenResourceError):
                        status = 0
                    await conn.aclose()
                    if status == 200:
                        break
                    await trio.sleep(0.05)
        finally:
            for stream in hogs:
                await stream.aclose()


async def test_the_keep_alive_request_cap_closes_the_connection(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The shipped cap of 1000 requests per connection: the 1000th reply says
    ``connection: close`` and the server closes; orders keep flowing."""
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        async with order_flow(daemon) as flow:
            for name in ("orders", "metrics"):
                address = listeners(daemon)[name]
                conn = await HttpConn.open(address)
                path = "/healthz" if name == "orders" else "/metrics"
                for i in range(1, DEFAULTS.max_requests_per_connection + 1):
                    status, headers, _body = await conn.request("GET", path)
                    assert status == 200
                    last = i == DEFAULTS.max_requests_per_connection
                    assert (headers.get("connection") == "close") is last, (name, i)
                assert await conn.closed_by_server()
                await conn.aclose()
            await flow.progress(2)


# ---------------------------------------- small limits on the same daemon


LIMITS = HttpLimits(
    max_header_bytes=2048,
    max_body_bytes=4096,
    read_timeout_s=0.5,
    max_connections=4,
    max_requests_per_connection=3,
)


@contextlib.asynccontextmanager
async def limited_api(daemon: RunningDaemon, path: Path) -> AsyncIterator[str]:
    """The daemon's order API on another socket, within ``LIMITS``."""
    listener = await open_unix_listener(path)
    server = HttpServer(OrderApi(daemon.info.dispatcher), LIMITS, name="limited")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        yield str(path)
        nursery.cancel_scope.cancel()
    await trio.Path(path).unlink(missing_ok=True)


async def _post_order(address: str, order_id: str) -> dict[str, Any]:
    body = json.dumps({"order_id": order_id, "sku": "mobile-cmcc-100", "account": ACCOUNT, "wait_s": 10})
    conn = await HttpConn.open(address)
    try:
        status, _h, reply = await conn.request("POST", "/v1/orders", body.encode())
    finally:
        await conn.aclose()
    assert status == 200, reply
    data: dict[str, Any] = json.loads(reply)
    return data


async def test_slow_clients_get_408_and_idle_keep_alive_closes_quietly(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        async with order_flow(daemon) as flow, limited_api(daemon, tmp_path / "l.sock") as address:
            # headers dripping
            raw, elapsed = await drip(
                address, b"GET /healthz HTTP/1.1\r\nx-drip: " + b"d" * 50, 0.1, limit_s=10
            )
            [reply] = parse(raw)
            json_error(reply, 408, "request_timeout")
            assert LIMITS.read_timeout_s - 0.1 <= elapsed < LIMITS.read_timeout_s + 3, elapsed
            # a complete head, then the body dripping
            head = b"POST /v1/orders HTTP/1.1\r\nhost: t\r\ncontent-length: 200\r\n\r\n"
            raw, elapsed = await drip(address, head + b'{"order_id": "drip-1"' + b" " * 200, 0.05, limit_s=10)
            [reply] = parse(raw)
            json_error(reply, 408, "request_timeout")
            assert elapsed < LIMITS.read_timeout_s + 3, elapsed
            assert (await daemon.get("drip-1")).status_code == 404
            # an idle keep-alive connection after a reply is closed without a word
            conn = await HttpConn.open(address)
            status, _h, _b = await conn.request("GET", "/healthz")
            assert status == 200
            start = trio.current_time()
            assert await conn.closed_by_server()
            assert trio.current_time() - start < LIMITS.read_timeout_s + 1
            await conn.aclose()
            assert (await _post_order(address, "lim-1"))["state"] == "delivered"
            await flow.progress(2)


async def test_small_limits_431_413_and_the_keep_alive_cap(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        async with order_flow(daemon) as flow, limited_api(daemon, tmp_path / "l.sock") as address:
            raw = await exchange(
                address,
                b"GET /healthz HTTP/1.1\r\nhost: t\r\nx: " + b"v" * LIMITS.max_header_bytes + b"\r\n\r\n",
            )
            json_error(parse(raw)[0], 431, "headers_too_large")
            body = b'{"order_id":"big","sku":"steam-50","account":"' + b"1" * LIMITS.max_body_bytes + b'"}'
            raw = await exchange(
                address,
                b"POST /v1/orders HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(body) + body,
            )
            json_error(parse(raw)[0], 413, "body_too_large")
            # the keep-alive cap: the third reply closes
            conn = await HttpConn.open(address)
            for i in range(1, LIMITS.max_requests_per_connection + 1):
                status, headers, _b = await conn.request("GET", "/healthz")
                assert status == 200
                assert (headers.get("connection") == "close") is (i == LIMITS.max_requests_per_connection)
            assert await conn.closed_by_server()
            await conn.aclose()
            assert (await daemon.get("big")).status_code == 404
            await flow.progress(2)


async def test_small_connection_cap_refuses_then_recovers(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(60):
        daemon = await _daemon(nursery, tmp_path)
        async with order_flow(daemon) as flow, limited_api(daemon, tmp_path / "l.sock") as address:
            hogs = []
            for _ in range(LIMITS.max_connections):
                stream = await connect(address)
                await stream.send_all(b"GET /heal")
                hogs.append(stream)
            await trio.sleep(0.1)
            raw = await exchange(address, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            json_error(parse(raw)[0], 503, "overloaded")
            await flow.progress(2)
            # the hogs are timed out (408) and their slots come back
            for stream in hogs:
                async with stream:
                    json_error(parse(await read_until_closed(stream))[0], 408, "request_timeout")
            assert (await _post_order(address, "lim-2"))["state"] == "delivered"


# ------------------------------------------------------ socket permissions


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_socket_mode_default_and_configured(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(30):
        a = await _daemon(nursery, tmp_path / "a")
        assert stat.S_ISSOCK(a.info.socket.lstat().st_mode)
        assert _mode(a.info.socket) == 0o660
        b = await _daemon(nursery, tmp_path / "b", api={"socket": "run/orders.sock", "socket_mode": "0600"})
        assert _mode(b.info.socket) == 0o600
        c = await _daemon(nursery, tmp_path / "c", api={"socket": "run/orders.sock", "socket_mode": "0640"})
        assert _mode(c.info.socket) == 0o640
        assert (await c.order({"order_id": "m1", "sku": "steam-50"}))["state"] == "delivered"


def _a_group() -> grp.struct_group:
    """A group to give the socket to: another one than ours when we may
    (root), else our primary group."""
    primary = grp.getgrgid(os.getgid())
    if os.geteuid() == 0:
        for group in grp.getgrall():
            if group.gr_gid != primary.gr_gid:
                return group
    return primary


async def test_socket_group(nursery: trio.Nursery, tmp_path: Path) -> None:
    group = _a_group()
    with trio.fail_after(30):
        daemon = await _daemon(
            nursery,
            tmp_path,
            api={"socket": "run/orders.sock", "socket_mode": "0660", "socket_group": group.gr_name},
        )
        st = daemon.info.socket.lstat()
        assert st.st_gid == group.gr_gid
        assert stat.S_IMODE(st.st_mode) == 0o660


async def test_a_stale_socket_is_replaced(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "run/orders.sock"
    path.parent.mkdir(parents=True)
    with stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM) as s:
        s.bind(str(path))  # bound, never listening: what a killed daemon leaves
    with trio.fail_after(30):
        daemon = await _daemon(nursery, tmp_path)
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert (await daemon.order({"order_id": "s1", "sku": "steam-50"}))["state"] == "delivered"


async def test_a_live_daemon_on_the_same_path_is_refused_and_keeps_serving(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        first = await _daemon(nursery, tmp_path / "first")
        inode = first.info.socket.lstat().st_ino
        second = write_config(
            tmp_path / "second",
            _suppliers(),
            api={"socket": str(first.info.socket)},
            metrics={"listen": "127.0.0.1:0"},
        )
        config = load_config(second)
        with pytest.raises(ListenerError, match="another process already answers"):
            await Daemon(config, load_plugins(config.plugins_dir), poll_s=None).run()
        # and through the command, as an operator would start it
        result = await trio.run_process(
            [sys.executable, "-m", "kamen_router", "run", "-c", str(second)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_env(),
        )
        stderr = result.stderr.decode()
        assert result.returncode == 1, stderr
        assert "Traceback" not in stderr
        [line] = stderr.strip().splitlines()
        assert line.startswith("error: another process already answers on") and "daemon running" in line
        assert first.info.socket.lstat().st_ino == inode, "the live socket was replaced"
        assert (await first.order({"order_id": "l1", "sku": "steam-50"}))["state"] == "delivered"
        assert not (tmp_path / "second/var/journal.sqlite3").exists(), (
            "the refused daemon touched its journal"
        )


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
async def test_a_path_that_is_not_a_socket_is_never_replaced(tmp_path: Path, kind: str) -> None:
    config_path = write_config(tmp_path, _suppliers())
    path = tmp_path / "run/orders.sock"
    path.parent.mkdir(parents=True)
    if kind == "file":
        path.write_text("precious\n")
    elif kind == "directory":
        path.mkdir()
    else:
        (tmp_path / "target").write_text("precious\n")
        path.symlink_to(tmp_path / "target")
    config = load_config(config_path)
    with trio.fail_after(30), pytest.raises(ListenerError, match="not a socket"):
        await Daemon(config, load_plugins(config.plugins_dir), poll_s=None).run()
    if kind == "file":
        assert path.read_text() == "precious\n"
    elif kind == "directory":
        assert path.is_dir()
    else:
        assert path.is_symlink() and (tmp_path / "target").read_text() == "precious\n"


# ---------------------------------------------------- the journal at rest


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KAMEN_ROUTER")}


def _run(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kamen_router", *args, "-c", str(config)],
        cwd=config.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_the_daemon_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, _suppliers(), journal={"path": "var/journal.sqlite3"})
    result = _run(config, "run")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    problems = [line.strip() for line in result.stderr.strip().splitlines()[1:]]
    assert len(problems) == 1, result.stderr
    assert "journal: key_file" in problems[0] or "journal.key_file" in problems[0], problems
    assert "kamen-router keygen" in problems[0] and "plaintext: true" in problems[0]
    assert not (tmp_path / "var/journal.sqlite3").exists()
    assert not (tmp_path / "run/orders.sock").exists()


def test_a_missing_key_file_is_one_clear_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, _suppliers(), journal={"path": "var/journal.sqlite3", "key_file": "var/missing.key"}
    )
    result = _run(config, "run")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # the daemon's own log lines aside (it logs "stopped"), one line says why
    [line] = [x for x in result.stderr.strip().splitlines() if not x.startswith("ts=")]
    assert line.startswith("error: key file") and "kamen-router keygen -o" in line, line
    assert not (tmp_path / "var/journal.sqlite3").exists()
    assert not (tmp_path / "run/orders.sock").exists(), "the refused daemon left its socket behind"


def test_keygen_writes_an_owner_only_key_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "keys/journal.key"
    cmd = [sys.executable, "-m", "kamen_router", "keygen", "-o", str(key)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=_env())
    assert first.returncode == 0, first.stderr
    assert "back it up" in first.stdout
    assert _mode(key) == 0o600
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=\n", key.read_text())
    before = key.read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=_env())
    assert again.returncode == 1 and "not overwriting" in again.stderr
    assert key.read_bytes() == before


async def test_plaintext_on_purpose_starts_and_check_warns(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = write_config(tmp_path, _suppliers(), journal={"path": "var/journal.sqlite3", "plaintext": True})
    check = _run(config, "check")
    assert check.returncode == 0, check.stderr
    assert "WARNING: journal.plaintext is true" in check.stdout
    with trio.fail_after(30):
        daemon = await start_daemon(nursery, config)
        assert (await daemon.order({"order_id": "p1", "sku": "mobile-cmcc-100", "account": ACCOUNT}))[
            "state"
        ] == "delivered"
        await daemon.stop()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("journal.sqlite3*"))
    assert ACCOUNT.encode() in raw  # in clear, as configured


async def test_the_journal_is_owner_only_and_sealed(nursery: trio.Nursery, tmp_path: Path) -> None:
    old = os.umask(0o002)  # a permissive umask must not loosen it
    try:
        with trio.fail_after(30):
            daemon = await _daemon(nursery, tmp_path)
            reply = await daemon.order({"order_id": "j1", "sku": "steam-50", "quantity": 2})
            await daemon.order({"order_id": "j2", "sku": "mobile-cmcc-100", "account": ACCOUNT})
            files = sorted((tmp_path / "var").glob("journal.sqlite3*"))
            assert files[0].name == "journal.sqlite3"
            for f in files:
                assert _mode(f) == 0o600, (f.name, oct(_mode(f)))
            raw = b"".join(f.read_bytes() for f in files)
            assert ACCOUNT.encode() not in raw
            for card in reply["deliverables"]["cards"]:
                assert card["password"].encode() not in raw
                assert card["number"].encode() not in raw
    finally:
        os.umask(old)


def _sealed_kids(journal: Path, order_id: str) -> set[str]:
    """The ids of the keys that sealed an order's values, read raw."""
    with sqlite3.connect(journal) as db:
        row = db.execute(
            "SELECT request, deliverables FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
    assert row is not None, order_id
    return {value.split(":")[1] for value in row if value is not None}


async def test_key_rotation_as_documented(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/security.md: a new key from keygen, the old one under
    old_key_files, a restart. Old rows stay readable, new ones are sealed
    with the new key; a reload does not switch keys, and says so."""
    caplog.set_level(logging.INFO)
    journal = tmp_path / "var/journal.sqlite3"
    with trio.fail_after(60):
        first = await _daemon(nursery, tmp_path)
        old_kid = key_id(read_key(tmp_path / "var/journal.key"))
        before = await first.order({"order_id": "r1", "sku": "steam-50", "quantity": 2, "account": ACCOUNT})
        assert _sealed_kids(journal, "r1") == {old_kid}
        new_kid = write_new_key(tmp_path / "var/journal-2.key")
        rotated = {
            "path": "var/journal.sqlite3",
            "key_file": "var/journal-2.key",
            "old_key_files": ["var/journal.key"],
        }
        write_config(tmp_path, _suppliers(), journal=rotated, callbacks={"listen": "127.0.0.1:0"})
        # a reload either applies the new key or says it waits for a restart
        assert await first.info.daemon.reload() is True
        await first.order({"order_id": "r2", "sku": "steam-50", "account": ACCOUNT})
        if _sealed_kids(journal, "r2") != {new_kid}:
            warned = {
                getattr(r, "kr_fields", {}).get("key")
                for r in caplog.records
                if r.levelno == logging.WARNING and "restart" in r.getMessage()
            }
            assert any(k and k.startswith("journal") for k in warned), (
                f"the reload kept sealing with the old key {old_kid} and did not say so (warned: {warned})"
            )
        await first.stop()
        second = await start_daemon(nursery, tmp_path / "router.yaml")
        _STARTED.append(second)
        again = (await second.get("r1")).json()
        assert again["deliverables"] == before["deliverables"]  # the old key still opens it
        await second.order({"order_id": "r3", "sku": "steam-50", "account": ACCOUNT})
        assert _sealed_kids(journal, "r3") == {new_kid}
        assert _sealed_kids(journal, "r1") == {old_kid}  # not resealed: settled rows are not written again
