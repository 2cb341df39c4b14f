"""The ``fulu`` plugin (plugins/fulu.py): signature vectors worked out by
hand and published by Fulu's SDKs, the mapping of every documented code and
state through the real plugin methods against canned gateway replies
(httpx.MockTransport plays Fulu), the requests it sends, callbacks, and
secrets kept out of errors and reprs."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import pytest
from plugin_helpers import PLUGINS_DIR, Canned, load_plugin_module, mock_client, supplier_config

from kamen_router.config import Secret, SupplierConfig
from kamen_router.errors import ConfigError, SupplierUnreachable
from kamen_router.http import Request
from kamen_router.outcome import (
    Card,
    Deliverables,
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    NotFound,
    Outcome,
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

PLUGIN_FILE = PLUGINS_DIR / "fulu.py"
fulu = load_plugin_module("fulu")
FuluPlugin = validate_plugin(fulu.PLUGIN, "fulu", str(PLUGIN_FILE))

# Fulu's public sandbox credentials, as printed in the PHP SDK's tests
APP_KEY = "i4esv1l+76l/7NQCL3QudG90Fq+YgVfFGJAWgT+7qO1Bm9o/adG/1iwO2qXsAXNB"
SECRET = "0a091b3aa4324435aab703142518a8f7"
KEY = "KRABCDEFGHIJKLMNOPQRSTUVWXYZ0001"
PHONE = "13800138000"
TOPUP_PID, CARD_PID = "10000585", "10000587"
#: 2024-05-01 12:00:00 in Beijing, as unix seconds
NOON_BEIJING = 1714536000.0


def make_supplier(app_key: str = APP_KEY, secret: str = SECRET) -> SupplierConfig:
    return supplier_config(
        "fulu-a",
        "fulu",
        {"app_key": app_key, "app_secret": secret},
        {"mobile-cmcc-100": (TOPUP_PID, "99.20"), "steam-50": (CARD_PID, "48.50")},
        endpoint="https://openapi.fulu.example",
    )


def topup(key: str = KEY, **kw: Any) -> SubmitRequest:
    args: dict[str, Any] = {
        "attempt_key": key,
        "order_id": "o-1",
        "sku": "mobile-cmcc-100",
        "product_id": TOPUP_PID,
        "quantity": 1,
        "unit_price": Decimal("99.20"),
        "max_price": Decimal("99.50"),
        "account": PHONE,
        "callback_url": "http://127.0.0.1:9465/callbacks/fulu-a",
    }
    args.update(kw)
    return SubmitRequest(**args)


def card(key: str = KEY, quantity: int = 2, **kw: Any) -> SubmitRequest:
    return topup(key, sku="steam-50", product_id=CARD_PID, quantity=quantity, account=None, **kw)


class Fake(Canned):
    """Fulu's side: records every request and answers with canned replies."""

    def body(self, index: int = -1) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[index].content)
        return data

    def biz(self, index: int = -1) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body(index)["biz_content"])
        return data


def reply(code: int, result: object = None, message: str = "") -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message, "result": None, "sign": "0" * 32}
    if result is not None:
        body["result"] = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    return httpx.Response(200, json=body)


def order_result(key: str = KEY, state: str = "untreated", **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "order_id": "19062837751058701652",
        "customer_order_no": key,
        "product_id": int(TOPUP_PID),
        "buy_num": 1,
        "order_price": 99.2,
        "order_state": state,
        "operator_serial_number": "",
    }
    result.update(extra)
    return result


def plugin_with(fake: Fake, supplier: SupplierConfig | None = None) -> tuple[Any, httpx.AsyncClient]:
    supplier = supplier or make_supplier()
    http = mock_client(fake)
    context = SupplierContext(supplier=supplier, endpoint=supplier.endpoint or "", http=http)
    return FuluPlugin(context, clock=lambda: NOON_BEIJING), http  # type: ignore[call-arg]


async def submit(answer: httpx.Response | Exception, request: SubmitRequest | None = None) -> Outcome:
    fake = Fake(answer)
    plugin, http = plugin_with(fake)
    async with http:
        outcome: Outcome = await plugin.submit(request or topup())
    return outcome


async def query(answer: httpx.Response | Exception, request: SubmitRequest | None = None) -> Outcome:
    fake = Fake(answer)
    plugin, http = plugin_with(fake)
    async with http:
        outcome: Outcome = await plugin.query(request or topup())
    return outcome


