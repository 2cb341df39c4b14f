"""The ``ofpay`` plugin (plugins/ofpay.py): signature vectors worked out from
the protocol, the mapping of every documented reply through the real plugin
methods (the Ofpay side is faked with httpx.MockTransport), the requests it
sends, safe XML, its callbacks, and that no credential leaks."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import urllib.parse
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
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
    NotFound,
    Pending,
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

ofpay = load_plugin_module("ofpay")
OfpayPlugin = ofpay.OfpayPlugin

USERID = "A923357"
PASSWORD = "test-pass-42"
USERPWS = "d677a7d7fc825385a997defb2e94116a"  # printf '%s' test-pass-42 | md5sum
ATTEMPT = "KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001"
PHONE = "13800138000"
ENDPOINT = "http://api2.ofpay.test"
OFPAY_ORDER = "S2405011200001"
#: 2024-05-01 12:00:00 in Beijing (04:00:00 UTC)
STARTED = 1714536000.0


@attrs.frozen
class TimedRequest(SubmitRequest):
    """A SubmitRequest carrying the attempt's start time, as proposed for the core."""

    started_at: float = 0.0


def make_supplier(
    *, credentials: dict[str, str] | None = None, offers: dict[str, str] | None = None
) -> SupplierConfig:
    creds = {"userid": USERID, "password": PASSWORD} if credentials is None else credentials
    products = {"mobile-cmcc-100": "140101:100", "mobile-cmcc-50": "140101:50"} if offers is None else offers
    return supplier_config(
        "ofpay-main",
        "ofpay",
        creds,
        {sku: (pid, "99.30") for sku, pid in products.items()},
        endpoint=ENDPOINT,
    )


def order(
    key: str = ATTEMPT,
    *,
    account: str | None = PHONE,
    quantity: int = 1,
    product_id: str = "140101:100",
    fields: dict[str, str] | None = None,
    started_at: float | None = STARTED,
) -> SubmitRequest:
    values: dict[str, Any] = dict(
        attempt_key=key,
        order_id="shop-2002",
        sku="mobile-cmcc-100",
        product_id=product_id,
        quantity=quantity,
        unit_price=Decimal("99.30"),
        max_price=Decimal("99.50"),
        account=account,
        fields=fields or {},
        callback_url="https://shop.example/callbacks/ofpay-main",
    )
    if started_at is None:
        return SubmitRequest(**values)
    return TimedRequest(**values, started_at=started_at)


Reply = Answer


class Upstream(Canned):
    """The faked Ofpay side: a canned reply, and every request received."""

    def form(self, index: int = -1) -> dict[str, str]:
        text = self.requests[index].content.decode("ascii")
        return dict(urllib.parse.parse_qsl(text, encoding="gbk"))


@contextlib.asynccontextmanager
async def plugin_with(
    reply: Reply, supplier: SupplierConfig | None = None
) -> AsyncIterator[tuple[Any, Upstream]]:
    upstream = Upstream(reply)
    async with mock_client(upstream) as http:
        with trio.fail_after(5):
            yield OfpayPlugin(SupplierContext(supplier or make_supplier(), ENDPOINT, http)), upstream


def xml(root: str, fields: dict[str, str], encoding: str = "GB2312") -> httpx.Response:
    body = f'<?xml version="1.0" encoding="{encoding}" ?><{root}>'
    body += "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    body += f"</{root}>"
    codec = "utf-8" if encoding.lower() == "utf-8" else "gbk"
    return httpx.Response(
        200, content=body.encode(codec), headers={"content-type": f"text/xml; charset={encoding}"}
    )


def orderinfo(retcode: str = "1", game_state: str | None = "0", **changes: str | None) -> httpx.Response:
    fields: dict[str, str | None] = {
        "retcode": retcode,
        "err_msg": "",
        "orderid": OFPAY_ORDER,
        "cardid": "140101",
        "cardnum": "100",
        "ordercash": "99.30",
        "cardname": "广东移动话费100元直充",
        "sporder_id": ATTEMPT,
        "game_userid": PHONE,
        "game_state": game_state,
    }
    fields.update(changes)
    return xml("orderinfo", {k: v for k, v in fields.items() if v is not None})


