"""The ``kayixin`` plugin (卡易信 API 3.0): signatures worked out from the
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

PLUGIN_CLS = plugin_class("kayixin")
kyx: ModuleType = sys.modules[PLUGIN_CLS.__module__]

APP_ID = "app-80217-kyx"
SECRET = "kyx-secret-8d1f0c6e2b7a"
ENDPOINT = "https://kyx.example"
KEY = "KR5TQ2WZC7MHJ4RX6YPB3KD2NEAB0002"  # 32 characters, like every attempt key
CALLBACK_URL = "http://127.0.0.1:9465/callbacks/kyx"
TOPUP_PID, CARD_PID = "6518", "4994"
PHONE = "13800138000"


def supplier() -> SupplierConfig:
    return supplier_config(
        "kyx",
        "kayixin",
        {"app_id": APP_ID, "app_secret": SECRET},
        {"mobile-cmcc-100": (TOPUP_PID, "99.20"), "steam-50": (CARD_PID, "48.50")},
        endpoint=ENDPOINT,
        file="kyx.yaml",
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
        super().__init__({"code": 1000, "msg": "success", "data": {}})


reply = json_reply


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Any, Upstream]]:
    upstream = Upstream()
    async with mock_client(upstream) as http:
        plugin = PLUGIN_CLS(SupplierContext(supplier(), ENDPOINT, http))
        yield plugin, upstream


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# ------------------------------------------------------------------ loading


def test_the_plugin_loads_and_honours_the_contract() -> None:
    cls: type[Plugin] = validate_plugin(PLUGIN_CLS, "kayixin", str(PLUGINS_DIR / "kayixin.py"))
    assert cls.name == "kayixin"
    assert set(cls.required_credentials) == {"app_id", "app_secret"}
    assert cls.schedule.not_found_grace_s == 300
    assert cls.schedule.resubmit_safe is False
    assert hasattr(cls, "parse_callback") and hasattr(cls, "catalog")


# ---------------------------------------------------------------- signatures


def test_signature_matches_the_documented_example() -> None:
    """The API 3.0 documentation's example, as quoted by open-source
    integrations: X-APP-ID ``10000``, secret
    ``652fbdd2f637606a2afbb2fe0ca72419``, X-Version ``3.0``, X-Timestamp
    ``1760767397`` and the body
    ``{"orderNumber":"20251016165825069","outerNumber":""}``. The string
    hashed is their plain concatenation::

        10000652fbdd2f637606a2afbb2fe0ca724193.01760767397{"orderNumber":"20251016165825069","outerNumber":""}

    md5, lower-case hex: 6a414e658265ff3ca665cee3b161c4e9.
    """
    body = b'{"orderNumber":"20251016165825069","outerNumber":""}'
    text = (
        "10000652fbdd2f637606a2afbb2fe0ca724193.01760767397"
        '{"orderNumber":"20251016165825069","outerNumber":""}'
    )
    assert md5(text) == "6a414e658265ff3ca665cee3b161c4e9"
    assert kyx.request_body({"outerNumber": "", "orderNumber": "20251016165825069"}) == body
    signature = kyx.sign("10000", "652fbdd2f637606a2afbb2fe0ca72419", "3.0", "1760767397", body)
    assert signature == "6a414e658265ff3ca665cee3b161c4e9"


async def test_the_create_request_is_signed_over_the_bytes_sent(
    rig: tuple[Any, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two units of a top-up with a 99.50 ceiling, sent at unix time
    1700000000.9 (X-Timestamp ``1700000000``). The body, keys sorted,
    unicode unescaped, ``safePrice`` the order total as a JSON number::

        {"attach":[{"name":"充值账号","value":"13800138000"},{"name":"区服","value":"一区"}],
         "count":2,"goodsId":"6518","notifyUrl":"http://127.0.0.1:9465/callbacks/kyx",
         "outerNumber":"<KEY>","safePrice":199.00}

    (one line, no spaces). X-Signature = md5(APP_ID + secret + "3.0" +
    "1700000000" + body), computed here with hashlib.
    """
    plugin, upstream = rig
    monkeypatch.setattr(kyx, "_now", lambda: 1700000000.9)
    answer(upstream, {"code": 1000, "msg": "购买成功", "data": {"cards": [], "orderNumber": "KYX-1"}})
    request = topup(quantity=2, max_price=Decimal("99.5"), fields={"区服": "一区"})
    assert await plugin.submit(request) == Pending(supplier_ref="KYX-1")

    (sent,) = upstream.seen
    expected = (
        '{"attach":[{"name":"充值账号","value":"13800138000"},{"name":"区服","value":"一区"}],'
        '"count":2,"goodsId":"6518","notifyUrl":"http://127.0.0.1:9465/callbacks/kyx",'
        f'"outerNumber":"{KEY}","safePrice":199.00}}'
    )
    assert sent.content == expected.encode()
    assert str(sent.url) == ENDPOINT + "/api/v3/order/create"
    assert sent.headers["X-APP-ID"] == APP_ID
    assert sent.headers["X-Version"] == "3.0"
    assert sent.headers["X-Timestamp"] == "1700000000"
    assert sent.headers["X-Signature"] == md5(APP_ID + SECRET + "3.0" + "1700000000" + expected)


