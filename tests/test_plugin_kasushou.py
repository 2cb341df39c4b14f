"""The ``kasushou`` plugin (卡速售 API v2): signatures worked out from the
spec, the reply-to-outcome mapping of every documented code and status,
the requests it sends, callbacks, and secrets kept out of errors.

The supplier side is faked with ``httpx.MockTransport``; the plugin itself
is the real one, loaded from ``plugins/`` as the daemon loads it."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from plugin_helpers import (
    PLUGINS_DIR,
    Recorder,
    answer,
    assert_no_secret,
    json_reply,
    mock_client,
    plugin_class,
    raw,
    refuse_connection,
    supplier_config,
)

from kamen_router.config import SupplierConfig
from kamen_router.errors import SupplierUnreachable
from kamen_router.http import Request
from kamen_router.outcome import (
    Card,
    Deliverables,
    Delivered,
    Failed,
    NotFound,
    Outcome,
    Pending,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.plugin import (
    CallbackRejected,
    CatalogItem,
    Plugin,
    SubmitRequest,
    SupplierContext,
    validate_plugin,
)

PLUGIN_CLS = plugin_class("kasushou")
kss: ModuleType = sys.modules[PLUGIN_CLS.__module__]

USER_ID = "2uIkTrXNdAFc7OKhbRenzjDtgPoZ6s5C"
API_KEY = "kss-secret-Q9v7Lm2Xc81"
ENDPOINT = "https://kss.example"
KEY = "KR7QXW2MZC4HJ5RT6YPB3KD2NEAB0001"  # 32 characters, like every attempt key
CALLBACK_URL = "http://127.0.0.1:9465/callbacks/kss"
TOPUP_PID, CARD_PID = "2909", "4"
PHONE = "13800138000"


def supplier() -> SupplierConfig:
    return supplier_config(
        "kss",
        "kasushou",
        {"user_id": USER_ID, "api_key": API_KEY},
        {"mobile-cmcc-100": (TOPUP_PID, "99.20"), "steam-50": (CARD_PID, "48.50")},
        endpoint=ENDPOINT,
        file="kss.yaml",
    )


def topup(key: str = KEY, *, max_price: Decimal | None = None, **kw: Any) -> SubmitRequest:
    values: dict[str, Any] = dict(
        attempt_key=key,
        order_id="order-1",
        sku="mobile-cmcc-100",
        product_id=TOPUP_PID,
        quantity=1,
        unit_price=Decimal("99.20"),
        max_price=max_price,
        account=PHONE,
        callback_url=CALLBACK_URL,
    )
    values.update(kw)
    return SubmitRequest(**values)


def card(quantity: int = 2) -> SubmitRequest:
    return topup(sku="steam-50", product_id=CARD_PID, quantity=quantity, account=None, callback_url=None)


class Upstream(Recorder):
    def __init__(self) -> None:
        super().__init__({"code": 200, "msg": "成功", "data": {}})


reply = json_reply


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Any, Upstream]]:
    upstream = Upstream()
    async with mock_client(upstream) as http:
        plugin = PLUGIN_CLS(SupplierContext(supplier(), ENDPOINT + "/", http))
        yield plugin, upstream


# ------------------------------------------------------------------ loading


def test_the_plugin_loads_and_honours_the_contract() -> None:
    cls: type[Plugin] = validate_plugin(PLUGIN_CLS, "kasushou", str(PLUGINS_DIR / "kasushou.py"))
    assert cls.name == "kasushou"
    assert set(cls.required_credentials) == {"user_id", "api_key"}
    assert cls.schedule.not_found_grace_s == 300
    assert cls.schedule.resubmit_safe is False
    assert hasattr(cls, "parse_callback") and hasattr(cls, "catalog")


# ---------------------------------------------------------------- signatures


def test_signature_matches_the_published_example() -> None:
    """The worked example of doc.kasushou.com/api/v2api/39 (签名规范).

    Body ``{"day": 10, "external_orderno": "", "ordersn":
    "D100759082558859640832"}``, keys sorted a-z, compact:

        {"day":10,"external_orderno":"","ordersn":"D100759082558859640832"}

    String to hash = 13-digit timestamp + that body + apikey:

        1696645385740{"day":10,"external_orderno":"","ordersn":"D100759082558859640832"}H0YnuPpcVtx7rQdMTbjN6932s5oDOqFa

    sha1 of it, as the doc prints it: 15b8f541eb10e3fbb33efd92c8d52d50ddca0784.
    """
    body = b'{"day":10,"external_orderno":"","ordersn":"D100759082558859640832"}'
    apikey = "H0YnuPpcVtx7rQdMTbjN6932s5oDOqFa"
    published = "15b8f541eb10e3fbb33efd92c8d52d50ddca0784"
    assert hashlib.sha1(b"1696645385740" + body + apikey.encode()).hexdigest() == published
    # the plugin's encoder sorts the keys of an unsorted object the same way
    assert kss.request_body({"ordersn": "D100759082558859640832", "day": 10, "external_orderno": ""}) == body
    assert kss.sign("1696645385740", body, apikey) == published
    # an empty body is {} and is signed as such (签名规范: data 使用 {} 参与签名)
    assert kss.request_body({}) == b"{}"


async def test_the_submit_request_is_signed_over_the_bytes_sent(
    rig: tuple[Any, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A top-up with a ceiling, sent at unix time 1700000000.123 (so the
    header ``Timestamp`` is ``1700000000123``). The body, keys sorted, ``/``
    and non-ASCII unescaped, the ceiling per unit as a string::

        {"attach":{"recharge_account":"13800138000","区服":"一区/华东"},
         "external_orderno":"<KEY>","id":2909,"quantity":1,
         "safe_price":"99.50","url":"http://127.0.0.1:9465/callbacks/kss"}

    (one line, no spaces). ``Sign`` = sha1("1700000000123" + body + apikey),
    computed here with hashlib.
    """
    plugin, upstream = rig
    monkeypatch.setattr(kss, "_now", lambda: 1700000000.123)
    answer(upstream, {"code": 200, "msg": "下单成功", "data": {"ordersn": "API1", "external_orderno": KEY}})
    request = topup(max_price=Decimal("99.5"), fields={"区服": "一区/华东"})
    assert await plugin.submit(request) == Pending(supplier_ref="API1")

    (sent,) = upstream.seen
    expected = (
        '{"attach":{"recharge_account":"13800138000","区服":"一区/华东"},'
        f'"external_orderno":"{KEY}","id":2909,"quantity":1,'
        '"safe_price":"99.50","url":"http://127.0.0.1:9465/callbacks/kss"}'
    ).encode()
    assert sent.content == expected
    assert sent.method == "POST"
    assert str(sent.url) == ENDPOINT + "/api/v1/order/buy"
    assert sent.headers["Timestamp"] == "1700000000123"
    assert sent.headers["UserId"] == USER_ID
    assert sent.headers["Content-Type"].startswith("application/json")
    assert sent.headers["Sign"] == hashlib.sha1(b"1700000000123" + expected + API_KEY.encode()).hexdigest()