# ------------------------------------------------------------ signature vectors


def test_request_signature_worked_by_hand() -> None:
    r'''A query for attempt KRABCDEFGHIJKLMNOPQRSTUVWXYZ0001 at 2024-05-01
    12:00:00 (Beijing), with Fulu's public sandbox app key and secret.

    The request object without ``sign``, compact, ``biz_content`` a JSON
    string (so its quotes are escaped ``\"``), slashes and ``+`` as they are::

        {"app_key":"i4esv1l+76l/7NQCL3QudG90Fq+YgVfFGJAWgT+7qO1Bm9o/adG/1iwO2qXsAXNB",
        "method":"fulu.order.info.get","timestamp":"2024-05-01 12:00:00",
        "version":"2.0","format":"json","charset":"utf-8","sign_type":"md5",
        "app_auth_token":"","biz_content":"{\"customer_order_no\":
        \"KRABCDEFGHIJKLMNOPQRSTUVWXYZ0001\"}"}

    (one line, 308 characters). Its characters sorted by code point: one
    space, 40 double quotes, 3 ``+``, 8 commas, ..., the 4 backslashes of the
    escaped quotes, 7 underscores, ..., ``{{}}``::

         """"""""""""""""""""""""""""""""""""""""+++,,,,,,,,---....///00000000
        000011111122222344556777899::::::::::::AAABBBCCDEFFFGGGGHIJJKKLLMNNNOO
        OPQQQRRSTTUVVWWXXXYYZ\\\\_______aaaaaaabcccddddddeeeeeeeeeeeeefffffggg
        ghhhiiiiiiijkklllmmmmmmmnnnnnnnnooooooooooooppppppqqqrrrrrrrrsssssssst
        ttttttttttttuuuuuuvvwyyz{{}}

    with the secret ``0a091b3aa4324435aab703142518a8f7`` appended, MD5,
    lower-case hex: ``bd1098b7e73968873981073b6d11fca9``.
    '''
    unsigned = (
        '{"app_key":"i4esv1l+76l/7NQCL3QudG90Fq+YgVfFGJAWgT+7qO1Bm9o/adG/1iwO2qXsAXNB",'
        '"method":"fulu.order.info.get","timestamp":"2024-05-01 12:00:00","version":"2.0",'
        '"format":"json","charset":"utf-8","sign_type":"md5","app_auth_token":"",'
        '"biz_content":"{\\"customer_order_no\\":\\"KRABCDEFGHIJKLMNOPQRSTUVWXYZ0001\\"}"}'
    )
    sorted_chars = (
        ' """"""""""""""""""""""""""""""""""""""""+++,,,,,,,,---....///00000000'
        "000011111122222344556777899::::::::::::AAABBBCCDEFFFGGGGHIJJKKLLMNNNOO"
        "OPQQQRRSTTUVVWWXXXYYZ\\\\\\\\_______aaaaaaabcccddddddeeeeeeeeeeeeefffffggg"
        "ghhhiiiiiiijkklllmmmmmmmnnnnnnnnooooooooooooppppppqqqrrrrrrrrsssssssst"
        "ttttttttttttuuuuuuvvwyyz{{}}"
    )
    digest = "bd1098b7e73968873981073b6d11fca9"
    assert len(unsigned) == 308
    assert "".join(sorted(unsigned)) == sorted_chars
    assert hashlib.md5((sorted_chars + SECRET).encode()).hexdigest() == digest

    assert fulu.timestamp(NOON_BEIJING) == "2024-05-01 12:00:00"
    body = fulu.signed_request(
        APP_KEY, SECRET, "fulu.order.info.get", "2024-05-01 12:00:00", {"customer_order_no": KEY}
    )
    # the body is the signed text with the sign member appended: what is
    # signed is exactly what is sent
    assert body == (unsigned[:-1] + ',"sign":"' + digest + '"}').encode()
    assert fulu.sign(unsigned, SECRET) == digest