async def test_every_request_is_signed_and_carries_the_attempt_key(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, {"code": 1000, "msg": "success", "data": {"balance": 12.5}})
    await plugin.submit(card(quantity=3))
    await plugin.query(card(quantity=3))
    await plugin.balance()
    create, detail, account = upstream.seen
    for sent in (create, detail, account):
        stamp = sent.headers["X-Timestamp"]
        assert len(stamp) == 10 and stamp.isdigit()
        assert sent.headers["X-Signature"] == md5(APP_ID + SECRET + "3.0" + stamp + sent.content.decode())
        assert kyx.verify(dict(sent.headers), sent.content, APP_ID, SECRET)
    # a card order: no attach, no ceiling, an empty notify url
    assert json.loads(create.content) == {"count": 3, "goodsId": "4994", "notifyUrl": "", "outerNumber": KEY}
    assert json.loads(detail.content) == {"orderNumber": "", "outerNumber": KEY}
    assert str(detail.url) == ENDPOINT + "/api/v3/order/getDetail"
    assert str(account.url) == ENDPOINT + "/api/v3/user/getAccount"
    assert account.content == b"{}"


async def test_resubmitting_an_attempt_sends_the_same_order_number(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, {"code": 5000, "msg": "系统繁忙"})
    first = await plugin.submit(topup())
    answer(upstream, {"code": 1000, "msg": "购买成功", "data": {"orderNumber": "KYX-1"}})
    second = await plugin.submit(topup())
    await plugin.query(topup())
    assert isinstance(first, Unknown) and isinstance(second, Pending)
    assert [json.loads(r.content)["outerNumber"] for r in upstream.seen] == [KEY, KEY, KEY]


# ------------------------------------------------------------ submit mapping


