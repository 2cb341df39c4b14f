"""The ``juhe`` plugin (plugins/juhe.py): signature vectors worked out from
the protocol, the mapping of every documented reply through the real plugin
methods (the Juhe side is faked with httpx.MockTransport), the requests it
sends, its callbacks, and that no credential leaks."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import urllib.parse
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from plugin_helpers import ROOT, Answer, Canned, load_plugin_module, mock_client, supplier_config

from kamen_router.config import SupplierConfig, read_supplier
from kamen_router.errors import ConfigError, Problem, SupplierUnreachable
from kamen_router.http import Request
from kamen_router.outcome import (
    Deliverables,
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    Pending,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.plugin import (
    CallbackRejected,
    SubmitRequest,
    SupplierContext,
    load_plugins,
    validate_plugin,
)

juhe = load_plugin_module("juhe")
JuhePlugin = juhe.JuhePlugin

OPENID = "JH0123456789abcdef0123456789abcd"
APPKEY = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90"
ATTEMPT = "KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001"
PHONE = "13800138000"
ENDPOINT = "https://op.juhe.test"
SPORDER = "J202405011200001234"


def make_supplier(
    *, credentials: dict[str, str] | None = None, offers: dict[str, str] | None = None
) -> SupplierConfig:
    creds = {"appkey": APPKEY, "openid": OPENID} if credentials is None else credentials
    products = {"mobile-cmcc-100": "100", "mobile-cmcc-50": "50"} if offers is None else offers
    return supplier_config(
        "juhe-main",
        "juhe",
        creds,
        {sku: (pid, "98.50") for sku, pid in products.items()},
        endpoint=ENDPOINT,
    )


def order(
    key: str = ATTEMPT, *, account: str | None = PHONE, quantity: int = 1, product_id: str = "100"
) -> SubmitRequest:
    return SubmitRequest(
        attempt_key=key,
        order_id="shop-1001",
        sku="mobile-cmcc-100",
        product_id=product_id,
        quantity=quantity,
        unit_price=Decimal("98.50"),
        max_price=Decimal("99.00"),
        account=account,
        callback_url="http://127.0.0.1:9465/callbacks/juhe-main",
    )


Reply = Answer


class Upstream(Canned):
    """The faked Juhe side: answers every request with a canned reply and
    keeps what it received."""

    def form(self, index: int = -1) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.requests[index].content.decode("ascii")))


@contextlib.asynccontextmanager
async def plugin_with(reply: Reply) -> AsyncIterator[tuple[Any, Upstream]]:
    upstream = Upstream(reply)
    async with mock_client(upstream) as http:
        with trio.fail_after(5):
            yield JuhePlugin(SupplierContext(make_supplier(), ENDPOINT, http)), upstream


def js(data: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=data)


def accepted(game_state: Any, **result: Any) -> httpx.Response:
    # the shape of Juhe's published sample: in the reply, cardnum is the quantity
    body = {
        "cardid": "10000",
        "cardnum": "1",
        "ordercash": 98.7,
        "cardname": "China Mobile 100",
        "sporder_id": SPORDER,
        "uorderid": ATTEMPT,
        "game_userid": PHONE,
        "game_state": game_state,
    }
    body.update(result)
    return js({"reason": "订单提交成功", "result": body, "error_code": 0})


def failure(code: int, reason: str = "error") -> httpx.Response:
    return js({"reason": reason, "result": None, "error_code": code})


# ------------------------------------------------------------- loading


def test_the_plugin_loads_from_plugins_dir_and_validates(tmp_path: Path) -> None:
    validate_plugin(JuhePlugin, "juhe", str(ROOT / "plugins" / "juhe.py"))
    (tmp_path / "plugins").mkdir()
    shutil.copy(ROOT / "plugins" / "juhe.py", tmp_path / "plugins" / "juhe.py")
    plugins = load_plugins(tmp_path / "plugins")
    assert plugins["juhe"].name == "juhe"
    assert set(plugins["juhe"].required_credentials) == {"appkey", "openid"}
    schedule = plugins["juhe"].schedule
    assert (schedule.first_query_s, schedule.not_found_grace_s, schedule.resubmit_safe) == (60, 300, False)


def test_the_example_supplier_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / "suppliers.d" / "examples" / "juhe.yaml.example"
    text = example.read_text()
    assert "/etc/kamen-router/juhe.openid" in text
    (tmp_path / "juhe-main.yaml").write_text(text.replace("/etc/kamen-router/juhe.openid", "juhe.openid"))
    (tmp_path / "juhe.openid").write_text(OPENID + "\n")
    monkeypatch.setenv("JUHE_APPKEY", APPKEY)
    sink: list[Problem] = []
    supplier = read_supplier(tmp_path / "juhe-main.yaml", sink, {"juhe": JuhePlugin})
    assert sink == [] and supplier is not None
    assert supplier.credentials["openid"].reveal() == OPENID
    assert supplier.offers["mobile-cmcc-100"].product_id == "100"
    JuhePlugin(SupplierContext(supplier, supplier.endpoint or "", httpx.AsyncClient()))


def test_missing_credentials_and_bad_product_ids_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        JuhePlugin(
            SupplierContext(
                make_supplier(credentials={"appkey": APPKEY}, offers={"mobile-cmcc-100": "CM100"}),
                ENDPOINT,
                httpx.AsyncClient(),
            )
        )
    keys = {p.key for p in info.value.problems}
    assert keys == {"credentials.openid", "offers.mobile-cmcc-100.product_id"}
    assert APPKEY not in str(info.value)


# ---------------------------------------------------------- signatures


def test_order_signature_vector() -> None:
    """Worked from the spec: sign = md5(OpenID + key + phoneno + cardnum + orderid).

    OpenID   JH0123456789abcdef0123456789abcd
    key      9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90
    phoneno  13800138000
    cardnum  100
    orderid  KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001

    string hashed (UTF-8, all ASCII):
    JH0123456789abcdef0123456789abcd9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9013800138000100KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001
    md5 (by `printf '%s' ... | md5sum`): 1b2ce2f6a3baf18aa02d51226a7922ea
    """
    expected = "1b2ce2f6a3baf18aa02d51226a7922ea"
    string = (
        "JH0123456789abcdef0123456789abcd9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90"
        "13800138000100KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001"
    )
    assert hashlib.md5(string.encode()).hexdigest() == expected
    assert juhe.order_sign(OPENID, APPKEY, PHONE, "100", ATTEMPT) == expected


def test_balance_signature_vector() -> None:
    """sign = md5(OpenID + key + timestamp), timestamp 1714536000:
    "JH0123456789abcdef0123456789abcd" "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90" "1714536000"
    -> cd939383ec338e8176cc77a98f39852e"""
    expected = "cd939383ec338e8176cc77a98f39852e"
    assert hashlib.md5((OPENID + APPKEY + "1714536000").encode()).hexdigest() == expected
    assert juhe.balance_sign(OPENID, APPKEY, "1714536000") == expected


def test_callback_signature_vector() -> None:
    """sign = md5(appkey + sporder_id + orderid):
    "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90" "J202405011200001234" "KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001"
    -> 04e28f39b8fdfff4cf0594abc90e5d7d (sta is not part of it)"""
    expected = "04e28f39b8fdfff4cf0594abc90e5d7d"
    assert hashlib.md5((APPKEY + SPORDER + ATTEMPT).encode()).hexdigest() == expected
    assert juhe.callback_sign(APPKEY, SPORDER, ATTEMPT) == expected


# ------------------------------------------------------- what is sent


async def test_submit_sends_the_signed_form_under_the_attempt_key() -> None:
    async with plugin_with(accepted(0)) as (plugin, upstream):
        await plugin.submit(order())
    sent = upstream.requests[0]
    assert sent.method == "POST"
    assert sent.url.path == "/ofpay/mobile/onlineorder"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert not sent.url.query  # the key travels in the body, not the URL
    assert upstream.form() == {
        "key": APPKEY,
        "phoneno": PHONE,
        "cardnum": "100",
        "orderid": ATTEMPT,
        "sign": "1b2ce2f6a3baf18aa02d51226a7922ea",
    }


async def test_resubmitting_an_attempt_sends_the_same_order_number() -> None:
    async with plugin_with(failure(10012, "请求超过次数限制")) as (plugin, upstream):
        first = await plugin.submit(order())
        second = await plugin.submit(order())
    assert isinstance(first, RateLimited) and isinstance(second, RateLimited)
    assert upstream.requests[0].content == upstream.requests[1].content
    assert upstream.form(0)["orderid"] == upstream.form(1)["orderid"] == ATTEMPT


async def test_query_asks_by_the_attempt_key() -> None:
    async with plugin_with(js({"error_code": 0, "result": {"game_state": "0"}})) as (plugin, upstream):
        await plugin.query(order())
    sent = upstream.requests[0]
    assert sent.method == "GET" and sent.url.path == "/ofpay/mobile/ordersta"
    assert dict(sent.url.params) == {"key": APPKEY, "orderid": ATTEMPT}


async def test_balance_sends_a_signed_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(juhe.time, "time", lambda: 1714536000.25)
    reply = js({"error_code": 0, "reason": "ok", "result": {"uid": "1", "money": "1234.56"}})
    async with plugin_with(reply) as (plugin, upstream):
        assert await plugin.balance() == Decimal("1234.56")
    assert dict(upstream.requests[0].url.params) == {
        "key": APPKEY,
        "timestamp": "1714536000",
        "sign": "cd939383ec338e8176cc77a98f39852e",
    }


# ------------------------------------------------------------- mapping

DELIVERED = Delivered(Deliverables(receipt=SPORDER), unit_cost=Decimal("98.7"), supplier_ref=SPORDER)

SUBMIT_CASES: list[tuple[str, httpx.Response, Any]] = [
    ("0 in progress", accepted(0), Pending(supplier_ref=SPORDER)),
    ("0 in progress, as a string", accepted("0"), Pending(supplier_ref=SPORDER)),
    ("0 done", accepted(1), DELIVERED),
    ("0 failed", accepted(9), Failed),
    ("0 unknown game_state", accepted(5), Unknown),
    ("0 no game_state", accepted(None), Unknown),
    ("0 done without sporder_id", accepted(1, sporder_id=None), Unknown),
    ("0 another orderid", accepted(0, uorderid="KROTHER00000000000000000000A0001"), Unknown),
    ("0 another number", accepted(1, game_userid="13900139000"), Unknown),
    ("0 another quantity", accepted(1, cardnum="2"), Unknown),
    ("0 the face value as quantity", accepted(1, cardnum="100"), Unknown),
    ("0 without a result", js({"error_code": 0, "reason": "ok"}), Unknown),
    ("10001 wrong key", failure(10001), Rejected(RejectReason.AUTH, "error")),
    ("10002 no permission", failure(10002), Rejected(RejectReason.AUTH, "error")),
    ("10003 key expired", failure(10003), Rejected(RejectReason.AUTH, "error")),
    ("10004 wrong openid", failure(10004), Rejected(RejectReason.AUTH, "error")),
    ("10005 not approved", failure(10005), Rejected(RejectReason.AUTH, "error")),
    ("10007 unknown source", failure(10007), Rejected(RejectReason.AUTH, "error")),
    ("10008 ip banned", failure(10008), Rejected(RejectReason.AUTH, "error")),
    ("10009 key banned", failure(10009), Rejected(RejectReason.AUTH, "error")),
    ("10011 ip limit", failure(10011), RateLimited(None, "error")),
    ("10012 request limit", failure(10012), RateLimited(None, "error")),
    ("10013 test key limit", failure(10013), RateLimited(None, "error")),
    ("10014 system error", failure(10014), Unknown),
    ("10020 maintenance", failure(10020), Rejected(RejectReason.MAINTENANCE, "error")),
    ("10021 api disabled", failure(10021), Rejected(RejectReason.AUTH, "error")),
    ("business code", failure(208509, "商家订单号重复"), Unknown),
    ("undocumented code", failure(31337), Unknown),
    ("error_code as a string", js({"error_code": "10001", "reason": "error"}), Rejected),
    ("no error_code", js({"reason": "?"}), Unknown),
    ("not JSON", httpx.Response(200, content=b"<html>busy</html>"), Unknown),
    ("JSON array", httpx.Response(200, content=b"[0]"), Unknown),
    ("empty body", httpx.Response(200, content=b""), Unknown),
    ("HTTP 500 with a success body", js({"error_code": 0, "result": {"game_state": 1}}, 500), Unknown),
    ("HTTP 502", httpx.Response(502, content=b"Bad Gateway"), Unknown),
    ("HTTP 404 with a refusal body", httpx.Response(404, json={"error_code": 10001}), Unknown),
    ("HTTP 404", httpx.Response(404, content=b"not found"), Unknown),
]


def check(outcome: Any, expected: Any) -> None:
    if isinstance(expected, type):
        assert isinstance(outcome, expected), outcome
    else:
        assert outcome == expected


@pytest.mark.parametrize(("case", "reply", "expected"), SUBMIT_CASES, ids=[c[0] for c in SUBMIT_CASES])
async def test_submit_maps_every_reply(case: str, reply: httpx.Response, expected: Any) -> None:
    async with plugin_with(reply) as (plugin, _):
        check(await plugin.submit(order()), expected)


QUERY_CASES: list[tuple[str, httpx.Response, Any]] = [
    ("in progress", js({"error_code": 0, "result": {"game_state": "0", "sporder_id": SPORDER}}), Pending),
    (
        "done",
        js({"error_code": 0, "result": {"game_state": "1", "sporder_id": SPORDER, "uordercash": "98.7"}}),
        DELIVERED,
    ),
    ("failed", js({"error_code": 0, "result": {"game_state": 9, "sporder_id": SPORDER}}), Failed),
    ("unknown state", js({"error_code": 0, "result": {"game_state": "2"}}), Unknown),
    ("done without sporder_id", js({"error_code": 0, "result": {"game_state": "1"}}), Unknown),
    ("rate limited", failure(10012), RateLimited),
    ("auth refusal says nothing of the order", failure(10001), Unknown),
    ("maintenance says nothing of the order", failure(10020), Unknown),
    ("business code (not found is undocumented)", failure(208516), Unknown),
    ("system error", failure(10014), Unknown),
    ("garbage", httpx.Response(200, content=b"\xff\xfe"), Unknown),
    ("HTTP 503", httpx.Response(503), Unknown),
]


@pytest.mark.parametrize(("case", "reply", "expected"), QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
async def test_query_maps_every_reply(case: str, reply: httpx.Response, expected: Any) -> None:
    async with plugin_with(reply) as (plugin, _):
        check(await plugin.query(order()), expected)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (order(quantity=2), InvalidReason.INVALID_QUANTITY),
        (order(account=None), InvalidReason.MISSING_FIELD),
        (order(account="1380013800"), InvalidReason.INVALID_ACCOUNT),
        (order(account="+8613800138000"), InvalidReason.INVALID_ACCOUNT),
    ],
)
async def test_orders_juhe_cannot_take_are_invalid_and_never_sent(
    request_: SubmitRequest, reason: InvalidReason
) -> None:
    async with plugin_with(accepted(0)) as (plugin, upstream):
        outcome = await plugin.submit(request_)
    assert isinstance(outcome, Invalid) and outcome.reason is reason
    assert upstream.requests == []


async def test_a_product_id_that_is_no_face_value_is_rejected_unsent() -> None:
    async with plugin_with(accepted(0)) as (plugin, upstream):
        outcome = await plugin.submit(order(product_id="CM100"))
    assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.PRODUCT_UNAVAILABLE
    assert upstream.requests == []


async def test_nothing_sent_is_supplier_unreachable() -> None:
    async with plugin_with(httpx.ConnectError("connection refused")) as (plugin, _):
        with pytest.raises(SupplierUnreachable):
            await plugin.submit(order())
        with pytest.raises(SupplierUnreachable):
            await plugin.query(order())


async def test_a_read_timeout_propagates_and_is_not_unreachable() -> None:
    async with plugin_with(httpx.ReadTimeout("timed out")) as (plugin, _):
        with pytest.raises(httpx.ReadTimeout):
            await plugin.submit(order())
        with pytest.raises(httpx.ReadTimeout):
            await plugin.query(order())


@pytest.mark.parametrize(
    "reply",
    [
        failure(10001),
        js({"error_code": 0, "result": {"uid": "1"}}),
        js({"error_code": 0, "result": {"money": "-5"}}),
        httpx.Response(502),
    ],
)
async def test_an_unusable_balance_raises(reply: httpx.Response) -> None:
    async with plugin_with(reply) as (plugin, _):
        with pytest.raises(juhe.JuheReplyError) as info:
            await plugin.balance()
    assert APPKEY not in str(info.value) and OPENID not in str(info.value)


# ------------------------------------------------------------ callbacks


def callback(body: dict[str, str] | str, method: str = "POST") -> Request:
    raw = body if isinstance(body, str) else urllib.parse.urlencode(body)
    return Request(
        method=method,
        path="/callbacks/juhe-main",
        query={},
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=raw.encode(),
    )


def signed(sta: str, *, sporder_id: str = SPORDER, orderid: str = ATTEMPT) -> dict[str, str]:
    return {
        "sporder_id": sporder_id,
        "orderid": orderid,
        "sta": sta,
        "sign": hashlib.md5((APPKEY + sporder_id + orderid).encode()).hexdigest(),
    }


def callback_plugin() -> Any:
    return JuhePlugin(SupplierContext(make_supplier(), ENDPOINT, httpx.AsyncClient()))


def test_a_signed_success_callback_is_delivered() -> None:
    parsed = callback_plugin().parse_callback(callback(signed("1")))
    assert parsed.attempt_key == ATTEMPT
    assert parsed.outcome == Delivered(Deliverables(receipt=SPORDER), supplier_ref=SPORDER)
    assert parsed.supplier_ref == SPORDER and parsed.sent_at is None


def test_a_signed_failure_callback_is_only_pending_since_sta_is_not_signed() -> None:
    parsed = callback_plugin().parse_callback(callback({**signed("9"), "err_msg": "充值失败"}))
    assert parsed.attempt_key == ATTEMPT
    assert isinstance(parsed.outcome, Pending)


def test_an_unknown_sta_is_pending() -> None:
    assert isinstance(callback_plugin().parse_callback(callback(signed("7"))).outcome, Pending)


@pytest.mark.parametrize(
    "body",
    [
        {**signed("1"), "orderid": "KROTHER00000000000000000000A0001"},  # tampered order number
        {**signed("1"), "sporder_id": "J999"},  # tampered supplier order number
        {**signed("1"), "sign": "0" * 32},
        {**signed("1"), "sign": hashlib.md5(("wrong-key" + SPORDER + ATTEMPT).encode()).hexdigest()},
        {**signed("1"), "sign": "签名"},
    ],
)
def test_a_forged_callback_is_rejected(body: dict[str, str]) -> None:
    with pytest.raises(CallbackRejected) as info:
        callback_plugin().parse_callback(callback(body))
    assert info.value.reason == "bad_signature"
    assert APPKEY not in str(info.value)


@pytest.mark.parametrize(
    "request_",
    [
        callback({"sporder_id": SPORDER, "orderid": ATTEMPT, "sta": "1"}),  # no sign
        callback("sporder_id=a&sporder_id=b&orderid=x&sta=1&sign=y"),  # repeated field
        callback(signed("1"), method="GET"),
        callback(signed("1", orderid="short")),  # signed, but no attempt key
        Request(method="POST", path="/callbacks/juhe-main", query={}, headers={}, body=b"\xff\xfe"),
    ],
)
def test_a_malformed_callback_is_rejected(request_: Request) -> None:
    with pytest.raises(CallbackRejected) as info:
        callback_plugin().parse_callback(request_)
    assert info.value.reason == "malformed"


def test_callback_replies_are_juhes() -> None:
    plugin = callback_plugin()
    ok = plugin.callback_reply(True)
    assert (ok.status, ok.body) == (200, b"success")
    # Juhe takes any text as received; only an empty answer is retried
    refused = plugin.callback_reply(False)
    assert refused.status >= 500 and refused.body == b""


# -------------------------------------------------------------- secrets


async def test_no_credential_reaches_a_repr_a_message_or_a_detail() -> None:
    supplier = make_supplier()
    echo = failure(208599, f"bad key {APPKEY} for {OPENID}")
    async with plugin_with(echo) as (plugin, _):
        outcome = await plugin.submit(order())
        query = await plugin.query(order())
    assert isinstance(outcome, Unknown)
    assert "***" in outcome.detail
    texts = [repr(plugin), str(plugin), repr(supplier), repr(outcome), outcome.detail, repr(query)]
    with pytest.raises(CallbackRejected) as rejected:
        callback_plugin().parse_callback(callback({**signed("1"), "sign": "0" * 32}))
    texts.append(str(rejected.value))
    with pytest.raises(ConfigError) as config:
        JuhePlugin(
            SupplierContext(make_supplier(credentials={"appkey": APPKEY}), ENDPOINT, httpx.AsyncClient())
        )
    texts.append(str(config.value))
    for text in texts:
        assert APPKEY not in text and OPENID not in text, text