def test_callback_signature_published_in_the_php_sdk() -> None:
    """The PHP SDK's SignTest verifies this callback with the sandbox
    secret: the object without ``sign``, JSON with unicode unescaped,
    characters sorted, secret appended, MD5."""
    body = (
        '{"order_id":"19102237851777002017","charge_finish_time":"2019-10-22 20:17:57",'
        '"customer_order_no":"123456","order_status":"success","recharge_description":"充值成功",'
        '"product_id":"10000489","price":"50.0000","buy_num":"1","operator_serial_number":"--",'
        '"sign":"35d1c3403c42d2df58ed4e37991deee3"}'
    )
    data = json.loads(body)
    unsigned = json.dumps(
        {k: v for k, v in data.items() if k != "sign"}, ensure_ascii=False, separators=(",", ":")
    )
    assert hashlib.md5(("".join(sorted(unsigned)) + SECRET).encode()).hexdigest() == data["sign"]
    assert fulu.verify_signed(fulu.loads_exact(body), SECRET)

    plugin, _ = plugin_with(Fake(reply(0)))
    callback = plugin.parse_callback(callback_request(body.encode()))
    assert callback.attempt_key == "123456"
    # a success for a product not known to be a top-up: its cards (if any)
    # come by query
    assert callback.outcome == Pending(supplier_ref="19102237851777002017")
    assert callback.unit_price == Decimal("50.0000")
    assert callback.quantity == 1
    assert callback.sent_at is None

    tampered = body.replace('"price":"50.0000"', '"price":"5.0000"').encode()
    with pytest.raises(CallbackRejected) as info:
        plugin.parse_callback(callback_request(tampered))
    assert info.value.reason == "bad_signature"


def test_card_decryption_vector_published_in_the_php_sdk() -> None:
    """The PHP SDK's AESTest: base64, AES-256-ECB keyed with the secret,
    PKCS#7 (five 0x05 bytes of padding here)."""
    assert fulu.decrypt_card("Gu8k2+8wDXH3zpNv5MIFjZDTK0m1kvm99iBAKIWwQTo=", SECRET) == (
        "CD1000590202001040006363045"
    )
    assert fulu.decrypt_card(fulu.encrypt_card("卡密 123", SECRET), SECRET) == "卡密 123"
    for bad in ("not base64!", "AAAA", fulu.encrypt_card("x", "another-secret-0123456789abcdef")):
        with pytest.raises(ValueError):
            fulu.decrypt_card(bad, SECRET)


def test_biz_content_is_ascii_and_means_the_same() -> None:
    params = {"charge_game_region": "电信一区", "charge_account": "a<b>&c/d+e", "buy_num": 2}
    text = fulu.biz_content(params)
    assert text.isascii()
    assert "<" not in text and ">" not in text and "&" not in text
    assert text == (
        '{"charge_game_region":"\\u7535\\u4fe1\\u4e00\\u533a",'
        '"charge_account":"a\\u003cb\\u003e\\u0026c/d+e","buy_num":2}'
    )
    assert json.loads(text) == params


# ------------------------------------------------------------ what is sent


async def test_a_topup_request_has_the_right_fields_and_signature() -> None:
    fake = Fake(reply(0, order_result()))
    plugin, http = plugin_with(fake)
    async with http:
        assert await plugin.submit(topup(fields={"region": "电信一区"})) == Pending(
            supplier_ref="19062837751058701652"
        )
        # the same attempt again (after a rate limit or an unsent request)
        await plugin.submit(topup(fields={"region": "电信一区"}))
    first, second = fake.requests
    assert str(first.url) == "https://openapi.fulu.example/api/getway"
    assert first.method == "POST"
    assert first.headers["content-type"].startswith("application/json")
    body = fake.body(0)
    assert list(body) == [
        "app_key",
        "method",
        "timestamp",
        "version",
        "format",
        "charset",
        "sign_type",
        "app_auth_token",
        "biz_content",
        "sign",
    ]
    assert body["app_key"] == APP_KEY
    assert body["method"] == "fulu.order.direct.add"
    assert body["timestamp"] == "2024-05-01 12:00:00"
    assert (body["version"], body["format"], body["charset"], body["sign_type"], body["app_auth_token"]) == (
        "2.0",
        "json",
        "utf-8",
        "md5",
        "",
    )
    biz = fake.biz(0)
    assert biz == {
        "customer_order_no": KEY,
        "product_id": 10000585,
        "buy_num": 1,
        "charge_account": PHONE,
        "charge_game_region": "电信一区",
        "customer_price": 99.5,
    }
    assert '"customer_price":99.50' in body["biz_content"]
    # the signature, recomputed independently over the bytes sent
    raw = first.content.decode()
    head, _, tail = raw.rpartition(',"sign":"')
    assert tail == body["sign"] + '"}'
    assert hashlib.md5(("".join(sorted(head + "}")) + SECRET).encode()).hexdigest() == body["sign"]
    # the merchant order number is the attempt key, the same every time
    assert fake.biz(1)["customer_order_no"] == KEY
    assert second.content == first.content