@pytest.mark.parametrize(
    ("status", "data", "expected"),
    [
        (200, {"code": 1000, "msg": "购买成功", "data": {"orderNumber": "KYX-1", "cards": []}}, "KYX-1"),
        (
            200,
            {"code": "1000", "msg": "购买成功", "data": {"orderNumber": 20251016165825069}},
            "20251016165825069",
        ),
        (200, {"code": 1000, "msg": "购买成功", "data": None}, None),
        # cards at once still go through the query, which checks them
        (
            200,
            {"code": 1000, "data": {"orderNumber": "KYX-1", "cards": [{"cardNo": "1", "cardPwd": "2"}]}},
            "KYX-1",
        ),
        (200, {"code": 1000, "data": {"orderNumber": "KYX-1", "outerNumber": "KROTHER"}}, Unknown),
        # no other code is documented: none of them proves the order was not taken
        (200, {"code": 2400, "msg": "商品价格高于安全价"}, Unknown),
        (200, {"code": 2404, "msg": "商品已下架"}, Unknown),
        (200, {"code": 1001, "msg": "签名错误"}, Unknown),
        (200, {"code": 1002, "msg": "外部订单号已存在"}, Unknown),
        (200, {"code": 5000, "msg": "系统繁忙"}, Unknown),
        (200, {"code": 0, "msg": "success"}, Unknown),
        (502, "<html>Bad Gateway</html>", Unknown),
        (500, {"code": 1000, "msg": "success"}, Unknown),
        (403, {"code": 1000, "msg": "success"}, Unknown),
        (200, ["not", "an", "object"], Unknown),
        (200, {"msg": "no code"}, Unknown),
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
        assert outcome == Pending(supplier_ref=expected)


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
    outcome = await plugin.submit(topup(product_id="KC-100"))
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


def detail(status: Any, **kw: Any) -> dict[str, Any]:
    data = {
        "orderNumber": "KYX-2",
        "outerNumber": KEY,
        "status": status,
        "count": 1,
        "money": 99.2,
        "retMoney": 0,
        "result": "处理成功",
        "cards": [],
    }
    data.update(kw)
    return {"code": 1000, "msg": "success", "data": data}


CARDS = [{"cardNo": "NO-1", "cardPwd": "PWD-1"}, {"cardNo": "", "cardPwd": "PWD-2"}]
TOPUP_DONE = Delivered(Deliverables(receipt="KYX-2"), unit_cost=Decimal("99.2"), supplier_ref="KYX-2")


@pytest.mark.parametrize(
    ("data", "request_", "expected"),
    [
        # every documented status
        (detail(0), topup(), Unknown),
        (detail(1), topup(), Pending(supplier_ref="KYX-2")),
        (detail(7), topup(), Pending(supplier_ref="KYX-2")),
        (detail(2), topup(), Pending(supplier_ref="KYX-2")),
        (detail(8), topup(), Pending(supplier_ref="KYX-2")),
        # refund in progress: not a success, not yet a failure
        (detail(9), topup(), Pending(supplier_ref="KYX-2")),
        (detail(3), topup(), TOPUP_DONE),
        (detail("3"), topup(), TOPUP_DONE),
        (detail(4), topup(), Failed("cancelled", "success")),
        (detail(5, retMoney=99.2), topup(), Failed("refunded", "success")),
        # undocumented statuses are never a failure
        (detail(6), topup(), Unknown),
        (detail(-1), topup(), Unknown),
        (detail(None), topup(), Unknown),
        # not found, in the supplier's own words only
        ({"code": 2404, "msg": "订单不存在", "data": None}, topup(), NotFound),
        ({"code": 2404, "msg": "用户不存在", "data": None}, topup(), Unknown),
        ({"code": 2404, "msg": "未找到", "data": None}, topup(), Unknown),
        ({"code": 1001, "msg": "签名错误"}, topup(), Unknown),
        ({"code": 5000, "msg": "系统繁忙"}, topup(), Unknown),
        ({"code": 1000, "msg": "success", "data": None}, topup(), Unknown),
        ({"code": 1000, "msg": "success", "data": [detail(3)["data"]]}, topup(), Unknown),
        # successes that do not fit what was ordered
        (detail(3, outerNumber="KROTHER"), topup(), Unknown),
        (detail(3, count=2), topup(), Unknown),
        (detail(3, retMoney=10), topup(), Unknown),
        (detail(3, orderNumber=""), topup(), Unknown),
        (detail(3, count=2, cards=CARDS[:1]), card(quantity=2), Unknown),
        (detail(3, count=2, cards=[{"cardNo": "", "cardPwd": ""}, CARDS[1]]), card(quantity=2), Unknown),
        (detail(3, count=2, cards="NO-1,PWD-1"), card(quantity=2), Unknown),
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
    answer(upstream, detail(3, count=2, money=97, cards=CARDS))
    outcome = await plugin.query(card(quantity=2))
    assert isinstance(outcome, Delivered)
    assert outcome.deliverables.cards == (Card("NO-1", "PWD-1"), Card("", "PWD-2"))
    assert outcome.unit_cost == Decimal("48.5")
    assert outcome.supplier_ref == "KYX-2"


async def test_query_http_errors_are_unknown(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    for status in (500, 502, 504):
        answer(upstream, detail(3), status)
        assert isinstance(await plugin.query(topup()), Unknown)


# ----------------------------------------------------------- balance, catalog


async def test_balance(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    answer(upstream, {"code": 1000, "msg": "success", "data": {"balance": 1234.56}})
    assert await plugin.balance() == Decimal("1234.56")
    for bad in ({"code": 1001, "msg": "签名错误"}, {"code": 1000, "data": {}}, {"code": 1000, "data": None}):
        answer(upstream, bad)
        with pytest.raises(kyx.KayixinReplyError):
            await plugin.balance()


async def test_catalog_reads_every_configured_product(rig: tuple[Any, Upstream]) -> None:
    plugin, upstream = rig
    goods: dict[int, Any] = {
        4994: {
            "code": 1000,
            "data": {"goodsId": 4994, "salesPrice": 47.9, "status": 1, "stockCount": 9, "skuType": 0},
        },
        6518: {
            "code": 1000,
            "data": {"goodsId": 6518, "salesPrice": 98.8, "status": 1, "stockCount": 0, "skuType": 0},
        },
    }
    upstream.handler = lambda request: reply(goods[json.loads(request.content)["goodsId"]])
    items = {item.product_id: item for item in await plugin.catalog()}
    assert items["4994"] == CatalogItem("4994", price=Decimal("47.9"), available=True, stock=9)
    assert items["6518"] == CatalogItem("6518", price=Decimal("98.8"), available=False, stock=0)
    assert all(str(r.url) == ENDPOINT + "/api/v3/goods/getDetail" for r in upstream.seen)

    goods[4994]["data"]["skuType"] = 1  # a multi-spec product needs a spec the plugin does not send
    goods[6518] = {"code": 2404, "msg": "商品已下架", "data": None}
    items = {item.product_id: item for item in await plugin.catalog()}
    assert items["4994"].available is False and items["6518"].available is False

    answer(upstream, "gateway down", 502)
    with pytest.raises(kyx.KayixinReplyError):
        await plugin.catalog()


# ----------------------------------------------------------------- callbacks

CALLBACK_BODY = (
    '{"orderNumber":"KYX-2","outerNumber":"' + KEY + '","status":3,"cards":"","money":99.2,'
    '"retMoney":0,"startCount":"","nowCount":"","endCount":"","result":"处理成功"}'
).encode()


def callback(
    body: bytes = CALLBACK_BODY,
    *,
    app_id: str = APP_ID,
    timestamp: str = "1700000100",
    signature: str | None = None,
) -> Request:
    """A callback signed by hand: md5(app id + secret + "3.0" + timestamp + body)."""
    if signature is None:
        signature = md5(APP_ID + SECRET + "3.0" + timestamp + body.decode())
    headers = {
        "content-type": "application/json",
        "x-app-id": app_id,
        "x-version": "3.0",
        "x-timestamp": timestamp,
        "x-signature": signature,
    }
    return Request("POST", "/callbacks/kyx", {}, headers, body)


async def test_a_signed_callback_parses(rig: tuple[Any, Upstream]) -> None:
    plugin, _ = rig
    parsed = plugin.parse_callback(callback())
    assert parsed.attempt_key == KEY
    assert parsed.supplier_ref == "KYX-2"
    assert parsed.sent_at == 1700000100.0
    # the callback format rests on thin sources: it never settles an order,
    # it only tells the router the attempt exists (the query decides)
    assert parsed.outcome == Pending(supplier_ref="KYX-2")
    for status in (1, 2, 4, 5, 9, 42):
        body = CALLBACK_BODY.replace(b'"status":3', f'"status":{status}'.encode())
        assert plugin.parse_callback(callback(body)).outcome == Pending(supplier_ref="KYX-2")


async def test_forged_callbacks_are_rejected(rig: tuple[Any, Upstream]) -> None:
    plugin, _ = rig
    good = callback()
    tampered = CALLBACK_BODY.replace(b'"money":99.2', b'"money":0.01')
    forged = [
        callback(signature=md5(APP_ID + "another-secret" + "3.0" + "1700000100" + CALLBACK_BODY.decode())),
        Request("POST", good.path, {}, good.headers, tampered),  # tampered amount
        Request("POST", good.path, {}, {**good.headers, "x-timestamp": "1700000999"}, CALLBACK_BODY),
        callback(app_id="app-80218-kyx"),  # another merchant
        Request(
            "POST",
            good.path,
            {},
            {k: v for k, v in good.headers.items() if k != "x-signature"},
            CALLBACK_BODY,
        ),
        Request(
            "POST",
            good.path,
            {},
            {k: v for k, v in good.headers.items() if k != "x-timestamp"},
            CALLBACK_BODY,
        ),
        callback(timestamp="17000001OO"),
        callback(signature="签名"),
    ]
    for request in forged:
        with pytest.raises(CallbackRejected) as info:
            plugin.parse_callback(request)
        assert info.value.reason == "bad_signature"
    for body in (b"status=3", b'["a"]', b'{"status":3}', b'{"outerNumber":"' + KEY.encode() + b'"}'):
        with pytest.raises(CallbackRejected) as info:
            plugin.parse_callback(callback(body))
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
    for bad in ({"code": 1001, "msg": "签名错误"}, {"code": 1000}, "not json"):
        upstream.handler = raw(200, json.dumps(bad).encode())
        for failing in (plugin.balance(), plugin.catalog()):
            try:
                await failing
            except kyx.KayixinReplyError as exc:
                texts.append(str(exc))
        texts.append(repr(await plugin.submit(topup())))
        texts.append(repr(await plugin.query(topup())))
    for request in (callback(signature="0" * 32), callback(b"{}")):
        with pytest.raises(CallbackRejected) as rejected:
            plugin.parse_callback(request)
        texts.append(str(rejected.value))
    assert_no_secret(texts, SECRET, APP_ID)
