"""The secrets audit (design invariant 6).

``kamen-router run`` as a subprocess, logging at debug level (once in
logfmt, once in JSON), with suppliers whose credentials are distinctive
values passed both through ``${ENV}`` and through ``*_file`` keys. The test
walks every error path it can reach (bad bodies, unknown sku, invalid
account, rejected, failed, unreachable, auth failures, unknown outcomes,
attention and resolve, forged and replayed callbacks, reloads of broken
files, config errors printed by ``check``), then searches:

- the daemon's whole log, every API reply body, every CLI output, a
  metrics scrape and the journal files (.sqlite3, -wal, -shm), for every
  credential value;
- the same places for the plain accounts used (the log may show an account
  masked to its last four characters, so its head is searched too);
- the log, the metrics and the journal for the card numbers and passwords
  delivered. API replies carry cards to the storefront by design, so only
  their ``deliverables`` may hold them.

Nothing may be found. The result is printed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kamen_router.crypto import write_new_key
from kamen_router.sim.protocol import signed_headers

STOP_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMEN_ROUTER")}
    return {**env, **extra, "PYTHONUNBUFFERED": "1"}


def _secret(name: str) -> str:
    return f"AUDIT-SECRET-{secrets.token_hex(8)}-{name}"


class Audit:
    """What was seen (haystacks) and what must not be in it (needles)."""

    def __init__(self) -> None:
        self.credentials: dict[str, str] = {}
        self.accounts: list[str] = []
        self.cards: list[str] = []  # numbers and passwords
        self.replies: list[tuple[str, bytes]] = []  # (what, body)
        self.cli: list[tuple[str, str]] = []

    def account(self, value: str) -> str:
        self.accounts.append(value)
        return value

    def record(self, what: str, response: httpx.Response) -> httpx.Response:
        self.replies.append((what, response.content))
        try:
            data = response.json()
        except ValueError:
            return response
        for order in _orders_in(data):
            for card in (order.get("deliverables") or {}).get("cards") or []:
                self.cards += [card["number"], card["password"]]
        return response


def _orders_in(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict):
        if "deliverables" in data and "order_id" in data:
            yield data
        for value in data.values():
            yield from _orders_in(value)
    elif isinstance(data, list):
        for value in data:
            yield from _orders_in(value)


def _without_deliverables(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: (None if k == "deliverables" else _without_deliverables(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_without_deliverables(v) for v in data]
    return data


def _supplier(
    offers: dict[str, tuple[str, float]], credentials: dict[str, str], **extra: Any
) -> dict[str, Any]:
    return {
        "plugin": "sim",
        "credentials": credentials,
        "limits": {"rate_per_s": 1000, "max_in_flight": 100, "timeout_s": 1},
        "offers": {sku: {"product_id": pid, "price": price} for sku, (pid, price) in offers.items()},
        **extra,
    }


class Setup:
    def __init__(self, root: Path, log_format: str) -> None:
        self.root = root
        self.audit = Audit()
        a = self.audit
        names = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "dead", "walled"]
        a.credentials = {n: _secret(n) for n in names}
        a.credentials["zeta-upstream"] = _secret("zeta-upstream")
        self.env = {
            "KR_AUDIT_ALPHA": a.credentials["alpha"],
            "KR_AUDIT_GAMMA": a.credentials["gamma"],
            "KR_AUDIT_EPS": a.credentials["eps"],
            "KR_AUDIT_DEAD": a.credentials["dead"],
        }
        secrets_dir = root / "secrets"
        secrets_dir.mkdir()
        for name in ("beta", "delta", "zeta", "walled", "zeta-upstream"):
            (secrets_dir / f"{name}.key").write_text(a.credentials[name] + "\n")
        self.metrics_port, self.callbacks_port, self.zeta_port = _free_port(), _free_port(), _free_port()
        sdir = root / "suppliers.d"
        sdir.mkdir()
        sim = {"latency_ms": [1, 3], "seed": 7, "balance": 1000000}
        suppliers = {
            # delivers top-ups and cards
            "alpha": _supplier(
                {"cm-100": ("A100", 98.2), "steam-50": ("A50", 47.9)},
                {"api_key": "${KR_AUDIT_ALPHA}"},
                simulate=sim,
            ),
            # out of stock, fails everything, rejects the signature, unreachable
            "beta": _supplier(
                {"fail-10": ("B10", 9.0)},
                {"api_key_file": "../secrets/beta.key"},
                simulate={**sim, "stock": 0},
            ),
            "gamma": _supplier(
                {"fail-10": ("G10", 9.1)}, {"api_key": "${KR_AUDIT_GAMMA}"}, simulate={**sim, "fail_rate": 1}
            ),
            "zeta": _supplier(
                {"fail-10": ("Z10", 9.2)},
                {"api_key_file": "../secrets/zeta.key"},
                endpoint=f"http://127.0.0.1:{self.zeta_port}",
            ),
            "dead": _supplier(
                {"fail-10": ("D10", 9.3)},
                {"api_key": "${KR_AUDIT_DEAD}"},
                endpoint=f"http://127.0.0.1:{_free_port()}",
            ),
            # every reply spoiled after the order was taken: unknown outcomes, queried
            "delta": _supplier(
                {"unk-10": ("U10", 9.5)},
                {"api_key_file": "../secrets/delta.key"},
                simulate={
                    **sim,
                    "unknown_rate": 0.3,
                    "timeout_rate": 0.2,
                    "reset_rate": 0.2,
                    "error_after_accept_rate": 0.15,
                    "duplicate_reply_rate": 0.15,
                },
            ),
            # never settles: attention after the reconcile limit
            "eps": _supplier(
                {"slow-10": ("E10", 9.9)},
                {"api_key": "${KR_AUDIT_EPS}"},
                simulate={**sim, "pending_rate": 1, "pending_s": 3600},
            ),
            # callbacks only from a network the test is not in
            "walled": _supplier(
                {"steam-50": ("W50", 49.9)},
                {"api_key_file": "../secrets/walled.key"},
                simulate=sim,
                callback_allow_from=["203.0.113.0/24"],
            ),
        }
        for name, data in suppliers.items():
            (sdir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        write_new_key(root / "var/journal.key")
        self.config = root / "router.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "api": {"socket": "run/orders.sock"},
                    "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
                    "callbacks": {"listen": f"127.0.0.1:{self.callbacks_port}"},
                    "journal": {"path": "var/journal.sqlite3", "key_file": "var/journal.key"},
                    "logging": {"level": "debug", "format": log_format},
                    "suppliers_dir": "suppliers.d",
                    "routing": {"retry_backoff_s": 0.01, "exploration": {"share": 0}},
                    "orders": {"reconcile_limit_s": 3, "shutdown_grace_s": 2},
                    "skus": {s: {} for s in ("cm-100", "steam-50", "fail-10", "unk-10", "slow-10")},
                },
                sort_keys=False,
            )
        )
        self.socket = root / "run/orders.sock"
        # zeta's upstream: a standalone simulator that knows zeta by another key
        (root / "zeta-upstream.yaml").write_text(
            yaml.safe_dump(
                _supplier(
                    {"fail-10": ("Z10", 9.2)}, {"api_key_file": "secrets/zeta-upstream.key"}, simulate=sim
                )
            )
        )


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(path: Path) -> bool:
    # a raw socket, closed on every path (httpx leaves a failed connect's
    # socket to the garbage collector)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200 ")
        except OSError:
            return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "kamen_router", *args],
        cwd=setup.root,
        env=_env(setup.env),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    setup.audit.cli.append((" ".join(args), result.stdout + result.stderr))
    return result


def _exercise(setup: Setup, daemon: subprocess.Popen[bytes], log_path: Path) -> dict[str, int]:
    """Walk the error paths; returns counts for the report."""
    a = setup.audit
    transport = httpx.HTTPTransport(uds=str(setup.socket))
    counts = {"orders": 0}
    with httpx.Client(transport=transport, base_url="http://kr", timeout=60) as http:

        def post(what: str, body: Any, **kw: Any) -> httpx.Response:
            if isinstance(body, bytes):
                return a.record(what, http.post("/v1/orders", content=body, **kw))
            counts["orders"] += 1
            return a.record(what, http.post("/v1/orders", json=body, **kw))

        phone = a.account("1" + "".join(secrets.choice("0123456789") for _ in range(10)))
        email = a.account(f"audit.{secrets.token_hex(6)}@example.com")
        # deliveries: a top-up and two cards
        r = post("topup", {"order_id": "ok-1", "sku": "cm-100", "account": phone, "wait_s": 20})
        assert r.json()["state"] == "delivered", r.text
        r = post(
            "cards", {"order_id": "ok-2", "sku": "steam-50", "quantity": 2, "account": email, "wait_s": 20}
        )
        assert r.json()["state"] == "delivered", r.text
        # the same again, and the same id with another account
        post("repeat", {"order_id": "ok-1", "sku": "cm-100", "account": phone})
        other = a.account("1" + "".join(secrets.choice("0123456789") for _ in range(10)))
        assert post("conflict", {"order_id": "ok-1", "sku": "cm-100", "account": other}).status_code == 409
        # bad bodies, each carrying an account
        bad_account = a.account(f"{secrets.token_hex(5)} {secrets.token_hex(3)}")
        hidden = a.account(f"hidden{secrets.token_hex(5)}")
        for what, body in [
            ("malformed", b'{"order_id": "b1", "sku": "cm-100", "account": "' + hidden.encode() + b'"'),
            ("bad account", {"order_id": "b2", "sku": "cm-100", "account": bad_account}),
            ("unknown sku", {"order_id": "b3", "sku": "nope-1", "account": hidden}),
            ("unknown field", {"order_id": "b4", "sku": "cm-100", "account": hidden, "api_key": "x"}),
            ("bad quantity", {"order_id": "b5", "sku": "cm-100", "account": hidden, "quantity": 0}),
            ("bad price", {"order_id": "b6", "sku": "cm-100", "account": hidden, "max_price": "-1"}),
            ("bad deadline", {"order_id": "b7", "sku": "cm-100", "account": hidden, "deadline_s": 0}),
            ("not an object", b"[1, 2, 3]"),
        ]:
            assert post(what, body).status_code == 400, what
        # bodies that once broke the handler (an internal error logs a traceback)
        for what, body in [
            ("huge price", {"order_id": "b8", "sku": "cm-100", "account": hidden, "max_price": "1e30"}),
            (
                "surrogate field",
                b'{"order_id":"b9","sku":"cm-100","account":"'
                + hidden.encode()
                + b'","fields":{"zone":"\\ud800"}}',
            ),
            ("deep nesting", b'{"account":"' + hidden.encode() + b'","x":' + b"[" * 50_000),
        ]:
            assert post(what, body).status_code in (400, 500), what
        # the order itself invalid at the supplier: INVALID, no failover
        invalid = a.account(f"invalid{secrets.token_hex(5)}")
        r = post("invalid account", {"order_id": "inv-1", "sku": "cm-100", "account": invalid, "wait_s": 20})
        assert r.json()["state"] == "failed", r.text
        # price ceiling below every offer
        post(
            "ceiling",
            {"order_id": "ceil-1", "sku": "cm-100", "account": phone, "max_price": "1.00", "wait_s": 20},
        )
        # out of stock, failed, auth refused, unreachable: the order fails
        failing = a.account("1" + "".join(secrets.choice("0123456789") for _ in range(10)))
        r = post("exhausted", {"order_id": "fail-1", "sku": "fail-10", "account": failing, "wait_s": 30})
        assert r.json()["state"] == "failed", r.text
        counts["failover reasons"] = len({x["reason"] for x in r.json()["attempts"]})
        # unknown outcomes (timeouts, resets, 5xx, garbage, duplicates), reconciled by query
        unk = a.account(f"unk.{secrets.token_hex(5)}@example.com")
        for i in range(8):
            post("unknown", {"order_id": f"unk-{i}", "sku": "unk-10", "account": unk, "wait_s": 0})
        # pending forever: attention, then resolved by a human with cards
        slow = a.account("1" + "".join(secrets.choice("0123456789") for _ in range(10)))
        for i in range(2):
            r = post("pending", {"order_id": f"slow-{i}", "sku": "slow-10", "account": slow, "wait_s": 2})
        pending_key = r.json()["attempts"][0]["attempt_key"]
        # forged, replayed, misdirected and malformed callbacks
        _callbacks(setup, pending_key)
        _wait(
            lambda: all(http.get(f"/v1/orders/slow-{i}").json()["state"] == "attention" for i in range(2)),
            30,
            "the pending orders to reach attention",
        )
        card_number, card_password = f"AUDIT-CARD-{secrets.token_hex(6)}", f"AUDIT-PW-{secrets.token_hex(6)}"
        a.cards += [card_number, card_password]
        resolve_bodies: list[tuple[str, str, dict[str, Any]]] = [
            (
                "resolve delivered",
                "slow-0",
                {"by": "ops", "delivered": {"cards": [{"number": card_number, "password": card_password}]}},
            ),
            ("resolve failed", "slow-1", {"by": "ops", "failed": "refunded"}),
            ("resolve again", "slow-0", {"by": "ops", "failed": "x"}),
            ("resolve unknown", "nope-9", {"by": "ops", "failed": "x"}),
            ("resolve bad", "slow-1", {"by": "ops"}),
            ("resolve not in attention", "ok-1", {"by": "ops", "failed": "x"}),
        ]
        for what, order_id, body in resolve_bodies:
            a.record(what, http.post(f"/v1/orders/{order_id}/resolve", json=body))
        # reads
        for i in range(8):
            a.record("status", http.get(f"/v1/orders/unk-{i}", params={"wait_s": "10"}))
        for path in [
            "/v1/orders/ok-1",
            "/v1/orders/ok-2",
            "/v1/orders/fail-1",
            "/v1/orders/nope",
            "/v1/orders/bad%20id",
            "/v1/suppliers",
            "/v1/route?sku=fail-10",
            "/v1/route?sku=x",
            "/v1/orders?state=attention",
            "/v1/orders?state=delivered&limit=1000",
            "/v1/orders?state=failed",
            "/v1/orders?state=nope",
            "/healthz",
            "/nowhere",
        ]:
            a.record(f"GET {path}", http.get(path))
        a.record("PUT", http.put("/v1/orders", content=b"{}"))
        # the command line, against the running daemon
        _cli(setup, "suppliers", "-c", "router.yaml", "--json")
        _cli(setup, "suppliers", "-c", "router.yaml")
        _cli(setup, "explain", "fail-10", "-c", "router.yaml")
        _cli(setup, "attention", "list", "-c", "router.yaml", "--json")
        _cli(setup, "status", "ok-2", "-c", "router.yaml")
        _cli(
            setup,
            "submit",
            "cli-1",
            "cm-100",
            "--account",
            a.account(f"{secrets.token_hex(4)}!bad"),
            "-c",
            "router.yaml",
        )
        _cli(setup, "submit", "cli-2", "fail-10", "--account", failing, "-c", "router.yaml")
        # reloads of broken supplier files, each with a credential in it
        _broken_reloads(setup, daemon, log_path)
        # metrics
        with httpx.Client(trust_env=False, timeout=10) as plain:
            scrape = plain.get(f"http://127.0.0.1:{setup.metrics_port}/metrics")
        a.replies.append(("metrics", scrape.content))
        counts["api replies"] = len(a.replies)
    return counts


def _callbacks(setup: Setup, pending_key: str) -> None:
    a = setup.audit
    base = f"http://127.0.0.1:{setup.callbacks_port}/callbacks"
    body = json.dumps(
        {
            "order_no": "SIM-X",
            "merchant_order_no": pending_key,
            "product_id": "E10",
            "quantity": 1,
            "status": "success",
            "unit_price": "9.90",
            "cards": [],
            "receipt": "SN-FORGED",
        }
    ).encode()
    eps = a.credentials["eps"]
    now = time.time()
    cases = [
        ("wrong key", "eps", signed_headers("eps", "not-the-key", body, now), body),
        ("replayed", "eps", signed_headers("eps", eps, body, now - 7200), body),
        ("from the future", "eps", signed_headers("eps", eps, body, now + 7200), body),
        ("wrong merchant", "eps", signed_headers("alpha", a.credentials["alpha"], body, now), body),
        (
            "signed by another supplier",
            "alpha",
            signed_headers("alpha", a.credentials["alpha"], body, now),
            body,
        ),
        (
            "unknown attempt",
            "eps",
            signed_headers("eps", eps, body.replace(pending_key.encode(), b"KRNOPE"), now),
            body.replace(pending_key.encode(), b"KRNOPE"),
        ),
        ("malformed signed", "eps", signed_headers("eps", eps, b"{not json", now), b"{not json"),
        (
            "outside the allowlist",
            "walled",
            signed_headers("walled", a.credentials["walled"], body, now),
            body,
        ),
        ("unknown supplier", "nobody", {}, body),
        ("no headers", "eps", {}, body),
    ]
    with httpx.Client(timeout=10, trust_env=False) as http:
        for what, name, headers, content in cases:
            a.record(f"callback {what}", http.post(f"{base}/{name}", content=content, headers=headers))
        a.record("callback GET", http.get(f"{base}/eps"))


def _broken_reloads(setup: Setup, daemon: subprocess.Popen[bytes], log_path: Path) -> None:
    a = setup.audit
    sdir = setup.root / "suppliers.d"
    broken = sdir / "broken.yaml"
    literal = a.credentials["broken-literal"] = _secret("broken-literal")
    yaml_secret = a.credentials["broken-yaml"] = _secret("broken-yaml")
    for text in [
        # a literal credential, and a bad value elsewhere
        f"plugin: sim\ncredentials: {{api_key: {literal}}}\nlimits: {{rate_per_s: -1}}\n"
        "offers: {cm-100: {product_id: X, price: 1}}\nsimulate: {}\n",
        # a YAML syntax error on the line with the credential
        f"plugin: sim\ncredentials: {{api_key: {yaml_secret}\n  offers: [\n",
        # a credential as a list, an unset variable, a missing file, a credential twice
        f"plugin: sim\ncredentials: {{api_key: [{literal}], other: '${{KR_AUDIT_UNSET}}',"
        " third_file: /nonexistent}\noffers: {cm-100: {product_id: X, price: 1}}\nsimulate: {}\n",
        f"plugin: sim\ncredentials: {{api_key: {literal}, api_key_file: ../secrets/beta.key}}\n"
        "offers: {cm-100: {product_id: X, price: 1}}\nsimulate: {}\n",
        # an unknown plugin with a credential
        f"plugin: nosuch\ncredentials: {{api_key: {literal}}}\n"
        "offers: {cm-100: {product_id: X, price: 1}}\n",
    ]:
        before = log_path.read_bytes().count(b"reload refused")
        broken.write_text(text)
        daemon.send_signal(signal.SIGHUP)
        _wait(lambda n=before: log_path.read_bytes().count(b"reload refused") > n, 20, "a refused reload")
        # and what check says about the same files
        result = _cli(setup, "check", "-c", "router.yaml")
        assert result.returncode == 1, result.stdout + result.stderr
    broken.unlink()
    before = log_path.read_bytes().count(b"configuration reloaded")
    daemon.send_signal(signal.SIGHUP)
    _wait(lambda: log_path.read_bytes().count(b"configuration reloaded") > before, 20, "a good reload")
    result = _cli(setup, "check", "-c", "router.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def _journal_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "var").glob("journal.sqlite3*"))}


def _find(haystack: bytes, needles: dict[str, str]) -> list[str]:
    return [f"{kind} {value!r}" for kind, value in needles.items() if value.encode() in haystack]


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_secret_account_or_card_leaks_anywhere(
    tmp_path: Path, log_format: str, request: pytest.FixtureRequest
) -> None:
    setup = Setup(tmp_path, log_format)
    a = setup.audit
    log_path = tmp_path / "daemon.log"
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    with log_path.open("wb") as log:
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "kamen_router",
                        "--log-level",
                        "error",
                        "sim",
                        "-c",
                        str(tmp_path / "zeta-upstream.yaml"),
                        "--listen",
                        f"127.0.0.1:{setup.zeta_port}",
                    ],
                    cwd=tmp_path,
                    env=_env({}),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait(lambda: _listening(setup.zeta_port), 30, "zeta's upstream simulator")
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kamen_router",
                    "--log-level",
                    "debug",
                    "run",
                    "-c",
                    str(setup.config),
                ],
                cwd=tmp_path,
                env=_env(setup.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            procs.append(daemon)
            _wait(lambda: daemon.poll() is None and _healthy(setup.socket), 30, "the daemon to be ready")
            counts = _exercise(setup, daemon, log_path)
            running_journal = _journal_bytes(tmp_path)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(STOP_TIMEOUT_S) == 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    log_bytes = log_path.read_bytes()
    lines = log_bytes.decode(errors="replace").splitlines()
    if log_format == "json":
        for line in lines:  # every line is one JSON object
            json.loads(line)
    journal = _journal_bytes(tmp_path)
    assert journal, "no journal files"

    credentials = {f"credential {k}": v for k, v in a.credentials.items()}
    accounts = {f"account {v}": v for v in a.accounts}
    heads = {f"account head {v[:-4]}": v[:-4] for v in a.accounts}
    cards = {f"card {v}": v for v in a.cards}
    assert len(a.cards) >= 6, a.cards  # two delivered cards and the resolved one
    leaks: list[str] = []
    for name, data in [
        ("log", log_bytes),
        *((f"journal {n} (running)", b) for n, b in running_journal.items()),
        *((f"journal {n}", b) for n, b in journal.items()),
    ]:
        leaks += [f"{name}: {x}" for x in _find(data, {**credentials, **accounts, **heads, **cards})]
    for what, body in a.replies:
        leaks += [f"reply to {what}: {x}" for x in _find(body, {**credentials, **accounts, **heads})]
        try:
            stripped = json.dumps(_without_deliverables(json.loads(body))).encode()
        except ValueError:
            stripped = body
        leaks += [f"reply to {what} (outside deliverables): {x}" for x in _find(stripped, cards)]
    for what, output in a.cli:
        text = output.encode()
        leaks += [f"`kamen-router {what}`: {x}" for x in _find(text, {**credentials, **accounts, **heads})]
    # masked accounts do show in the log: their last four characters only
    masked_seen = sum(1 for v in a.accounts if ("*" + v[-4:]).encode() in log_bytes)

    report = (
        f"\nsecrets audit ({log_format}): searched {len(lines)} log lines ({len(log_bytes)} bytes),"
        f" {len(a.replies)} API replies, {len(a.cli)} CLI outputs, a metrics scrape and"
        f" the journal ({', '.join(sorted(running_journal))} while running, {sum(map(len, journal.values()))}"
        f" bytes after the stop) for"
        f" {len(credentials)} credentials, {len(a.accounts)} accounts and {len(a.cards)} card values"
        f" after {counts['orders']} order requests: "
        + ("NONE FOUND" if not leaks else f"{len(leaks)} LEAKS")
        + f" ({masked_seen} accounts seen masked;"
        f" {time.monotonic() - started:.1f} s)"
    )
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(report)
    if leaks:
        shutil.copy(log_path, tmp_path / "daemon.log.kept")
    assert not leaks, report + "\n" + "\n".join(leaks[:40])
