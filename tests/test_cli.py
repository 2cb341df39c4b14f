"""The ``kamen-router`` command as a user runs it: real processes, a real
daemon on a real Unix socket, simulated suppliers over real HTTP.

Every wait is bounded: subprocess calls carry a timeout, the readiness poll
has a deadline, and a daemon left running by a failed test is stopped (and
killed if it will not stop) when the test ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import supplier, write_config

from kamen_router.cli import build_parser

#: how long one CLI call may take (an interpreter start plus one request)
CALL_TIMEOUT_S = 60
#: how long the daemon may take to answer GET /healthz with 200
READY_TIMEOUT_S = 30
#: how long the daemon may take to stop after SIGTERM
STOP_TIMEOUT_S = 10
#: the longest path a Unix socket can bind on Linux (sun_path less the NUL)
MAX_SOCKET_PATH = 107

ACCOUNT = "13800138000"


def _env() -> dict[str, str]:
    # the user's own KAMEN_ROUTER_CONFIG must not steer the command under test
    return {k: v for k, v in os.environ.items() if not k.startswith("KAMEN_ROUTER")}


def cli(command: str, *paths: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``kamen-router COMMAND PATHS...``: ``command`` is split as a shell
    would; ``paths`` are passed as they are (tmp_path may hold any character)."""
    return subprocess.run(
        [sys.executable, "-m", "kamen_router", *shlex.split(command), *map(str, paths)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_S,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and one line on stderr, no traceback,
    nothing on stdout; returns that line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ----------------------------------------------------------------- --help


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix}{name}")
                found += _commands(sub, f"{prefix}{name} ")
    return found


def verbs() -> list[str]:
    """Every verb the parser knows, nested ones (``attention list``)
    included, so a verb added later is covered too."""
    found = sorted(_commands(build_parser()))
    assert found, "the parser has no verbs"
    return found


def test_every_verb_of_the_design_exists() -> None:
    assert {"run", "check", "sim", "submit", "status", "explain", "suppliers"} <= set(verbs())


@pytest.mark.parametrize("verb", [None, *verbs()])
def test_help_exits_0(verb: str | None, tmp_path: Path) -> None:
    result = cli("--help" if verb is None else f"{verb} --help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kamen-router")
    if verb is not None:
        assert f"kamen-router {verb}" in result.stdout
    assert result.stderr == ""


# ----------------------------------------------------------------- daemon


def healthz(path: Path) -> int | None:
    """The status of GET /healthz on the socket at ``path``, or None when
    nothing answers yet. A raw socket, closed on every path: httpx's Unix
    transport leaves the socket of a failed connect to the garbage collector,
    which ``filterwarnings = error`` turns into a failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            reply = b""
            while b"\r\n" not in reply and (chunk := s.recv(4096)):
                reply += chunk
        except OSError:
            return None
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


class Daemon:
    """``kamen-router run`` as a subprocess, its output in files under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = write_config(
            root,
            {
                "cheap": supplier({"mobile-cmcc-100": "98.20", "steam-50": 47.9}),
                "dear": supplier({"mobile-cmcc-100": "99.60", "steam-50": 48.5}),
            },
            metrics={"listen": "127.0.0.1:0"},
        )
        self.socket = root / "run" / "orders.sock"
        assert len(str(self.socket)) <= MAX_SOCKET_PATH, "tmp_path is too deep for a Unix socket"
        self.stdout_path = root / "daemon.stdout"
        self.stderr_path = root / "daemon.stderr"
        self._out: IO[bytes] = self.stdout_path.open("wb")
        self._err: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kamen_router", "run", "-c", str(self.config)],
            cwd=root,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(f"the daemon exited with {code} before it was ready:\n{self.log()}")
            if healthz(self.socket) == 200:
                return
            time.sleep(0.05)
        pytest.fail(f"the daemon did not answer /healthz within {READY_TIMEOUT_S} s:\n{self.log()}")

    def terminate(self) -> int:
        """SIGTERM, and the exit code once it has stopped (bounded)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._out.close()
        self._err.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    try:
        d.wait_ready()
        yield d
    finally:
        d.close()


def order_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_submit_waits_for_delivery_and_status_shows_the_same_order(daemon: Daemon) -> None:
    submitted = order_json(
        cli(f"submit cli-1 mobile-cmcc-100 --account {ACCOUNT} --wait 10 -c", daemon.config, cwd=daemon.root)
    )
    assert submitted["order_id"] == "cli-1"
    assert submitted["sku"] == "mobile-cmcc-100"
    assert submitted["state"] == "delivered"
    assert submitted["supplier"] == "cheap"
    assert submitted["unit_price"] == "98.20"
    assert submitted["deliverables"]["receipt"]
    assert [a["supplier"] for a in submitted["attempts"]] == ["cheap"]
    assert submitted["error"] is None

    # by the config's api.socket, and by an explicit --socket: the same order
    by_config = order_json(cli("status cli-1 -c", daemon.config, cwd=daemon.root))
    by_socket = order_json(cli("status cli-1 --socket", daemon.socket, cwd=daemon.root))
    assert by_config == submitted
    assert by_socket == submitted


def test_submit_of_the_same_order_again_prints_the_same_order(daemon: Daemon) -> None:
    command = "submit cli-2 steam-50 --quantity 2 --wait 10 --socket"
    first = order_json(cli(command, daemon.socket, cwd=daemon.root))
    assert first["state"] == "delivered"
    assert len(first["deliverables"]["cards"]) == 2
    assert order_json(cli(command, daemon.socket, cwd=daemon.root)) == first


def test_submit_of_an_unknown_sku_is_a_one_line_error(daemon: Daemon) -> None:
    result = cli(f"submit cli-3 no-such-sku --account {ACCOUNT} --wait 10 -c", daemon.config, cwd=daemon.root)
    line = assert_clean_error(result, 1)
    assert line.startswith("error: ")
    assert "unknown_sku" in line and "no-such-sku" in line
    # nothing was recorded
    missing = cli("status cli-3 --socket", daemon.socket, cwd=daemon.root)
    assert "not_found" in assert_clean_error(missing, 1)


def test_explain_and_suppliers_show_the_daemon_s_view(daemon: Daemon) -> None:
    raw = cli("explain mobile-cmcc-100 --json --socket", daemon.socket, cwd=daemon.root)
    assert raw.returncode == 0, raw.stderr
    assert [c["supplier"] for c in json.loads(raw.stdout)["candidates"]] == ["cheap", "dear"]
    table = cli("explain mobile-cmcc-100 --socket", daemon.socket, cwd=daemon.root)
    assert table.returncode == 0, table.stderr
    assert table.stdout.index("cheap") < table.stdout.index("dear")
    suppliers = cli("suppliers --json --socket", daemon.socket, cwd=daemon.root)
    assert suppliers.returncode == 0, suppliers.stderr
    assert sorted(s["name"] for s in json.loads(suppliers.stdout)["suppliers"]) == ["cheap", "dear"]


def test_sigterm_stops_the_daemon_and_removes_its_socket(daemon: Daemon) -> None:
    delivered = order_json(
        cli(f"submit cli-4 mobile-cmcc-100 --account {ACCOUNT} --socket", daemon.socket, cwd=daemon.root)
    )
    assert delivered["state"] == "delivered"
    assert daemon.socket.exists()
    started = time.monotonic()
    assert daemon.terminate() == 0, daemon.log()
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert not daemon.socket.exists()
    log = daemon.log()
    assert "Traceback" not in log
    assert "SIGTERM: shutting down" in log


# ------------------------------------------------------------- no daemon


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed daemon leaves behind."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_status_without_a_daemon_exits_2(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "orders.sock"
    if kind == "stale":
        _stale_socket(path)
    result = cli("status nobody-1 --socket", path, cwd=tmp_path)
    line = assert_clean_error(result, 2)
    assert "no daemon answers on" in line and str(path) in line


def test_status_by_config_without_a_daemon_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"cheap": supplier({"mobile-cmcc-100": "98.20", "steam-50": 47.9})})
    result = cli("status nobody-2 -c", config, cwd=tmp_path)
    line = assert_clean_error(result, 2)
    assert str(tmp_path / "run" / "orders.sock") in line