def refusal(retcode: str, err_msg: str = "") -> httpx.Response:
    return xml("orderinfo", {"retcode": retcode, "err_msg": err_msg})


# ------------------------------------------------------------- loading


def test_the_plugin_loads_from_plugins_dir_and_validates(tmp_path: Path) -> None:
    validate_plugin(OfpayPlugin, "ofpay", str(ROOT / "plugins" / "ofpay.py"))
    (tmp_path / "plugins").mkdir()
    shutil.copy(ROOT / "plugins" / "ofpay.py", tmp_path / "plugins" / "ofpay.py")
    plugins = load_plugins(tmp_path / "plugins")
    assert plugins["ofpay"].name == "ofpay"
    assert set(plugins["ofpay"].required_credentials) == {"userid", "password"}
    schedule = plugins["ofpay"].schedule
    assert (schedule.first_query_s, schedule.not_found_grace_s, schedule.resubmit_safe) == (60, 300, False)


def test_the_example_supplier_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "suppliers.d" / "examples" / "ofpay.yaml.example").read_text()
    assert "/etc/kamen-router/ofpay.password" in text
    (tmp_path / "ofpay-main.yaml").write_text(text.replace("/etc/kamen-router/ofpay.password", "ofpay.pw"))
    (tmp_path / "ofpay.pw").write_text(PASSWORD + "\n")
    monkeypatch.setenv("OFPAY_USERID", USERID)
    sink: list[Problem] = []
    supplier = read_supplier(tmp_path / "ofpay-main.yaml", sink, {"ofpay": OfpayPlugin})
    assert sink == [] and supplier is not None
    assert supplier.credentials["password"].reveal() == PASSWORD
    assert supplier.offers["mobile-cmcc-100"].product_id == "140101:100"
    OfpayPlugin(SupplierContext(supplier, supplier.endpoint or "", httpx.AsyncClient()))


def test_missing_credentials_and_bad_product_ids_are_config_errors() -> None:
    supplier = make_supplier(credentials={"userid": USERID}, offers={"mobile-cmcc-100": "100"})
    with pytest.raises(ConfigError) as info:
        OfpayPlugin(SupplierContext(supplier, ENDPOINT, httpx.AsyncClient()))
    assert {p.key for p in info.value.problems} == {
        "credentials.password",
        "offers.mobile-cmcc-100.product_id",
    }


# ---------------------------------------------------------- signatures


def test_order_signature_vector() -> None:
    """Worked from the spec: md5_str = UPPER(md5(userid + userpws + cardid +
    cardnum + sporder_id + sporder_time + game_userid + KeyStr)).

    userid        A923357
    userpws       d677a7d7fc825385a997defb2e94116a   (md5 of "test-pass-42")
    cardid        140101
    cardnum       100
    sporder_id    KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001
    sporder_time  20240501120000
    game_userid   13800138000
    KeyStr        OFCARD (the default)

    string hashed:
    A923357d677a7d7fc825385a997defb2e94116a140101100KR7QW2ZK4D3MNB5XH6TPLC2RJYAB00012024050112000013800138000OFCARD
    md5, upper-cased (by `printf '%s' ... | md5sum | tr a-f A-F`): D214F9A5ED4B06C58A3E0BABD3CAABCA
    """
    expected = "D214F9A5ED4B06C58A3E0BABD3CAABCA"
    assert hashlib.md5(PASSWORD.encode()).hexdigest() == USERPWS
    string = (
        "A923357d677a7d7fc825385a997defb2e94116a140101100"
        "KR7QW2ZK4D3MNB5XH6TPLC2RJYAB00012024050112000013800138000OFCARD"
    )
    assert hashlib.md5(string.encode()).hexdigest().upper() == expected
    assert (
        ofpay.order_sign(
            userid=USERID,
            userpws=ofpay.password_hash(PASSWORD),
            cardid="140101",
            cardnum="100",
            sporder_id=ATTEMPT,
            sporder_time="20240501120000",
            game_userid=PHONE,
            keystr="OFCARD",
        )
        == expected
    )