async def test_a_card_request_uses_card_add_without_an_account() -> None:
    fake = Fake(reply(0, order_result(product_id=int(CARD_PID), buy_num=2)))
    plugin, http = plugin_with(fake)
    async with http:
        outcome = await plugin.submit(card(max_price=None, fields={"anything": "ignored"}))
    assert isinstance(outcome, Pending)
    assert fake.body()["method"] == "fulu.order.card.add"
    assert fake.biz() == {"customer_order_no": KEY, "product_id": 10000587, "buy_num": 2}


async def test_a_query_asks_by_the_attempt_key() -> None:
    fake = Fake(reply(0, order_result(state="processing")))
    plugin, http = plugin_with(fake)
    async with http:
        assert isinstance(await plugin.query(topup()), Pending)
    assert fake.body()["method"] == "fulu.order.info.get"
    assert fake.biz() == {"customer_order_no": KEY}


async def test_orders_it_cannot_express_are_rejected_unsent() -> None:
    fake = Fake(reply(0, order_result()))
    plugin, http = plugin_with(fake)
    async with http:
        assert await plugin.submit(topup(product_id="CM-100")) == Rejected(
            RejectReason.PRODUCT_UNAVAILABLE, "a fulu product id is a number"
        )
        outcome = await plugin.submit(topup(fields={"zone": "3"}))
        assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.PRODUCT_UNAVAILABLE
    assert fake.requests == []


# ------------------------------------------------------------ submit mapping

SUBMIT_CODES: list[tuple[int, Outcome | type]] = [
    *[(code, Rejected) for code in range(1000, 1020)],
    (2002, Rejected),
    (2003, Rejected),
    (3000, Rejected),
    (3001, Rejected),
    (3002, Rejected),
    (3003, Rejected),
    (3004, Rejected),
    (3005, Rejected),
    (3008, Rejected),
    (4000, Invalid),
    (4001, Invalid),
    (4002, Invalid),
    (4004, Invalid),
    (4008, Unknown),
    (4009, Unknown),
    (4010, Unknown),
    (5000, Unknown),
    # documented for queries only, or not at all: may have been taken
    (4011, Unknown),
    (4012, Unknown),
    (3006, Unknown),
    (4003, Unknown),
    (9999, Unknown),
    (-1, Unknown),
]
REASONS = {
    **{code: RejectReason.AUTH for code in (*range(1000, 1020), 2002, 2003)},
    3000: RejectReason.PRODUCT_UNAVAILABLE,
    3001: RejectReason.PRODUCT_UNAVAILABLE,
    3002: RejectReason.PRODUCT_UNAVAILABLE,
    3003: RejectReason.PRODUCT_UNAVAILABLE,
    3004: RejectReason.PRODUCT_UNAVAILABLE,
    3005: RejectReason.OUT_OF_STOCK,
    3008: RejectReason.PRODUCT_UNAVAILABLE,
    4000: InvalidReason.MISSING_FIELD,
    4001: InvalidReason.INVALID_QUANTITY,
    4002: InvalidReason.MISSING_FIELD,
    4004: InvalidReason.BLACKLISTED_ACCOUNT,
}


@pytest.mark.parametrize(("code", "kind"), SUBMIT_CODES)
async def test_every_submit_code_maps(code: int, kind: type) -> None:
    outcome = await submit(reply(code, message="说明"))
    assert isinstance(outcome, kind), (code, outcome)
    if isinstance(outcome, Rejected | Invalid):
        assert outcome.reason is REASONS[code]
        assert outcome.detail == f"{code} 说明"


