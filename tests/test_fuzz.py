"""Fuzzing the listeners that face clients: generated JSON bodies POSTed to
/v1/orders, and raw byte streams written to the order socket, the callback
listener and the metrics listener.

Every input must get a well-formed HTTP/1.1 reply (a JSON error for 4xx),
or a closed connection; the daemon must never crash or wedge, and must
serve a valid order afterwards; the journal, read back through
kamen_router.journal with the key, must hold exactly the orders from valid
requests, stored as they were sent.

Each test runs its own daemon in a background thread (its own trio.run),
shared by all its examples; a sync hypothesis test talks to it over real
sockets. ``KAMEN_FUZZ_EXAMPLES`` sets the examples per test (the default
keeps ``make test`` quick); the counts are printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import supplier, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kamen_router.config import load_config
from kamen_router.crypto import FieldCipher
from kamen_router.daemon import DaemonInfo, serve_daemon
from kamen_router.journal import open_journal
from kamen_router.money import loads_json
from kamen_router.plugin import load_plugins
from kamen_router.sim.protocol import signed_headers

# a daemon that died mid-request (a bug the tests report) leaves its
# in-flight httpx streams to the garbage collector; their warnings would
# land on whichever test runs next
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

_ENV_EXAMPLES = os.environ.get("KAMEN_FUZZ_EXAMPLES")


def examples(default: int) -> int:
    """Examples for one test: ``KAMEN_FUZZ_EXAMPLES`` when set, else ``default``."""
    return int(_ENV_EXAMPLES) if _ENV_EXAMPLES else default


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


#: test name -> (examples run, seconds), printed when the module ends
COUNTS: dict[str, tuple[int, float]] = {}

DELIVERING_SKUS = ("mobile-cmcc-100", "steam-50")
SKUS: dict[str, dict[str, Any]] = {"mobile-cmcc-100": {}, "steam-50": {}, "pending-10": {}}
KEYS = {
    "cheap": "fuzz-key-cheap-5f1d0c9a7b",
    "slow": "fuzz-key-slow-0e4a91c3d2",
    "walled": "fuzz-key-walled-77b2e6a01f",
}
MAX_DEADLINE_S = 86400
MAX_WAIT_S = 60
MAX_BODY_BYTES = 1024 * 1024  # HttpLimits.max_body_bytes

ORDER_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
ACCOUNT_OK = re.compile(r"[A-Za-z0-9@._+-]{1,64}")
FIELD_NAME_OK = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
ORDER_KEYS = ("order_id", "sku", "quantity", "account", "fields", "max_price", "deadline_s", "wait_s")


# ------------------------------------------------------------------ daemon


class ThreadDaemon:
    """A real daemon (``serve_daemon``) in a thread of its own, restarted on
    the same config and journal if it died, so that hypothesis can replay and
    shrink an input that kills it."""

    def __init__(self, root: Path, config_path: Path) -> None:
        self.root = root
        self.config_path = config_path
        self.config = load_config(config_path)
        self.info: DaemonInfo | None = None
        self.error: BaseException | None = None
        self.deaths: list[str] = []
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None

    def start(self) -> None:
        ready = threading.Event()
        self.info, self.error = None, None

        async def run() -> None:
            config = load_config(self.config_path)
            plugins = load_plugins(config.plugins_dir)
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self.info = await nursery.start(serve_daemon, config, plugins)
                    ready.set()

        def main() -> None:
            try:
                trio.run(run)
            except BaseException as exc:
                self.error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=main, name="fuzz-daemon", daemon=True)
        self._thread.start()
        ready.wait(30)
        if self.info is None:
            raise RuntimeError(f"the daemon did not start: {self.error!r}")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def ensure(self) -> None:
        """Restart the daemon if it died (or is dying)."""
        if self.alive():
            try:
                if healthz(self.socket) == 200:
                    return
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "the daemon neither serves nor stops"
            self.deaths.append(repr(self.error))
        self.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._thread.is_alive() and self._token is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the daemon thread did not stop"

    # addresses
    @property
    def socket(self) -> str:
        assert self.info is not None
        return str(self.info.socket)

    def _tcp(self, url: str | None) -> tuple[str, int]:
        assert url is not None
        host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        return host.strip("[]"), int(port)

    @property
    def callbacks(self) -> tuple[str, int]:
        assert self.info is not None
        return self._tcp(self.info.callbacks_url)

    @property
    def metrics(self) -> tuple[str, int]:
        assert self.info is not None
        return self._tcp(self.info.metrics_url)

    # checks
    def assert_serving(self, after: object) -> None:
        """The daemon still answers /healthz; else it died or wedged on ``after``."""
        try:
            status = healthz(self.socket)
        except OSError as exc:
            status = None
            reason = repr(exc)
        else:
            reason = f"status {status}"
        if status != 200:
            if self._thread is not None:
                self._thread.join(5)
            raise AssertionError(
                f"the daemon stopped serving ({reason}; it died of {leaves(self.error)}) after: {after!r}"[
                    :3000
                ]
            )

    def deliver_one(self, order_id: str) -> dict[str, Any]:
        body = json.dumps(
            {"order_id": order_id, "sku": "mobile-cmcc-100", "account": "13800138000", "wait_s": 20}
        ).encode()
        status, _headers, reply = single(exchange(self.socket, post_request(body)))
        assert status == 200, reply
        data: dict[str, Any] = json.loads(reply)
        assert data["state"] == "delivered", data
        return data

    def journal_orders(self) -> dict[str, Any]:
        """Every order in the journal, decrypted with the key."""
        j = self.config.journal
        assert j.key_file is not None
        cipher = FieldCipher.from_files(j.key_file, j.old_key_files)
        with sqlite3.connect(j.path) as db:
            ids = [r[0] for r in db.execute("SELECT order_id FROM orders")]

        async def read() -> dict[str, Any]:
            journal = await open_journal(j.path, cipher)
            try:
                return {i: await journal.load(i) for i in ids}
            finally:
                await journal.close()

        return trio.run(read)


def leaves(exc: BaseException | None) -> str:
    """The exceptions inside nested exception groups, for a short message."""
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(leaves(e) for e in exc.exceptions)
    return repr(exc)


def fuzz_config(root: Path) -> Path:
    def sup(prices: dict[str, Any], key: str, **kw: Any) -> dict[str, Any]:
        data = supplier(prices, credentials={"api_key": key}, **kw)
        data["simulate"]["balance"] = 10**12
        data["simulate"]["latency_ms"] = [0, 1]
        return data

    return write_config(
        root,
        {
            "cheap": sup({"mobile-cmcc-100": "98.20", "steam-50": "47.90"}, KEYS["cheap"]),
            "slow": sup(
                {"pending-10": "9.50"}, KEYS["slow"], simulate={"pending_rate": 1, "pending_s": 3600}
            ),
            "walled": sup(
                {"mobile-cmcc-100": "99.90"}, KEYS["walled"], callback_allow_from=["203.0.113.0/24"]
            ),
        },
        skus=SKUS,
        callbacks={"listen": "127.0.0.1:0"},
        metrics={"listen": "127.0.0.1:0"},
    )


def _daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadDaemon]:
    root = tmp_path_factory.mktemp("fuzz")
    d = ThreadDaemon(root, fuzz_config(root))
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadDaemon]:
    """A daemon of its own for one fuzz test (its journal is checked whole)."""
    yield from _daemon(tmp_path_factory)


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadDaemon]:
    """One daemon for the short tests; restarted if a test killed it."""
    yield from _daemon(tmp_path_factory)


@pytest.fixture
def shared(shared_daemon: ThreadDaemon) -> ThreadDaemon:
    shared_daemon.ensure()
    return shared_daemon


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not COUNTS:
        return
    capman = request.config.pluginmanager.getplugin("capturemanager")
    lines = [f"  {name}: {n} cases in {s:.1f} s" for name, (n, s) in COUNTS.items()]
    total = sum(n for n, _ in COUNTS.values())
    text = f"\nfuzz cases run (KAMEN_FUZZ_EXAMPLES={_ENV_EXAMPLES or 'default'}): {total}\n" + "\n".join(
        lines
    )
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(text)
    else:
        print(text)


class Counter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.start = time.monotonic()

    def tick(self) -> None:
        self.n += 1

    def done(self) -> None:
        COUNTS[self.name] = (self.n, time.monotonic() - self.start)


# ---------------------------------------------------------------- the wire


def healthz(path: str) -> int | None:
    """The status of GET /healthz, or None when the connection closes unanswered."""
    reply = exchange(path, b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
    if not reply:
        return None
    status, _h, _b = single(reply)
    return status


def post_request(body: bytes, path: bytes = b"/v1/orders") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def exchange(address: str | tuple[str, int], data: bytes, timeout: float = 15.0) -> bytes:
    """Write ``data``, half-close, and read until the server closes. A reset
    after the reply counts as a close; a server that neither answers nor
    closes within ``timeout`` fails the test."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                f"no reply and no close within {timeout} s; got {bytes(out[:200])!r}"
            ) from None
        return bytes(out)


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def responses(data: bytes, *, head_ok: bool = False) -> list[tuple[int, dict[str, str], bytes | None]]:
    """Parse the bytes a server sent as a sequence of complete HTTP/1.1
    responses, each framed by content-length; fail on anything else.
    ``head_ok``: a reply may be body-less (it answered a HEAD); its body is
    None."""
    out = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"a truncated response head: {head[:300]!r}"
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [ -~]*", lines[0])
        assert m, f"a malformed status line: {lines[0][:200]!r}"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and _TOKEN.fullmatch(name), f"a malformed header line: {line[:200]!r}"
            headers[name.decode().lower()] = value.strip().decode("latin-1")
        assert "content-length" in headers, f"a response without content-length: {head[:300]!r}"
        length = int(headers["content-length"])
        body: bytes | None
        if head_ok and length and (rest == b"" or rest.startswith(b"HTTP/1.1 ")):
            body = None
        else:
            body, rest = rest[:length], rest[length:]
            assert len(body) == length, f"a truncated body: {len(body)} of {length} bytes"
        out.append((int(m.group(1)), headers, body))
    return out