def test_callback_signature_vector() -> None:
    """sign = UPPER(md5(userid + ret_code + sporder_id + KeyStr)):
    "A923357" "1" "KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0001" "OFCARD" -> C0E9BCFB417B89FFC05BD6E99C6BBA94
    and with ret_code 9 -> C0D3FF56A2604D18FE13B84BB5AFB540"""
    assert hashlib.md5(f"A9233571{ATTEMPT}OFCARD".encode()).hexdigest().upper() == (
        "C0E9BCFB417B89FFC05BD6E99C6BBA94"
    )
    assert ofpay.callback_sign(USERID, "1", ATTEMPT, "OFCARD") == "C0E9BCFB417B89FFC05BD6E99C6BBA94"
    assert ofpay.callback_sign(USERID, "9", ATTEMPT, "OFCARD") == "C0D3FF56A2604D18FE13B84BB5AFB540"


def test_sporder_time_is_beijing_time() -> None:
    assert ofpay.format_sporder_time(STARTED) == "20240501120000"


# ------------------------------------------------------- what is sent


async def test_submit_sends_the_signed_form_under_the_attempt_key() -> None:
    async with plugin_with(orderinfo()) as (plugin, upstream):
        await plugin.submit(order())
    sent = upstream.requests[0]
    assert sent.method == "POST" and sent.url.path == "/onlineorder.do"
    assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert not sent.url.query  # the password hash stays out of the URL
    assert upstream.form() == {
        "userid": USERID,
        "userpws": USERPWS,
        "cardid": "140101",
        "cardnum": "100",
        "sporder_id": ATTEMPT,
        "sporder_time": "20240501120000",
        "game_userid": PHONE,
        "md5_str": "D214F9A5ED4B06C58A3E0BABD3CAABCA",
        "ret_url": "https://shop.example/callbacks/ofpay-main",
        "version": "6.0",
    }


async def test_game_area_and_server_are_sent_and_signed_as_gbk() -> None:
    async with plugin_with(orderinfo()) as (plugin, upstream):
        await plugin.submit(order(fields={"game_area": "电信一区", "game_srv": "艾欧尼亚"}))
    form = upstream.form()
    assert (form["game_area"], form["game_srv"]) == ("电信一区", "艾欧尼亚")
    string = f"{USERID}{USERPWS}140101100{ATTEMPT}20240501120000{PHONE}电信一区艾欧尼亚OFCARD"
    assert form["md5_str"] == hashlib.md5(string.encode("gbk")).hexdigest().upper()


async def test_a_custom_keystr_signs() -> None:
    supplier = make_supplier(credentials={"userid": USERID, "password": PASSWORD, "keystr": "K3yStr-99"})
    async with plugin_with(orderinfo(), supplier) as (plugin, upstream):
        await plugin.submit(order())
    string = f"{USERID}{USERPWS}140101100{ATTEMPT}20240501120000{PHONE}K3yStr-99"
    assert upstream.form()["md5_str"] == hashlib.md5(string.encode()).hexdigest().upper()


async def test_resubmitting_an_attempt_sends_the_same_order_number_and_time() -> None:
    """Without a start time from the core, the first submit's time is kept
    for the attempt, so a retry signs the same sporder_time."""
    async with plugin_with(refusal("9999")) as (plugin, upstream):
        now = [STARTED]
        plugin.clock = lambda: now[0]
        await plugin.submit(order(started_at=None))
        now[0] += 61.0
        await plugin.submit(order(started_at=None))
        now[0] += 3539.0
        await plugin.submit(order("KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0002", started_at=None))
    first, second, other = (upstream.form(i) for i in range(3))
    assert first == second
    assert first["sporder_id"] == ATTEMPT and first["sporder_time"] == "20240501120000"
    assert other["sporder_time"] == "20240501130000"


async def test_query_asks_by_the_attempt_key() -> None:
    async with plugin_with(httpx.Response(200, content=b"0")) as (plugin, upstream):
        await plugin.query(order())
    sent = upstream.requests[0]
    assert sent.method == "GET" and sent.url.path == "/api/query.do"
    assert dict(sent.url.params) == {"userid": USERID, "spbillid": ATTEMPT}