async def test_duplicate_order_number_is_unknown_never_a_failure() -> None:
    assert await submit(reply(4010, message="外部订单号已存在")) == Unknown(
        "4010 duplicate order number: the order exists"
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (order_result(state="untreated"), Pending(supplier_ref="19062837751058701652")),
        (order_result(state="processing"), Pending(supplier_ref="19062837751058701652")),
        # cards and receipts come by query
        (order_result(state="success"), Pending(supplier_ref="19062837751058701652")),
        ({k: v for k, v in order_result().items() if k != "order_state"}, Pending("19062837751058701652")),
        (order_result(state="failed"), Failed("failed", "接口调用成功")),
        (order_result(state="refunding"), Unknown("unknown order state 'refunding'")),
        (order_result(key="KR" + "Z" * 30), Unknown("the reply describes another order")),
        (order_result(product_id=10000001), Unknown("the reply names another product")),
        (order_result(buy_num=3), Unknown("the reply names another quantity")),
        ("{not json", Unknown("code 0 without an order")),
        ([1, 2], Unknown("code 0 without an order")),
    ],
)
async def test_submit_code_0_maps_by_state(result: object, expected: Outcome) -> None:
    assert await submit(reply(0, result, "接口调用成功")) == expected


async def test_submit_code_0_without_a_result_is_unknown() -> None:
    assert await submit(reply(0)) == Unknown("code 0 without an order")


GARBAGE = [
    (httpx.Response(200, content=b"<html>502 Bad Gateway</html>"), "unparseable reply (HTTP 200)"),
    (httpx.Response(200, content=b""), "unparseable reply (HTTP 200)"),
    (httpx.Response(200, json=[0]), "reply is not a JSON object"),
    (httpx.Response(200, json={"message": "ok"}), "reply without a code"),
    (httpx.Response(200, json={"code": True}), "reply without a code"),
    (httpx.Response(200, json={"code": "zero"}), "reply without a code"),
    (httpx.Response(500, json={"code": 0, "result": "{}"}), "HTTP 500"),
    (httpx.Response(502, content=b"bad gateway"), "HTTP 502"),
    (httpx.Response(404, json={"code": 3005}), "HTTP 404"),
    (httpx.Response(301, headers={"location": "https://elsewhere"}), "HTTP 301"),
]


@pytest.mark.parametrize(("response", "detail"), GARBAGE)
async def test_garbage_is_unknown_on_submit_and_query(response: httpx.Response, detail: str) -> None:
    assert await submit(response) == Unknown(detail)
    assert await query(response) == Unknown(detail)


async def test_a_string_code_is_read() -> None:
    outcome = await submit(httpx.Response(200, json={"code": "3005", "message": "库存不足"}))
    assert outcome == Rejected(RejectReason.OUT_OF_STOCK, "3005 库存不足")


async def test_nothing_sent_is_unreachable_and_a_timeout_propagates() -> None:
    with pytest.raises(SupplierUnreachable):
        await submit(httpx.ConnectError("refused"))
    with pytest.raises(SupplierUnreachable):
        await query(httpx.ConnectTimeout("slow"))
    with pytest.raises(httpx.ReadTimeout):
        await submit(httpx.ReadTimeout("sent, no answer"))
    with pytest.raises(httpx.RemoteProtocolError):
        await query(httpx.RemoteProtocolError("reset mid-reply"))


# ------------------------------------------------------------- query mapping


@pytest.mark.parametrize("code", [1016, 1019, 2002, 3001, 3005, 4000, 4008, 4009, 4010, 4012, 5000, 7777])
async def test_a_refusal_on_query_is_unknown(code: int) -> None:
    assert await query(reply(code, message="x")) == Unknown(f"query answered {code}")


async def test_order_not_found_on_query_is_not_found() -> None:
    assert await query(reply(4011, message="订单不存在")) == NotFound("4011 订单不存在")


def cards_json(*pairs: tuple[str, str], pascal: bool = False) -> list[dict[str, str]]:
    names = (
        ("CardNumber", "CardPwd", "CardDeadline") if pascal else ("card_number", "card_pwd", "card_deadline")
    )
    return [
        {
            names[0]: fulu.encrypt_card(number, SECRET),
            names[1]: fulu.encrypt_card(password, SECRET),
            names[2]: "2030-12-31 23:59:59",
        }
        for number, password in pairs
    ]


def card_result(cards: object, **extra: Any) -> dict[str, Any]:
    return order_result(
        state="success", product_id=int(CARD_PID), buy_num=2, order_price=48.5, cards=cards, **extra
    )