def single(data: bytes) -> tuple[int, dict[str, str], bytes]:
    replies = responses(data)
    assert len(replies) == 1, f"expected one response, got {len(replies)}: {data[:300]!r}"
    status, headers, body = replies[0]
    assert body is not None
    return status, headers, body


def check_error_body(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """A 4xx/5xx from the server is ``{"error": {"code", "message"}}`` in JSON,
    short and without the request echoed back."""
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    data = json.loads(body)
    assert isinstance(data, dict) and isinstance(data.get("error"), dict), body[:300]
    code, message = data["error"].get("code"), data["error"].get("message")
    assert isinstance(code, str) and re.fullmatch(r"[a-z_]{3,40}", code), body[:300]
    assert isinstance(message, str) and 0 < len(message) <= 600, body[:700]
    return data


def check_replies(
    replies: list[tuple[int, dict[str, str], bytes | None]], *, all_json: bool, allow_500: bool = False
) -> None:
    for status, headers, body in replies:
        assert status != 500 or allow_500, f"an internal error for a client's input: {body!r}"[:400]
        assert 200 <= status <= 599
        if body is None:
            continue  # the headers of a reply to HEAD
        if status >= 400 and (all_json or headers.get("content-type", "").startswith("application/json")):
            check_error_body(status, headers, body)
        elif all_json and body:
            assert headers.get("content-type", "").startswith("application/json"), headers
            json.loads(body)


# ---------------------------------------------------------- JSON bodies


class Raw:
    """A JSON number written exactly as ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Pairs(list):  # type: ignore[type-arg]
    """A JSON object as a list of (key, value): keys may repeat."""


UNIQUE = "<unique>"


def to_json(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{to_json(k, ascii_only)}:{to_json(v, ascii_only)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return to_json(Pairs(value.items()), ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


#: lone surrogates: valid in JSON ("\ud800"), not encodable as UTF-8
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | surrogates
    | st.sampled_from(["1e999999999", "-0", "1E-400", "0.0000000001", "12345678901234567890.123"]).map(Raw)
)
junk = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
huge_text = st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "1", "é", "\u4e2d", "😀", " "]), st.integers(65, 200_000)
)
plain_id = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)

good = {
    "order_id": st.just(UNIQUE) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True),
    "sku": st.sampled_from(DELIVERING_SKUS),
    "quantity": st.integers(1, 3) | st.sampled_from([1, 1000]),
    "account": st.from_regex(r"[A-Za-z0-9@._+-]{1,64}", fullmatch=True) | st.just("13800138000"),
    "fields": st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,31}", fullmatch=True),
        st.text(max_size=128).filter(lambda v: "\x00" not in v),
        max_size=16,
    ),
    "max_price": st.integers(1, 10**6)
    | st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**6), places=2).map(lambda d: Raw(str(d)))
    | st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,2})?", fullmatch=True),
    "deadline_s": st.integers(1, MAX_DEADLINE_S) | st.sampled_from([Raw("1.5"), Raw("86400.0"), Raw("1e3")]),
    "wait_s": st.sampled_from([0, 0.01, Raw("0.05"), 1, MAX_WAIT_S]),
}
bad = {
    "order_id": st.sampled_from(["", " ", "-a", "_a", "a b", "a/b", "a?b", "a%20", "ä", "a\x00", "a" * 65])
    | plain_id.map(lambda s: s + "\n")
    | plain_id.map(lambda s: s + "\t")
    | plain_id.map(lambda s: "\n" + s)
    | st.text(max_size=30)
    | huge_text
    | junk,
    "sku": st.sampled_from(["", "MOBILE-CMCC-100", "mobile-cmcc-100\n", " steam-50", "nope", "pending-1"])
    | junk,
    "quantity": st.sampled_from(
        [0, -1, 1001, 2**63, 2**64 + 1, True, False, "1", Raw("1.0"), Raw("1e2"), Raw("NaN")]
    )
    | st.integers(max_value=0)
    | st.integers(min_value=1001)
    | junk,
    "account": st.sampled_from(["", " ", "1380013800 0", "138\n", "a" * 65, "账户", "a\x00b", "a;b", "a'b"])
    | plain_id.map(lambda s: s + "\n")
    | st.text(min_size=1, max_size=70)
    | huge_text
    | junk,
    "fields": st.sampled_from(
        [[], "", 0, False, True, "x", [["a", "b"]], {"a": 1}, {"1a": "x"}, {"a\n": "x"}]
    )
    | st.dictionaries(st.text(max_size=40), junk | st.text(max_size=200), min_size=1, max_size=20)
    | st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), huge_text, min_size=1, max_size=2)
    | st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), surrogates, min_size=1, max_size=2)
    | st.builds(lambda n: {f"f{i}": "v" for i in range(n)}, st.integers(17, 40))
    | junk,
    "max_price": st.sampled_from(
        [0, -1, "0", "-1", "0.00", "abc", "", "NaN", "Infinity", "-Infinity", True, [], {}, Raw("-0.01")]
    )
    | st.sampled_from(
        ["1e30", Raw("1e30"), 10**27, Raw("1E+999999999"), "9" * 33, Raw("1e-30"), " 5 ", "5_0"]
    )
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | junk,
    "deadline_s": st.sampled_from(
        [0, -1, 86401, Raw("0.5"), Raw("86400.5"), "60", True, Raw("1e999"), Raw("NaN")]
    )
    | st.integers()
    | junk,
    "wait_s": st.sampled_from([-1, 61, Raw("60.01"), "1", True, Raw("-0.1"), Raw("Infinity"), Raw("1e999")])
    | st.integers()
    | junk,
}
extra_keys = st.sampled_from(
    ["colour", "Order_id", "SKU", "order_id ", "", "__proto__", "price", "notify_url"]
) | st.text(max_size=12).filter(lambda k: k not in ORDER_KEYS)


@st.composite
def order_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {"order_id": draw(good["order_id"]), "sku": draw(good["sku"])}
    for key in ORDER_KEYS[2:]:
        if key != "wait_s" and draw(st.booleans()):
            body[key] = draw(good[key])
    if draw(st.integers(0, 9)) == 0:
        body["wait_s"] = draw(good["wait_s"])
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["bad", "bad", "bad", "null", "drop", "extra"]))
        key = draw(st.sampled_from(ORDER_KEYS))
        if how == "bad":
            body[key] = draw(bad[key])
        elif how == "null":
            body[key] = None
        elif how == "drop":
            body.pop(key, None)
        else:
            body[draw(extra_keys)] = draw(junk)
    if draw(st.integers(0, 19)) == 0:  # a key twice: the last one counts
        pairs = Pairs(body.items())
        key = draw(st.sampled_from(ORDER_KEYS))
        pairs.insert(0, (key, draw(bad[key] | good[key])))
        return to_json(pairs, draw(st.booleans())).encode("utf-8", "surrogatepass")
    return to_json(body, draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def broken_json(draw: st.DrawFn) -> bytes:
    valid = json.dumps({"order_id": "brk", "sku": "steam-50", "quantity": 1}).encode()
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == 1:
        return draw(st.sampled_from([b"[", b"{", b'{"a":', b"[{"])) * draw(st.integers(1, 150_000))
    if kind == 2:
        return b"\xef\xbb\xbf" + valid
    if kind == 3:
        return valid + draw(st.sampled_from([b"x", b"}", b",", b"\x00", b" {}"]))
    if kind == 4:
        return draw(st.binary(max_size=300))
    if kind == 5:
        return draw(st.sampled_from([b"", b" ", b"null", b"0", b'"x"', b"[]", b"true", b"NaN", b"\xff\xfe"]))
    if kind == 6:
        return valid.replace(b"brk", draw(st.binary(min_size=1, max_size=8)).replace(b'"', b"'"))
    if kind == 7:
        return to_json(draw(junk), draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == 8:
        return ("[" * (n := draw(st.integers(1, 900))) + "]" * n).encode()
    return valid.decode().encode("utf-16")


# ---------------------------------------------------------------- oracle


def _number(value: object, low: float, high: float) -> str:
    """``valid``, ``invalid`` or ``either`` for deadline_s and wait_s."""
    if value is None:
        return "valid"
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return "invalid"
    d = Decimal(value)
    edge = Decimal("0.000001")
    if Decimal(low) <= d <= Decimal(high):
        return "valid"
    if Decimal(low) - edge < d < Decimal(high) + edge:
        return "either"  # float rounding at the very edge
    return "invalid"


def _max_price(value: object) -> str:
    if value is None:
        return "valid"
    if isinstance(value, bool):
        return "invalid"
    if isinstance(value, int):
        return "invalid" if value <= 0 else "valid" if value <= 10**9 else "either"
    if isinstance(value, Decimal):
        if value <= 0:
            return "invalid"
        sane = Decimal("0.01") <= value <= 10**9 and -value.as_tuple().exponent <= 8  # type: ignore[operator]
        return "valid" if sane else "either"
    if isinstance(value, str):
        if re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,8})?", value):
            return (
                "valid"
                if Decimal(value) >= Decimal("0.01")
                else "invalid"
                if Decimal(value) == 0
                else "either"
            )
        if len(value) > 32:
            return "invalid"
        try:
            d = Decimal(value.strip())
        except ArithmeticError:
            return "invalid"
        return "invalid" if not d.is_finite() or d <= 0 else "either"
    return "invalid"  # floats (NaN, Infinity), lists, objects


def _fields(value: object) -> str:
    if value is None:
        return "valid"
    if not isinstance(value, dict) or len(value) > 16:
        return "invalid"  # [] and "" and false included: they are not objects
    verdict = "valid"
    for name, v in value.items():
        if not FIELD_NAME_OK.fullmatch(name) or not isinstance(v, str) or len(v) > 128 or "\x00" in v:
            return "invalid"
        if re.search("[\ud800-\udfff]", v):
            verdict = "either"  # not encodable; refusing it is right, accepting it can't be
    return verdict


def judge(body: Any) -> tuple[str, set[str]]:
    """What the order API must do with a parsed body: ``valid`` (accept),
    ``invalid`` (400) or ``either``; and the fields a 400 may name."""
    if not isinstance(body, dict):
        return "invalid", {""}
    unknown = set(body) - set(ORDER_KEYS)
    if unknown:
        return "invalid", unknown
    verdicts: dict[str, str] = {}
    oid = body.get("order_id")
    verdicts["order_id"] = "valid" if isinstance(oid, str) and ORDER_ID_OK.fullmatch(oid) else "invalid"
    sku = body.get("sku")
    verdicts["sku"] = "valid" if isinstance(sku, str) and sku in SKUS else "invalid"
    q = body.get("quantity", 1)
    verdicts["quantity"] = (
        "either"
        if q is None
        else "valid"
        if isinstance(q, int) and not isinstance(q, bool) and 1 <= q <= 1000
        else "invalid"
    )
    account = body.get("account")
    verdicts["account"] = (
        "valid"
        if account is None or (isinstance(account, str) and ACCOUNT_OK.fullmatch(account))
        else "invalid"
    )
    verdicts["fields"] = _fields(body.get("fields"))
    verdicts["max_price"] = _max_price(body.get("max_price"))
    verdicts["deadline_s"] = _number(body.get("deadline_s"), 1, MAX_DEADLINE_S)
    verdicts["wait_s"] = _number(body.get("wait_s"), 0, MAX_WAIT_S)
    invalid = {k for k, v in verdicts.items() if v == "invalid"}
    if invalid:
        return "invalid", invalid | {k for k, v in verdicts.items() if v == "either"}
    if "either" in verdicts.values():
        return "either", {k for k, v in verdicts.items() if v == "either"}
    return "valid", set()


# ------------------------------------------------------------------ tests


def test_generated_order_bodies(daemon: ThreadDaemon) -> None:
    """Valid-ish orders with mutated fields, wrong types, huge strings,
    unicode, repeated keys, nested junk and broken JSON, POSTed to
    /v1/orders: valid ones are accepted, the rest get a 400 naming a bad
    field, and the journal ends up holding exactly the accepted ones."""
    counter = Counter("order bodies -> POST /v1/orders")
    serial = iter(range(10**9))
    accepted: dict[str, Any] = {}  # order_id -> the parsed body that created it
    refused_ids: set[str] = set()

    @fuzz_settings(1000)
    @given(order_bodies() | broken_json())
    def run(raw: bytes) -> None:
        counter.tick()
        daemon.ensure()
        if UNIQUE.encode() in raw:
            raw = raw.replace(UNIQUE.encode(), f"fz-{next(serial)}".encode())
        named: set[str] = set()
        try:
            parsed = loads_json(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            verdict = "malformed"
            parsed = None
        else:
            verdict, named = judge(parsed)
        reply = exchange(daemon.socket, post_request(raw))
        daemon.assert_serving(raw[:2000])
        status, headers, body = single(reply)
        check_replies([(status, headers, body)], all_json=True)
        if len(raw) > MAX_BODY_BYTES:
            assert status == 413, (status, body[:300])
        elif status in (200, 202):
            assert verdict in ("valid", "either"), f"accepted an invalid order ({named}): {raw[:500]!r}"
            order = json.loads(body)
            assert isinstance(parsed, dict) and order["order_id"] == parsed["order_id"]
            accepted.setdefault(parsed["order_id"], parsed)
        elif status == 409:
            assert isinstance(parsed, dict) and parsed.get("order_id") in accepted, raw[:300]
            assert json.loads(body)["error"]["code"] == "conflict"
        else:
            assert status == 400, f"{status} for {verdict} input {raw[:300]!r}: {body[:300]!r}"
            error = json.loads(body)["error"]
            if verdict == "malformed":
                assert error["code"] in ("malformed_json", "invalid_order"), error
            else:
                assert verdict in ("invalid", "either"), f"refused a valid order: {raw[:500]!r} -> {error}"
                assert error["code"] in ("invalid_order", "unknown_sku"), error
                if named - {""}:
                    assert any(error["message"].startswith(f"{n[:64]}") for n in named) or (
                        error["message"].startswith(("the body", "sku"))
                    ), (named, error)
                if isinstance(parsed, dict) and isinstance(parsed.get("order_id"), str):
                    refused_ids.add(parsed["order_id"])

    try:
        run()
    finally:
        counter.done()
    daemon.ensure()
    daemon.deliver_one("fz-final")
    accepted["fz-final"] = {"order_id": "fz-final", "sku": "mobile-cmcc-100", "account": "13800138000"}
    stored = daemon.journal_orders()
    extra, missing = sorted(set(stored) - set(accepted)), sorted(set(accepted) - set(stored))
    assert not extra and not missing, f"{len(stored)} stored, extra {extra[:5]}, missing {missing[:5]}"
    for order_id, body in accepted.items():
        order = stored[order_id]
        assert order is not None
        request = order.request
        assert (request.sku, request.quantity, request.account) == (
            body["sku"],
            body.get("quantity") or 1,
            body.get("account"),
        ), order_id
        assert request.fields == (body.get("fields") or {})
        if body.get("max_price") is not None:
            # money is exact: the journal holds the decimal that was sent
            assert request.max_price == Decimal(str(body["max_price"]).strip()), (order_id, body["max_price"])
            assert isinstance(request.max_price, Decimal)


# ------------------------------------------------------------ raw streams


METHODS = [
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"TRACE",
    b"CONNECT",
    b"get",
    b"P\x00ST",
]
VALID_RAW_BODIES = [
    json.dumps({"order_id": f"raw-{i}", "sku": "mobile-cmcc-100", "account": "13800138000"}).encode()
    for i in range(5)
]


def target_strategy(paths: list[bytes]) -> st.SearchStrategy[bytes]:
    return (
        st.sampled_from(paths)
        | st.sampled_from([b"*", b"http://x/healthz", b"//", b"/%00", b"/%ff%fe", b"/v1/orders/%0a", b"/.."])
        | st.binary(min_size=1, max_size=40).filter(
            lambda b: b" " not in b and b"\r" not in b and b"\n" not in b
        )
        | st.builds(
            lambda p, q: p + b"?" + q,
            st.sampled_from(paths),
            st.binary(max_size=40).filter(lambda b: b" " not in b and b"\r" not in b and b"\n" not in b),
        )
        | st.builds(lambda n: b"/" + b"a" * n, st.integers(1, 40_000))
    )


header_strategy = st.one_of(
    st.tuples(st.just(b"host"), st.sampled_from([b"x", b"", b"a b", b"\xff"])),
    st.tuples(
        st.sampled_from([b"content-length", b"Content-Length", b"content-length "]),
        st.sampled_from(
            [b"0", b"5", b"-1", b"+5", b"99999999999999999999", b"abc", b"5, 5", b" 1 ", b"2000000"]
        ),
    ),
    st.tuples(
        st.just(b"transfer-encoding"),
        st.sampled_from([b"chunked", b"gzip", b"chunked, gzip", b"identity", b"x"]),
    ),
    st.tuples(st.just(b"connection"), st.sampled_from([b"close", b"keep-alive", b"upgrade", b""])),
    st.tuples(st.just(b"expect"), st.sampled_from([b"100-continue", b"x"])),
    st.tuples(st.sampled_from([b"x-merchant", b"x-timestamp", b"x-sign"]), st.binary(max_size=70)),
    st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=60)),
    st.tuples(st.just(b"x-big"), st.builds(lambda n: b"v" * n, st.integers(1000, 40_000))),
)


@st.composite
def http_requests(draw: st.DrawFn, paths: list[bytes], bodies: list[bytes]) -> bytes:
    method = draw(st.sampled_from(METHODS) | st.binary(min_size=1, max_size=8))
    target = draw(target_strategy(paths))
    version = draw(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/0.9", b"", b"http/1.1"])
    )
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]))
    body = draw(st.sampled_from(bodies) | st.binary(max_size=200))
    headers = draw(st.lists(header_strategy, max_size=6))
    framing = draw(st.sampled_from(["length", "length", "chunked", "none", "wrong"]))
    if framing == "length":
        headers.append((b"content-length", str(len(body)).encode()))
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
        size = draw(st.sampled_from([None, b"zz", b"ffffffffffffffff", b"-1", b"1;ext=x"]))
        hexsize = f"{len(body):x}".encode() if size is None else size
        body = hexsize + b"\r\n" + body + b"\r\n0\r\n\r\n"
    elif framing == "wrong":
        headers.append((b"content-length", str(len(body) + draw(st.integers(-5, 5))).encode()))
    if draw(st.booleans()):
        headers.insert(0, (b"host", b"t"))
    head = method + b" " + target + (b" " + version if version else b"") + eol
    head += b"".join(
        name + draw(st.sampled_from([b": ", b":", b" : ", b":\t"])) + value + eol for name, value in headers
    )
    data = head + eol + body
    mutate = draw(st.integers(0, 5))
    if mutate == 0 and data:  # truncate
        data = data[: draw(st.integers(0, len(data)))]
    elif mutate == 1 and data:  # flip some bytes
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    return data


def streams(paths: list[bytes], bodies: list[bytes]) -> st.SearchStrategy[bytes]:
    one = http_requests(paths, bodies)
    return (
        one
        | st.lists(one, min_size=2, max_size=4).map(b"".join)  # pipelined
        | st.binary(max_size=2000)
        | st.sampled_from(
            [
                b"",
                b"\r\n",
                b"\r\n\r\n",
                b"GET",
                b"GET / HTTP/1.1\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            ]
        )
        | st.builds(lambda n: b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n" * n, st.integers(1, 40))
    )


def _raw_check(daemon: ThreadDaemon, address: str | tuple[str, int], data: bytes, *, all_json: bool) -> None:
    reply = exchange(address, data)
    daemon.assert_serving(data[:2000])
    replies = responses(reply, head_ok=b"HEAD" in data or b"head" in data.lower())
    check_replies(replies, all_json=all_json)


def test_raw_streams_on_the_order_socket(daemon: ThreadDaemon) -> None:
    """Raw bytes on the Unix socket: request lines, headers, framing and
    pipelining gone wrong, and plain garbage."""
    counter = Counter("raw streams -> order socket")
    paths = [
        b"/v1/orders",
        b"/v1/orders/raw-1",
        b"/v1/orders/raw-1/resolve",
        b"/healthz",
        b"/v1/route?sku=steam-50",
        b"/v1/suppliers",
        b"/v1/orders?state=attention",
        b"/",
    ]

    @fuzz_settings(800)
    @given(streams(paths, [*VALID_RAW_BODIES, b"{", b'{"order_id":"x"}', b"[]"]))
    def run(data: bytes) -> None:
        counter.tick()
        daemon.ensure()
        _raw_check(daemon, daemon.socket, data, all_json=True)

    try:
        run()
    finally:
        counter.done()
    daemon.ensure()
    daemon.deliver_one("raw-final")
    stored = daemon.journal_orders()
    valid = {json.loads(b)["order_id"] for b in VALID_RAW_BODIES} | {"raw-final"}
    assert set(stored) <= valid, sorted(set(stored) - valid)[:5]
    for order in stored.values():
        assert order is not None and (order.request.sku, order.request.account) == (
            "mobile-cmcc-100",
            "13800138000",
        )


def _pending_orders(daemon: ThreadDaemon, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        body = json.dumps(
            {"order_id": f"pend-{i}", "sku": "pending-10", "account": "13800138000", "wait_s": 2}
        )
        _s, _h, reply = single(exchange(daemon.socket, post_request(body.encode())))
        order = json.loads(reply)
        assert order["state"] == "pending", order
        out.append(order)
    return out


def _journal_rows(daemon: ThreadDaemon) -> list[tuple[Any, ...]]:
    with sqlite3.connect(daemon.config.journal.path) as db:
        return [
            *db.execute("SELECT * FROM orders ORDER BY order_id"),
            *db.execute("SELECT * FROM attempts ORDER BY attempt_key"),
        ]


@st.composite
def callback_streams(draw: st.DrawFn, attempt_keys: list[str]) -> bytes:
    """Callbacks as a supplier would send them, but forged, replayed, for
    another supplier's attempt, malformed, or not HTTP at all."""
    kind = draw(st.integers(0, 3))
    paths = [
        b"/callbacks/slow",
        b"/callbacks/cheap",
        b"/callbacks/walled",
        b"/callbacks/nobody",
        b"/callbacks",
        b"/",
        b"/callbacks/slow/x",
    ]
    if kind == 0:
        bodies = [b"{}", b"ok"]
        return draw(streams(paths, bodies))
    key = draw(st.sampled_from(attempt_keys) | st.text(max_size=40))
    payload = {
        "order_no": "SIM-F1",
        "merchant_order_no": key,
        "product_id": draw(st.sampled_from(["P-pending-10", "P-mobile-cmcc-100", "x"])),
        "quantity": draw(st.sampled_from([1, 2, 0, -1, "1", None])),
        "status": draw(st.sampled_from(["success", "failed", "processing", "weird", None])),
        "unit_price": draw(st.sampled_from(["9.50", "9.49", "0.01", "1e30", "x", None])),
        "cards": draw(st.sampled_from([[], [{"number": "N", "password": "P"}], "x", None])),
        "receipt": draw(st.sampled_from(["SN-1", None, 5])),
    }
    body = draw(
        st.sampled_from([json.dumps(payload).encode(), json.dumps(payload)[:-3].encode(), b"[]", b"\xff"])
    )
    supplier_name = draw(st.sampled_from(["slow", "cheap", "walled", "nobody"]))
    now = time.time()
    if kind == 1:  # forged: a wrong key, a wrong merchant or a mangled signature
        headers = signed_headers(
            draw(st.sampled_from([supplier_name, "slow", "cheap", ""])),
            draw(st.sampled_from(["wrong-key", KEYS["cheap"] + "x", ""])),
            body,
            now,
        )
        if draw(st.booleans()):
            headers["X-Sign"] = draw(st.text(max_size=70))
    elif kind == 2:  # a genuine signature outside the replay window
        age = draw(st.sampled_from([-1, 1])) * draw(st.floats(min_value=601, max_value=10**9))
        headers = signed_headers(supplier_name, KEYS.get(supplier_name, "k"), body, now + age)
    else:  # genuinely signed by one supplier, sent to another's path, or for an attempt it does not hold
        signer = draw(st.sampled_from(["cheap", "walled"]))
        headers = signed_headers(signer, KEYS[signer], body, now)
        supplier_name = draw(st.sampled_from([signer, "slow"]))
    head = f"POST /callbacks/{supplier_name} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n".encode()
    head += b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogatepass") for k, v in headers.items())
    return head + b"\r\n" + body


def test_raw_streams_on_the_callback_listener(daemon: ThreadDaemon) -> None:
    """The internet-facing listener: garbage, forged, replayed and
    misdirected callbacks against live pending orders change nothing."""
    counter = Counter("raw streams and forged callbacks -> callback listener")
    pending = _pending_orders(daemon, 3)
    keys = [o["attempts"][0]["attempt_key"] for o in pending]
    before = _journal_rows(daemon)

    @fuzz_settings(700)
    @given(callback_streams(keys))
    def run(data: bytes) -> None:
        counter.tick()
        daemon.ensure()
        _raw_check(daemon, daemon.callbacks, data, all_json=False)

    try:
        run()
    finally:
        counter.done()
    daemon.ensure()
    assert _journal_rows(daemon) == before, "a refused callback changed the journal"
    for order in pending:
        _s, _h, reply = single(
            exchange(
                daemon.socket, f"GET /v1/orders/{order['order_id']} HTTP/1.1\r\nhost: t\r\n\r\n".encode()
            )
        )
        assert json.loads(reply)["state"] == "pending"
    daemon.deliver_one("cb-final")


def test_raw_streams_on_the_metrics_listener(daemon: ThreadDaemon) -> None:
    counter = Counter("raw streams -> metrics listener")

    @fuzz_settings(250)
    @given(streams([b"/metrics", b"/", b"/metrics?x=1"], [b""]))
    def run(data: bytes) -> None:
        counter.tick()
        daemon.ensure()
        _raw_check(daemon, daemon.metrics, data, all_json=False)

    try:
        run()
    finally:
        counter.done()
    daemon.ensure()
    daemon.deliver_one("m-final")


# ------------------------------------------------- known hostile inputs


HOSTILE: list[tuple[str, bytes]] = [
    ("deep-nesting", b"[" * 100_000),
    ("deep-objects", b'{"a":' * 50_000),
    ("huge-max-price", b'{"order_id":"h1","sku":"steam-50","max_price":"1e30"}'),
    ("huge-int-max-price", b'{"order_id":"h2","sku":"steam-50","max_price":1000000000000000000000000000}'),
    ("surrogate-field", b'{"order_id":"h3","sku":"steam-50","fields":{"zone":"\\ud800"}}'),
    ("newline-order-id", b'{"order_id":"h4\\n","sku":"steam-50"}'),
    ("newline-account", b'{"order_id":"h5","sku":"steam-50","account":"13800138000\\n"}'),
    ("newline-field-name", b'{"order_id":"h6","sku":"steam-50","fields":{"zone\\n":"x"}}'),
    ("fields-false", b'{"order_id":"h7","sku":"steam-50","fields":false}'),
    ("fields-empty-list", b'{"order_id":"h8","sku":"steam-50","fields":[]}'),
    ("long-unknown-key", b'{"order_id":"h9","sku":"steam-50","' + b"k" * 100_000 + b'":1}'),
]


@pytest.mark.parametrize("name,body", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_known_hostile_bodies_get_a_400_and_change_nothing(
    shared: ThreadDaemon, name: str, body: bytes
) -> None:
    """Inputs that once got a 500 or were accepted: each gets a short 400,
    and the journal does not change."""
    before = shared.journal_orders()
    status, headers, reply = single(exchange(shared.socket, post_request(body)))
    shared.assert_serving(body[:200])
    check_error_body(status, headers, reply)
    assert status == 400, (name, status, reply[:300])
    assert shared.journal_orders().keys() == before.keys()


@pytest.mark.parametrize("listener", ["orders", "callbacks", "metrics"])
@pytest.mark.parametrize("path", [b"/healthz", b"/metrics", b"/callbacks/cheap", b"/nowhere"])
def test_a_head_request_never_takes_the_daemon_down(shared: ThreadDaemon, listener: str, path: bytes) -> None:
    """``curl -I`` on any listener: headers back (or an error), the daemon
    keeps serving."""
    addresses: dict[str, Callable[[], str | tuple[str, int]]] = {
        "orders": lambda: shared.socket,
        "callbacks": lambda: shared.callbacks,
        "metrics": lambda: shared.metrics,
    }
    reply = exchange(addresses[listener](), b"HEAD " + path + b" HTTP/1.1\r\nhost: t\r\n\r\n")
    time.sleep(0.1)  # a crash takes a moment to close the order socket
    shared.assert_serving(b"HEAD " + path)
    replies = responses(reply, head_ok=True)
    assert len(replies) == 1 and not replies[0][2], reply[:300]
    shared.deliver_one("after-head")