async def test_balance_reads_the_left_credit() -> None:
    reply = xml(
        "userinfo",
        {"err_msg": "", "retcode": "1", "ret_leftcredit": "352328.97", "userid": USERID},
    )
    async with plugin_with(reply) as (plugin, upstream):
        assert await plugin.balance() == Decimal("352328.97")
    assert upstream.requests[0].url.path == "/newqueryuserinfo.do"
    assert upstream.form() == {"userid": USERID, "userpws": USERPWS, "version": "6.0"}


@pytest.mark.parametrize(
    "reply",
    [
        xml("userinfo", {"retcode": "1001", "err_msg": "用户名或密码错误"}),
        xml("userinfo", {"retcode": "1"}),
        xml("orderinfo", {"retcode": "1", "ret_leftcredit": "5"}),
        httpx.Response(500),
        httpx.Response(200, content=b"not xml"),
    ],
)
async def test_an_unusable_balance_raises(reply: httpx.Response) -> None:
    async with plugin_with(reply) as (plugin, _):
        with pytest.raises(ofpay.OfpayReplyError) as info:
            await plugin.balance()
    for secret in (PASSWORD, USERPWS):
        assert secret not in str(info.value)


# ------------------------------------------------------------- mapping

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b"<orderinfo><retcode>1</retcode><game_state>&lol2;</game_state></orderinfo>"
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE o [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<orderinfo><retcode>&x;</retcode></orderinfo>"
)

UNDEFINED = b"<orderinfo><retcode>&x;</retcode></orderinfo>"

SUBMIT_CASES: list[tuple[str, httpx.Response, Any]] = [
    ("1 in progress", orderinfo(), Pending(supplier_ref=OFPAY_ORDER)),
    (
        "1 done",
        orderinfo(game_state="1"),
        Delivered(Deliverables(receipt=OFPAY_ORDER), unit_cost=Decimal("99.30"), supplier_ref=OFPAY_ORDER),
    ),
    ("1 failed", orderinfo(game_state="9"), Failed),
    ("1 unknown game_state", orderinfo(game_state="5"), Unknown),
    ("1 no game_state", orderinfo(game_state=None), Unknown),
    ("1 done without orderid", orderinfo(game_state="1", orderid=None), Unknown),
    ("1 another sporder_id", orderinfo(game_state="1", sporder_id="KR0THER"), Unknown),
    ("1 another number", orderinfo(game_state="1", game_userid="13900139000"), Unknown),
    ("1 another product", orderinfo(game_state="1", cardid="170101"), Unknown),
    ("1 another face value", orderinfo(game_state="1", cardnum="50"), Unknown),
    ("1 face value with decimals", orderinfo(cardnum="100.00"), Pending(supplier_ref=OFPAY_ORDER)),
    ("9999 unknown error", refusal("9999", "未知错误"), Unknown),
    ("105 request failed", refusal("105"), Unknown),
    ("334 creation timed out", refusal("334", "订单生成超时"), Unknown),
    ("1043 payment timed out", refusal("1043"), Unknown),
    (
        "1004 product unavailable",
        refusal("1004", "此商品暂不可用"),
        Rejected(RejectReason.PRODUCT_UNAVAILABLE, "此商品暂不可用"),
    ),
    (
        "1018 bad account",
        refusal("1018", "充值号码有误"),
        Invalid(InvalidReason.INVALID_ACCOUNT, "充值号码有误"),
    ),
    ("undocumented retcode", refusal("1005", "金额不足"), Unknown),
    ("GBK beyond GB2312 in err_msg", refusal("1004", "喆"), Rejected(RejectReason.PRODUCT_UNAVAILABLE, "喆")),
    ("UTF-8 declared", xml("orderinfo", {"retcode": "1004", "err_msg": "此商品暂不可用"}, "UTF-8"), Rejected),
    (
        "two different retcodes",
        httpx.Response(200, content=b"<orderinfo><retcode>1004</retcode><retcode>1</retcode></orderinfo>"),
        Unknown,
    ),
    ("no retcode", xml("orderinfo", {"err_msg": "?"}), Unknown),
    ("another root", xml("userinfo", {"retcode": "1"}), Unknown),
    ("a DTD with entities", httpx.Response(200, content=LAUGHS), Unknown),
    ("an external entity", httpx.Response(200, content=EXTERNAL), Unknown),
    (
        "an undefined entity",
        httpx.Response(200, content=b"<orderinfo><retcode>&x;</retcode></orderinfo>"),
        Unknown,
    ),
    ("not XML", httpx.Response(200, content=b"<html>busy"), Unknown),
    ("empty", httpx.Response(200, content=b""), Unknown),
    ("too large", httpx.Response(200, content=b"<orderinfo>" + b" " * 70000 + b"</orderinfo>"), Unknown),
    ("HTTP 500 with a success body", httpx.Response(500, content=orderinfo(game_state="1").content), Unknown),
    ("HTTP 502", httpx.Response(502, content=b"Bad Gateway"), Unknown),
    ("HTTP 404 with a refusal body", httpx.Response(404, content=refusal("1004").content), Unknown),
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


QUERY_CASES: list[tuple[str, bytes, int, Any]] = [
    ("1 success", b"1", 200, Delivered(Deliverables())),
    ("0 in progress", b"0", 200, Pending()),
    ("9 failed", b"9", 200, Failed),
    ("-1 not found", b"-1", 200, NotFound),
    ("with a line end", b"1\r\n", 200, Delivered(Deliverables())),
    ("undocumented", b"2", 200, Unknown),
    ("empty", b"", 200, Unknown),
    ("XML", orderinfo().content, 200, Unknown),
    ("HTTP 500", b"1", 500, Unknown),
    ("HTTP 404", b"-1", 404, Unknown),
]


@pytest.mark.parametrize(("case", "body", "status", "expected"), QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
async def test_query_maps_every_reply(case: str, body: bytes, status: int, expected: Any) -> None:
    async with plugin_with(httpx.Response(status, content=body)) as (plugin, _):
        check(await plugin.query(order()), expected)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (order(quantity=3), InvalidReason.INVALID_QUANTITY),
        (order(account=None), InvalidReason.MISSING_FIELD),
        (order(account="138001380001"), InvalidReason.INVALID_ACCOUNT),
        (order(account="QQ 12345", product_id="220612:1"), InvalidReason.INVALID_ACCOUNT),
        (order(fields={"game_area": "🎮"}), InvalidReason.MISSING_FIELD),
    ],
)
async def test_orders_ofpay_cannot_take_are_invalid_and_never_sent(
    request_: SubmitRequest, reason: InvalidReason
) -> None:
    async with plugin_with(orderinfo()) as (plugin, upstream):
        outcome = await plugin.submit(request_)
    assert isinstance(outcome, Invalid) and outcome.reason is reason
    assert upstream.requests == []