@pytest.mark.parametrize("pascal", [False, True])
async def test_a_card_success_is_delivered_with_decrypted_cards(pascal: bool) -> None:
    cards = cards_json(("CD0001", "PW0001"), ("CD0002", "PW0002"), pascal=pascal)
    outcome = await query(reply(0, card_result(cards)), card())
    assert outcome == Delivered(
        Deliverables(
            cards=(
                Card("CD0001", "PW0001", "2030-12-31 23:59:59"),
                Card("CD0002", "PW0002", "2030-12-31 23:59:59"),
            )
        ),
        unit_cost=Decimal("48.5"),
        supplier_ref="19062837751058701652",
    )


@pytest.mark.parametrize(
    ("cards", "detail"),
    [
        (None, "0 cards delivered for quantity 2"),
        ([], "0 cards delivered for quantity 2"),
        ("cards", "cards is not a list"),
        (["x"], "a card is not an object"),
        ([{"card_number": "x"}], "a card lacks a number or a password"),
        ([{"card_number": "!!", "card_pwd": "!!"}], "a card does not decrypt with the app secret"),
    ],
)
async def test_a_card_success_that_cannot_be_read_is_unknown(cards: object, detail: str) -> None:
    assert await query(reply(0, card_result(cards)), card()) == Unknown(detail)


async def test_the_wrong_number_of_cards_is_unknown() -> None:
    cards = cards_json(("CD0001", "PW0001"))
    assert await query(reply(0, card_result(cards)), card()) == Unknown("1 cards delivered for quantity 2")


async def test_cards_under_another_secret_are_unknown() -> None:
    cards = cards_json(("CD0001", "PW0001"), ("CD0002", "PW0002"))
    fake = Fake(reply(0, card_result(cards)))
    plugin, http = plugin_with(fake, make_supplier(secret="another-secret-0123456789abcdef0"))
    async with http:
        outcome = await plugin.query(card())
    assert outcome == Unknown("a card does not decrypt with the app secret")


@pytest.mark.parametrize(
    ("serial", "receipt"),
    [("SN20240501123", "SN20240501123"), ("--", "19062837751058701652"), ("", "19062837751058701652")],
)
async def test_a_topup_success_is_delivered_with_a_receipt(serial: str, receipt: str) -> None:
    result = order_result(state="success", operator_serial_number=serial)
    assert await query(reply(0, result)) == Delivered(
        Deliverables(receipt=receipt), unit_cost=Decimal("99.2"), supplier_ref="19062837751058701652"
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (order_result(state="untreated"), Pending("19062837751058701652")),
        (order_result(state="processing"), Pending("19062837751058701652")),
        (order_result(state="failed"), Failed("failed", "ok")),
        (order_result(state="refunded"), Unknown("unknown order state 'refunded'")),
        (order_result(state=None), Unknown("unknown order state 'None'")),
        (order_result(key="KR" + "Y" * 30, state="success"), Unknown("the reply describes another order")),
        (order_result(state="success", buy_num=2), Unknown("the reply names another quantity")),
        (
            order_result(state="success", operator_serial_number="", order_id=None),
            Unknown("top-up reported successful without a receipt"),
        ),
        ("[[", Unknown("code 0 without an order")),
    ],
)
async def test_query_code_0_maps_by_state(result: object, expected: Outcome) -> None:
    assert await query(reply(0, result, "ok")) == expected


# ------------------------------------------------------------------ callbacks


def callback_request(body: bytes, content_type: str = "application/json") -> Request:
    return Request(
        method="POST",
        path="/callbacks/fulu-a",
        query={},
        headers={"content-type": content_type},
        body=body,
        peer="203.0.113.9",
    )


def signed_callback(secret: str = SECRET, **fields: str) -> dict[str, str]:
    data = {
        "order_id": "19102237851777002017",
        "charge_finish_time": "2024-05-01 12:00:05",
        "customer_order_no": KEY,
        "order_status": "success",
        "recharge_description": "充值成功",
        "product_id": TOPUP_PID,
        "price": "99.2000",
        "buy_num": "1",
        "operator_serial_number": "SN778899",
    }
    data.update(fields)
    # signed by hand, as the PHP SDK does: JSON, unicode unescaped, sorted
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    data["sign"] = hashlib.md5(("".join(sorted(text)) + secret).encode()).hexdigest()
    return data