async def test_every_request_is_signed_and_carries_the_attempt_key(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, {"code": 200, "msg": "成功", "data": {"balance": "1.00"}})
    await plugin.submit(card(quantity=3))
    await plugin.query(card(quantity=3))
    await plugin.balance()
    buy, info, user = upstream.seen
    for sent in (buy, info, user):
        stamp = sent.headers["Timestamp"]
        assert len(stamp) == 13 and stamp.isdigit()
        assert (
            sent.headers["Sign"] == hashlib.sha1(stamp.encode() + sent.content + API_KEY.encode()).hexdigest()
        )
        assert kss.verify_request(dict(sent.headers), sent.content, USER_ID, API_KEY)
    # a card order sends no attach, no ceiling and no notify url it was not given
    assert json.loads(buy.content) == {"external_orderno": KEY, "id": 4, "quantity": 3}
    assert json.loads(info.content) == {"external_orderno": KEY}
    assert (str(info.url), str(user.url)) == (ENDPOINT + "/api/v1/order/info", ENDPOINT + "/api/v1/user/info")
    assert user.content == b"{}"


async def test_resubmitting_an_attempt_sends_the_same_order_number(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, {"code": 500, "msg": "未知错误"})
    first = await plugin.submit(topup())
    answer(upstream, {"code": 200, "msg": "下单成功", "data": {"ordersn": "API1", "external_orderno": KEY}})
    second = await plugin.submit(topup())
    await plugin.query(topup())
    assert isinstance(first, Unknown) and isinstance(second, Pending)
    assert [b["external_orderno"] for b in upstream.bodies()] == [KEY, KEY, KEY]