async def test_a_product_id_of_another_shape_is_rejected_unsent() -> None:
    async with plugin_with(orderinfo()) as (plugin, upstream):
        outcome = await plugin.submit(order(product_id="100"))
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


# ------------------------------------------------------------ callbacks


def callback(body: dict[str, str] | bytes, method: str = "POST") -> Request:
    raw = body if isinstance(body, bytes) else urllib.parse.urlencode(body, encoding="gbk").encode()
    return Request(
        method=method,
        path="/callbacks/ofpay-main",
        query={},
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=raw,
    )


def signed(ret_code: str, *, sporder_id: str = ATTEMPT, keystr: str = "OFCARD") -> dict[str, str]:
    return {
        "ret_code": ret_code,
        "sporder_id": sporder_id,
        "ordersuccesstime": "20240501120130",
        "err_msg": "" if ret_code == "1" else "充值失败",
        "sign": hashlib.md5(f"{USERID}{ret_code}{sporder_id}{keystr}".encode()).hexdigest().upper(),
    }


def callback_plugin(supplier: SupplierConfig | None = None) -> Any:
    return OfpayPlugin(SupplierContext(supplier or make_supplier(), ENDPOINT, httpx.AsyncClient()))


def test_a_signed_success_callback_is_delivered() -> None:
    parsed = callback_plugin().parse_callback(callback(signed("1")))
    assert parsed.attempt_key == ATTEMPT
    assert parsed.outcome == Delivered(Deliverables())
    assert parsed.sent_at is None  # ordersuccesstime is not signed