def json_body(data: dict[str, str]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


async def test_a_success_callback_for_a_known_topup_is_delivered() -> None:
    fake = Fake(reply(0, order_result()))
    plugin, http = plugin_with(fake)
    async with http:
        # unknown product kind yet: Pending, the query fetches the goods
        callback = plugin.parse_callback(callback_request(json_body(signed_callback())))
        assert callback.outcome == Pending(supplier_ref="19102237851777002017")
        await plugin.submit(topup())  # a direct order for this product: a top-up
        callback = plugin.parse_callback(callback_request(json_body(signed_callback())))
    assert callback.attempt_key == KEY
    assert callback.outcome == Delivered(
        Deliverables(receipt="SN778899"), unit_cost=Decimal("99.2000"), supplier_ref="19102237851777002017"
    )
    assert (callback.unit_price, callback.quantity, callback.supplier_ref) == (
        Decimal("99.2000"),
        1,
        "19102237851777002017",
    )


async def test_a_success_callback_for_a_card_product_is_pending() -> None:
    fake = Fake(reply(0, order_result(product_id=int(CARD_PID), buy_num=2)))
    plugin, http = plugin_with(fake)
    async with http:
        await plugin.submit(card())
    data = signed_callback(product_id=CARD_PID, buy_num="2", operator_serial_number="")
    callback = plugin.parse_callback(callback_request(json_body(data)))
    assert callback.outcome == Pending(supplier_ref="19102237851777002017")
    assert callback.quantity == 2


def test_a_failed_callback_is_failed() -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    data = signed_callback(order_status="failed", recharge_description="充值失败，账号错误")
    callback = plugin.parse_callback(callback_request(json_body(data)))
    assert callback.outcome == Failed("failed", "充值失败，账号错误")
    assert callback.attempt_key == KEY


def test_a_form_encoded_callback_is_read_too() -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    data = signed_callback(order_status="failed")
    body = urlencode(data).encode()
    callback = plugin.parse_callback(callback_request(body, "application/x-www-form-urlencoded"))
    assert isinstance(callback.outcome, Failed)


def test_a_callback_with_numbers_verifies_over_their_text() -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    body = (
        '{"customer_order_no":"' + KEY + '","order_status":"failed","price":50.0000,"buy_num":1,'
        '"order_id":"1","product_id":10000489}'
    )
    signature = hashlib.md5(("".join(sorted(body)) + SECRET).encode()).hexdigest()
    signed = body[:-1] + ',"sign":"' + signature + '"}'
    callback = plugin.parse_callback(callback_request(signed.encode()))
    assert (callback.unit_price, callback.quantity) == (Decimal("50.0000"), 1)


@pytest.mark.parametrize(
    "forge",
    [
        lambda d: {**d, "price": "1.0000"},  # tampered amount
        lambda d: {**d, "order_status": "failed"},  # tampered status
        lambda d: {**d, "customer_order_no": "KR" + "X" * 30},  # another order
        lambda d: {**d, "sign": "0" * 32},
        lambda d: {k: v for k, v in d.items() if k != "sign"},
        lambda d: signed_callback(secret="not-the-secret"),
    ],
)
def test_a_forged_callback_is_rejected(forge: Callable[[dict[str, str]], dict[str, str]]) -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    with pytest.raises(CallbackRejected) as info:
        plugin.parse_callback(callback_request(json_body(forge(signed_callback()))))
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b'{"a":1,"a":2}',
        b"[1,2]",
        b"a=1&a=2",
        b"=&&",
        b"\xff\xfe",
    ],
)
def test_a_malformed_callback_is_rejected(body: bytes) -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    with pytest.raises(CallbackRejected) as info:
        plugin.parse_callback(callback_request(body))
    assert info.value.reason in ("malformed", "bad_signature")


@pytest.mark.parametrize("fields", [{"order_status": "processing"}, {"customer_order_no": ""}])
def test_a_signed_callback_it_does_not_understand_is_malformed(fields: dict[str, str]) -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    with pytest.raises(CallbackRejected) as info:
        plugin.parse_callback(callback_request(json_body(signed_callback(**fields))))
    assert info.value.reason == "malformed"