# ------------------------------------------------------------ submit mapping


@pytest.mark.parametrize(
    ("status", "data", "expected"),
    [
        # 200: placed; the result comes by query or callback, never at once
        (
            200,
            {"code": 200, "msg": "下单成功", "data": {"ordersn": "API9", "external_orderno": KEY}},
            Pending("API9"),
        ),
        (200, {"code": "200", "msg": "下单成功", "data": {"ordersn": "API9"}}, Pending("API9")),
        (200, {"code": 200, "msg": "下单成功"}, Pending()),
        # a success that names another order number is not ours to trust
        (200, {"code": 200, "data": {"ordersn": "API9", "external_orderno": "KROTHER"}}, Unknown),
        # 400 is every failure, "duplicate order number" included: never a failover
        (200, {"code": 400, "msg": "库存不足"}, Unknown),
        (200, {"code": 400, "msg": "余额不足"}, Unknown),
        (200, {"code": 400, "msg": "三方订单号已存在"}, Unknown),
        (200, {"code": 400, "msg": "安全价格不能小于售价"}, Unknown),
        # 500 unknown error, undocumented codes
        (200, {"code": 500, "msg": "未知错误"}, Unknown),
        (200, {"code": 429, "msg": "请求频繁"}, Unknown),
        (200, {"code": 0, "msg": "ok"}, Unknown),
        # transport-level surprises
        (502, "<html>Bad Gateway</html>", Unknown),
        (503, {"code": 200, "msg": "成功"}, Unknown),
        (400, {"code": 200, "msg": "成功"}, Unknown),
        (200, ["not", "an", "object"], Unknown),
        (200, {"msg": "no code"}, Unknown),
        (200, {"code": True}, Unknown),
    ],
)
async def test_submit_mapping(rig: tuple[Any, Upstream], status: int, data: Any, expected: Any) -> None:
    plugin, upstream = rig
    if isinstance(data, str):
        upstream.handler = raw(status, data.encode())
    else:
        answer(upstream, data, status)
    outcome = await plugin.submit(topup())
    if isinstance(expected, type):
        assert isinstance(outcome, expected), outcome
    else:
        assert outcome == Pending(supplier_ref=expected.supplier_ref)