def test_a_signed_failure_callback_is_failed() -> None:
    parsed = callback_plugin().parse_callback(callback(signed("9")))
    assert parsed.attempt_key == ATTEMPT
    assert isinstance(parsed.outcome, Failed)
    assert "充值失败" in parsed.outcome.detail


@pytest.mark.parametrize("ret_code", ["0", "2"])
def test_other_signed_states_are_pending(ret_code: str) -> None:
    assert isinstance(callback_plugin().parse_callback(callback(signed(ret_code))).outcome, Pending)


def test_a_lower_case_sign_and_our_own_userid_are_accepted() -> None:
    body = {**signed("1"), "userid": USERID}
    body["sign"] = body["sign"].lower()
    assert isinstance(callback_plugin().parse_callback(callback(body)).outcome, Delivered)


def test_a_custom_keystr_verifies_callbacks() -> None:
    supplier = make_supplier(credentials={"userid": USERID, "password": PASSWORD, "keystr": "K3yStr-99"})
    plugin = callback_plugin(supplier)
    assert isinstance(plugin.parse_callback(callback(signed("1", keystr="K3yStr-99"))).outcome, Delivered)
    with pytest.raises(CallbackRejected):
        plugin.parse_callback(callback(signed("1")))


@pytest.mark.parametrize(
    "body",
    [
        {**signed("1"), "ret_code": "9"},  # a success turned into a failure
        {**signed("9"), "ret_code": "1"},  # a failure turned into a success
        {**signed("1"), "sporder_id": "KR7QW2ZK4D3MNB5XH6TPLC2RJYAB0002"},  # another order
        {**signed("1"), "sign": "0" * 32},
        signed("1", keystr="NOTOURKEY"),
        {**signed("1"), "ret_code": "１"},  # a full-width digit
    ],
)
def test_a_forged_callback_is_rejected(body: dict[str, str]) -> None:
    with pytest.raises(CallbackRejected) as info:
        callback_plugin().parse_callback(callback(body))
    assert info.value.reason == "bad_signature"


def test_a_callback_for_another_merchant_is_rejected() -> None:
    with pytest.raises(CallbackRejected) as info:
        callback_plugin().parse_callback(callback({**signed("1"), "userid": "A000001"}))
    assert info.value.reason == "unknown_merchant"


@pytest.mark.parametrize(
    "request_",
    [
        callback({"ret_code": "1", "sporder_id": ATTEMPT}),  # no sign
        callback(b"ret_code=1&ret_code=9&sporder_id=x&sign=y"),  # repeated field
        callback(signed("1"), method="GET"),
        callback(signed("1", sporder_id="KR-not/a key")),  # signed, but no attempt key
    ],
)
def test_a_malformed_callback_is_rejected(request_: Request) -> None:
    with pytest.raises(CallbackRejected) as info:
        callback_plugin().parse_callback(request_)
    assert info.value.reason == "malformed"


def test_callback_replies() -> None:
    plugin = callback_plugin()
    ok = plugin.callback_reply(True)
    assert (ok.status, ok.body) == (200, b"OK")
    refused = plugin.callback_reply(False)
    assert refused.status >= 500 and refused.body == b""


# -------------------------------------------------------------- secrets


async def test_no_credential_reaches_a_repr_a_message_or_a_detail() -> None:
    supplier = make_supplier(credentials={"userid": USERID, "password": PASSWORD, "keystr": "K3yStr-99"})
    echo = refusal("1005", f"{PASSWORD} {USERPWS} K3yStr-99 wrong")
    async with plugin_with(echo, supplier) as (plugin, _):
        outcome = await plugin.submit(order())
    assert isinstance(outcome, Unknown) and "***" in outcome.detail
    texts = [repr(plugin), str(plugin), repr(supplier), repr(outcome), outcome.detail]
    with pytest.raises(CallbackRejected) as rejected:
        callback_plugin(supplier).parse_callback(callback({**signed("1"), "sign": "0" * 32}))
    texts.append(str(rejected.value))
    with pytest.raises(ConfigError) as config:
        callback_plugin(make_supplier(credentials={"password": PASSWORD}))
    texts.append(str(config.value))
    for text in texts:
        for secret in (PASSWORD, USERPWS, "K3yStr-99"):
            assert secret not in text, text