def test_the_callback_reply_is_fulus() -> None:
    plugin, _ = plugin_with(Fake(reply(0)))
    accepted = plugin.callback_reply(True)
    assert (accepted.status, accepted.body) == (200, b"success")
    refused = plugin.callback_reply(False)
    assert refused.status == 200 and refused.body != b"success"


# ------------------------------------------------------- balance and catalog


async def test_balance_reads_the_user_info() -> None:
    fake = Fake(reply(0, {"name": "商户", "balance": 12345.678, "is_open": 1}))
    plugin, http = plugin_with(fake)
    async with http:
        assert await plugin.balance() == Decimal("12345.678")
    assert fake.body()["method"] == "fulu.user.info.get"


@pytest.mark.parametrize(
    "answer", [reply(1006, message="无效的app_key"), reply(0, {"balance": "lots"}), httpx.Response(500)]
)
async def test_an_unusable_balance_raises(answer: httpx.Response) -> None:
    fake = Fake(answer)
    plugin, http = plugin_with(fake)
    async with http:
        with pytest.raises(fulu.FuluReplyError):
            await plugin.balance()


async def test_catalog_reads_prices_and_shelf_state() -> None:
    products = [
        {
            "product_id": 10000585,
            "product_type": "直充",
            "purchase_price": 99.2,
            "sales_status": "上架",
            "stock_status": "充足",
        },
        {
            "product_id": 10000587,
            "product_type": "卡密",
            "purchase_price": 48.5,
            "sales_status": "上架",
            "stock_status": "断货",
        },
        {
            "product_id": 10000600,
            "product_type": "直充",
            "purchase_price": 9.7,
            "sales_status": "下架",
            "stock_status": "充足",
        },
        {"product_id": 10000601, "purchase_price": "n/a", "sales_status": "新状态"},
        {"product_name": "no id"},
    ]
    fake = Fake(reply(0, products))
    plugin, http = plugin_with(fake)
    async with http:
        items = await plugin.catalog()
    assert fake.body()["method"] == "fulu.goods.list.get"
    assert [(i.product_id, i.price, i.available) for i in items] == [
        ("10000585", Decimal("99.2"), True),
        ("10000587", Decimal("48.5"), False),
        ("10000600", Decimal("9.7"), False),
        ("10000601", None, None),
    ]
    # the catalog taught it which products are top-ups
    data = signed_callback(product_id="10000585")
    assert isinstance(plugin.parse_callback(callback_request(json_body(data))).outcome, Delivered)


# ------------------------------------------------------------- the contract


def test_schedule_follows_fulus_rules() -> None:
    schedule = FuluPlugin.schedule
    assert schedule.not_found_grace_s == 600
    assert schedule.resubmit_safe is False
    assert schedule.first_query_s <= 60 and schedule.max_interval_s == 600


def test_it_loads_from_a_plugins_dir(tmp_path: Path) -> None:
    shutil.copy(PLUGIN_FILE, tmp_path / "fulu.py")
    plugins = load_plugins(tmp_path)
    assert plugins["fulu"].name == "fulu"
    assert set(plugins["fulu"].required_credentials) == {"app_key", "app_secret"}


def test_a_missing_credential_is_a_config_error() -> None:
    supplier = attrs.evolve(make_supplier(), credentials={"app_key": Secret(APP_KEY)})
    with pytest.raises(ConfigError) as info:
        FuluPlugin(SupplierContext(supplier, "https://x", httpx.AsyncClient()))
    assert "credentials.app_secret" in str(info.value)


async def test_secrets_stay_out_of_reprs_and_errors() -> None:
    secrets = (APP_KEY, SECRET)
    fake = Fake(reply(1016, message="签名错误"), reply(0, {"balance": None}), httpx.ConnectError("down"))
    plugin, http = plugin_with(fake)
    seen: list[str] = [repr(plugin), str(plugin), repr(make_supplier())]
    async with http:
        seen.append(repr(await plugin.submit(topup())))
        try:
            await plugin.balance()
        except fulu.FuluReplyError as exc:
            seen.append(str(exc))
        try:
            await plugin.query(topup())
        except SupplierUnreachable as exc:
            seen.append(str(exc))
        with pytest.raises(CallbackRejected) as info:
            plugin.parse_callback(callback_request(json_body(signed_callback(secret="x"))))
        seen.append(str(info.value))
    assert len(seen) == 7
    for text in seen:
        for secret in secrets:
            assert secret not in text, text