async def test_garbage_bodies_are_unknown(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    for body in (b"", b"\xff\xfe", b"{not json", b"null", b"ok"):
        upstream.handler = raw(200, body)
        assert isinstance(await plugin.submit(topup()), Unknown)
        assert isinstance(await plugin.query(topup()), Unknown)


async def test_a_product_id_that_is_not_a_number_is_refused_before_sending(
    rig: tuple[Any, Upstream],
) -> None:
    plugin, upstream = rig
    outcome = await plugin.submit(topup(product_id="KC100"))
    assert outcome == Rejected(RejectReason.PRODUCT_UNAVAILABLE, "the product id is not a number")
    assert upstream.seen == []


async def test_nothing_sent_is_unreachable_and_a_timeout_propagates(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    upstream.handler = refuse
    with pytest.raises(SupplierUnreachable):
        await plugin.submit(topup())
    with pytest.raises(SupplierUnreachable):
        await plugin.query(topup())
    upstream.handler = stall
    for call in (plugin.submit, plugin.query):
        with pytest.raises(httpx.ReadTimeout) as info:
            await call(topup())
        assert not isinstance(info.value, SupplierUnreachable)


# ------------------------------------------------------------- query mapping


def order(status: Any, **kw: Any) -> dict[str, Any]:
    data = {
        "ordersn": "D100",
        "external_orderno": KEY,
        "recharge_info": [],
        "recharge_hints": "",
        "status": status,
        "total_price": "99.20",
        "has_back_money": "0.00",
        "card_list": [],
    }
    data.update(kw)
    return {"code": 200, "msg": "成功", "data": [data]}


CARDS = [
    {"card_no": "NO-1", "card_password": "PW-1", "end_time": "2027-01-01"},
    {"card_no": "", "card_password": "PW-2"},
]


@pytest.mark.parametrize(
    ("data", "request_", "expected"),
    [
        # every documented status
        (order(1), topup(), Pending(supplier_ref="D100")),
        (order(2), topup(), Pending(supplier_ref="D100")),
        (
            order(3),
            topup(),
            Delivered(Deliverables(receipt="D100"), unit_cost=Decimal("99.20"), supplier_ref="D100"),
        ),
        (order(4), topup(), Failed("cancelled", "成功")),
        (order(5, has_back_money="99.20"), topup(), Failed("refunded", "成功")),
        (order(-1), topup(), Unknown),
        # statuses as strings, as a form-minded supplier may send them
        (order("2"), topup(), Pending(supplier_ref="D100")),
        (order("4"), topup(), Failed("cancelled", "成功")),
        # undocumented statuses are never a failure
        (order(0), topup(), Unknown),
        (order(6), topup(), Unknown),
        (order(None), topup(), Unknown),
        (order("done"), topup(), Unknown),
        # not found: an empty list, or the supplier's own words
        ({"code": 200, "msg": "成功", "data": []}, topup(), NotFound),
        ({"code": 400, "msg": "订单不存在"}, topup(), NotFound),
        # every other refusal of a query says nothing about the order
        ({"code": 400, "msg": "签名错误"}, topup(), Unknown),
        ({"code": 400, "msg": "用户不存在"}, topup(), Unknown),
        ({"code": 500, "msg": "未知错误"}, topup(), Unknown),
        ({"code": 201, "msg": "?"}, topup(), Unknown),
        ({"code": 200, "msg": "成功", "data": {"ordersn": "D100"}}, topup(), Unknown),
        ({"code": 200, "msg": "成功", "data": ["D100"]}, topup(), Unknown),
        # successes that do not fit what was ordered
        (order(3, external_orderno="KROTHER"), topup(), Unknown),
        (order(3, has_back_money="10.00"), topup(), Unknown),
        (order(3, ordersn=""), topup(), Unknown),
        (order(3, card_list=CARDS[:1]), card(quantity=2), Unknown),
        (order(3, card_list=[{"card_no": "", "card_password": ""}, CARDS[1]]), card(quantity=2), Unknown),
        (order(3, card_list="NO-1 PW-1"), card(quantity=2), Unknown),
        (
            {"code": 200, "msg": "成功", "data": order(2)["data"] + order(3)["data"]},
            topup(),
            Unknown,
        ),
    ],
)
async def test_query_mapping(
    rig: tuple[Any, Upstream], data: Any, request_: SubmitRequest, expected: Any
) -> None:
    plugin, upstream = rig
    answer(upstream, data)
    outcome = await plugin.query(request_)
    if isinstance(expected, type):
        assert isinstance(outcome, expected), outcome
    else:
        assert outcome == expected


async def test_a_card_order_delivers_its_cards(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, order(3, card_list=CARDS, total_price="97.00", external_orderno=""))
    outcome = await plugin.query(card(quantity=2))
    assert isinstance(outcome, Delivered)
    assert outcome.deliverables.cards == (Card("NO-1", "PW-1", "2027-01-01"), Card("", "PW-2", None))
    assert outcome.deliverables.receipt is None
    assert outcome.unit_cost == Decimal("48.50")
    assert outcome.supplier_ref == "D100"


async def test_query_http_errors_are_unknown(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    for status in (500, 502, 504):
        answer(upstream, order(3), status)
        assert isinstance(await plugin.query(topup()), Unknown)


# ----------------------------------------------------------- balance, catalog


async def test_balance(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, {"code": 200, "msg": "成功", "data": {"balance": "8888.88"}})
    assert await plugin.balance() == Decimal("8888.88")
    for bad in ({"code": 400, "msg": "签名错误"}, {"code": 200, "data": {}}, {"code": 200, "data": "x"}):
        answer(upstream, bad)
        with pytest.raises(kss.KasushouReplyError):
            await plugin.balance()


async def test_catalog_reads_every_configured_product(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    goods = {
        4: {"code": 200, "data": {"id": 4, "goods_price": "47.90", "status": 1, "stock_num": 0}},
        2909: {"code": 200, "data": {"id": 2909, "goods_price": "98.80", "status": 1, "stock_num": 12}},
    }
    upstream.handler = lambda request: reply(goods[json.loads(request.content)["id"]])
    items = {item.product_id: item for item in await plugin.catalog()}
    assert items["2909"] == CatalogItem("2909", price=Decimal("98.80"), available=True, stock=12)
    assert items["4"] == CatalogItem("4", price=Decimal("47.90"), available=False, stock=0)
    assert all(str(r.url) == ENDPOINT + "/api/v1/goods/info" for r in upstream.seen)

    goods[2909] = {"code": 200, "data": {"id": 2909, "goods_price": "98.80", "status": 2, "stock_num": 5}}
    goods[4] = {"code": 400, "msg": "商品不存在"}
    items = {item.product_id: item for item in await plugin.catalog()}
    assert items["2909"].available is False and items["4"].available is False

    answer(upstream, {"code": 500, "msg": "未知错误"}, 502)
    with pytest.raises(kss.KasushouReplyError):
        await plugin.catalog()


# ----------------------------------------------------------------- callbacks

#: a callback's fields as the supplier sends them (doc: 订单异步回调)
FIELDS = {
    "external_orderno": KEY,
    "ordersn": "API091952628603547942912",
    "status": "4",
    "has_back_money": "3.05",
    "total_price": "3.05",
    "recharge_hints": "订单已取消/已退款",
    "time": "1695072521534",
}
#: the same fields, keys sorted, as PHP's json_encode($post, 256) writes
#: them: unicode as is, "/" escaped as "\/" (flag 256 does not unescape it)
CANONICAL = (
    '{"external_orderno":"' + KEY + '","has_back_money":"3.05",'
    '"ordersn":"API091952628603547942912","recharge_hints":"订单已取消\\/已退款",'
    '"status":"4","time":"1695072521534","total_price":"3.05"}'
)


def hand_sign(canonical: str, time_ms: str = "1695072521534", key: str = API_KEY) -> str:
    """sha1(time + canonical + apikey), by hand."""
    return hashlib.sha1((time_ms + canonical + key).encode()).hexdigest()


def form(fields: dict[str, str]) -> Request:
    return Request(
        "POST",
        "/callbacks/kss",
        {},
        {"content-type": "application/x-www-form-urlencoded"},
        urlencode(fields).encode(),
    )


def json_request(fields: dict[str, Any]) -> Request:
    return Request(
        "POST",
        "/callbacks/kss",
        {},
        {"content-type": "application/json"},
        json.dumps(fields, ensure_ascii=False).encode(),
    )


async def test_a_signed_form_callback_parses(rig: tuple[Any, Upstream]) -> None:
    """Canonical (keys sorted, "/" escaped) — see CANONICAL — then
    sign = sha1("1695072521534" + CANONICAL + apikey)."""
    plugin, _ = rig
    assert kss.callback_canonical(FIELDS).decode() == CANONICAL
    callback = plugin.parse_callback(form({**FIELDS, "sign": hand_sign(CANONICAL)}))
    assert callback.attempt_key == KEY
    assert callback.outcome == Failed("cancelled", "by callback")
    assert callback.supplier_ref == "API091952628603547942912"
    assert callback.sent_at == pytest.approx(1695072521.534)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (2, Pending(supplier_ref="API1")),
        (1, Pending(supplier_ref="API1")),
        # a success never delivers: its cards are not signed; the query does
        (3, Pending(supplier_ref="API1")),
        (4, Failed("cancelled", "by callback")),
        (5, Failed("refunded", "by callback")),
        (-1, Pending(supplier_ref="API1")),
        (9, Pending(supplier_ref="API1")),
    ],
)
async def test_a_signed_json_callback_maps_its_status(
    rig: tuple[Any, Upstream], status: int, expected: Outcome
) -> None:
    """A JSON body keeps its types: ``"status":4`` is signed unquoted.
    The card list is left out of the signed form."""
    plugin, _ = rig
    fields: dict[str, Any] = {
        "external_orderno": KEY,
        "ordersn": "API1",
        "status": status,
        "has_back_money": "0.00",
        "total_price": "3.05",
        "recharge_hints": "ok",
        "time": "1695072521534",
    }
    canonical = (
        '{"external_orderno":"' + KEY + '","has_back_money":"0.00","ordersn":"API1",'
        f'"recharge_hints":"ok","status":{status},"time":"1695072521534","total_price":"3.05"}}'
    )
    body = {**fields, "sign": hand_sign(canonical), "card_list": [{"card_no": "", "card_password": "yT7B"}]}
    callback = plugin.parse_callback(json_request(body))
    assert callback.outcome == expected
    assert callback.attempt_key == KEY


async def test_forged_callbacks_are_rejected(rig: tuple[Any, Upstream]) -> None:
    plugin, _ = rig
    good = {**FIELDS, "sign": hand_sign(CANONICAL)}
    forged = [
        {**FIELDS, "sign": hand_sign(CANONICAL, key="another-key")},
        {**good, "total_price": "0.01"},  # tampered amount
        {**good, "status": "3"},  # tampered status
        {**good, "external_orderno": "KR" + "B" * 30},  # another attempt
        {**good, "time": "1695072529999"},  # replayed under a new stamp
        {k: v for k, v in good.items() if k != "sign"},
        {**good, "sign": ""},
        {**good, "sign": "签名"},
        {k: v for k, v in good.items() if k != "time"},
    ]
    for fields in forged:
        with pytest.raises(CallbackRejected) as info:
            plugin.parse_callback(form(fields))
        assert info.value.reason == "bad_signature"
    with pytest.raises(CallbackRejected) as info:
        plugin.parse_callback(Request("POST", "/callbacks/kss", {}, {}, b"\xff\xfe"))
    assert info.value.reason == "malformed"
    # signed, but without the attempt it is about
    fields = {k: v for k, v in FIELDS.items() if k != "external_orderno"}
    canonical = kss.callback_canonical(fields).decode()
    assert '"external_orderno"' not in canonical
    with pytest.raises(CallbackRejected) as info:
        plugin.parse_callback(form({**fields, "sign": hand_sign(canonical)}))
    assert info.value.reason == "malformed"


async def test_callback_reply_is_the_protocols(rig: tuple[Any, Upstream]) -> None:
    plugin, _ = rig
    assert (plugin.callback_reply(True).status, plugin.callback_reply(True).body) == (200, b"ok")
    assert plugin.callback_reply(False).body != b"ok"


# ------------------------------------------------------------------- secrets


async def test_no_credential_reaches_a_message_or_a_repr(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    texts = [repr(plugin), str(plugin), repr(plugin._context), repr(supplier())]

    upstream.handler = refuse_connection
    for call in (plugin.submit(topup()), plugin.query(topup()), plugin.balance(), plugin.catalog()):
        with pytest.raises(SupplierUnreachable) as unreachable:
            await call
        texts.append(str(unreachable.value))
    for bad in ({"code": 400, "msg": "签名错误"}, {"code": 200}, "not json"):
        upstream.handler = raw(200, json.dumps(bad).encode())
        for failing in (plugin.balance(), plugin.catalog()):
            try:
                await failing
            except kss.KasushouReplyError as exc:
                texts.append(str(exc))
        texts.append(repr(await plugin.submit(topup())))
        texts.append(repr(await plugin.query(topup())))
    for fields in ({**FIELDS, "sign": "0" * 40}, {}):
        with pytest.raises(CallbackRejected) as rejected:
            plugin.parse_callback(form(fields))
        texts.append(str(rejected.value))
    assert_no_secret(texts, API_KEY, USER_ID)
