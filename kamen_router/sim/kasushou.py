"""A simulated 卡速售 (kasushou) API v2 supplier.

Written from the protocol's description (``PROTOCOLS.md``, the doc pages it
cites), not from the plugin: the signatures are computed here on their own,
so the ``kasushou`` plugin and this simulator check each other.

Requests are JSON ``POST`` s with three headers: ``UserId`` (the merchant's
API user id, credential ``user_id``), ``Timestamp`` (13-digit unix
milliseconds, within ``MAX_SKEW_S`` of the simulator's clock) and ``Sign`` =
``sha1(Timestamp + body + apikey)``, where ``body`` is the request object
with its keys in ascending order, compact, slashes and non-ASCII unescaped,
and ``{}`` when empty. The simulator rebuilds that form from the JSON it
parsed and compares (so a body sent with its keys out of order fails, as it
would at a server that sorts what it received).

==========================  ====================================================
path                        body -> ``data``
==========================  ====================================================
``/api/v1/order/buy``       ``id, external_orderno, quantity, safe_price``
                            (per unit), ``attach`` (``recharge_account`` is
                            the account; other keys are the order's fields),
                            ``url`` -> ``{ordersn, external_orderno}``
``/api/v1/order/info``      ``external_orderno`` or ``ordersn`` -> a list of
                            orders
``/api/v1/user/info``       ``{}`` -> ``{balance}``
``/api/v1/goods/info``      ``id`` -> one product
``/api/v1/goods/list``      ``page, limit`` -> ``{list, total, page, limit}``
==========================  ====================================================

Every reply is HTTP 200 with ``{code, msg, data}``. The protocol documents
only three codes, 200 (success), 400 (failure, ``msg`` says why) and 500
(unknown error), so every refusal is 400 with its reason in words:

=============================  ==============================================
refusal                        ``msg`` (code 400)
=============================  ==============================================
unknown user id / bad sign     用户不存在 / 签名错误
rate limited                   请求过于频繁，请稍后再试
external_orderno taken         三方订单号已存在 (also the ``duplicate_reply``
                               fault)
maintenance                    系统维护中，请稍后再试
unknown product / off shelf    商品不存在 / 商品已下架
invalid account                充值账号格式错误
safe_price below the price     安全价格不能小于售价
out of stock / balance         库存不足 / 余额不足
=============================  ==============================================

A query for an order the supplier does not have (or not yet, inside the
not-found window) answers 400 订单不存在. The ``unknown_rate`` fault answers
code 500 未知错误.

Orders: status 2 processing, 3 success, 5 refunded (a failed order is
refunded in full: ``has_back_money`` is its total). A card order's
``card_list`` holds ``card_no, card_password, end_time``. The protocol has
no operator serial: a top-up's result is in ``recharge_hints`` as text.

Callbacks go to the order's ``url`` as a form (``application/x-www-form-
urlencoded``, every value a string, the card list as
``card_list[i][card_no]``…): ``external_orderno, ordersn, status,
has_back_money, total_price, recharge_hints, time`` (13-digit ms) and
``sign`` = ``sha1(time + json_encode(ksort(fields), JSON_UNESCAPED_UNICODE)
+ apikey)`` over every field but ``sign`` and the card list. PHP's flag 256
alone leaves ``/`` escaped as ``\\/`` in that form. The receiver answers
``ok``; anything else is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

from ..http import BadRequest, Request, Response
from ..money import format_money, parse_money
from .base import ProtocolSimulator, Reply
from .core import OrderIn, OutgoingCallback, Refusal, Refused, SimOrder, Status

PATH_BUY = "/api/v1/order/buy"
PATH_INFO = "/api/v1/order/info"
PATH_USER = "/api/v1/user/info"
PATH_GOODS_INFO = "/api/v1/goods/info"
PATH_GOODS_LIST = "/api/v1/goods/list"

CODE_OK, CODE_FAILED, CODE_UNKNOWN = 200, 400, 500
#: how far a request's Timestamp may be from the simulator's clock
MAX_SKEW_S = 300.0
MAX_QUANTITY = 1000
#: the attach key that carries the account to charge
ACCOUNT_KEY = "recharge_account"
#: callback fields the signature leaves out
UNSIGNED_CALLBACK_FIELDS = ("sign", "card_list", "express_list")
#: what stands for unlimited stock in goods replies
VIRTUAL_STOCK = 9999

STATUS = {Status.PROCESSING: 2, Status.SUCCESS: 3, Status.FAILED: 5}
GOODS_ON_SALE, GOODS_OFF_SALE = 1, 2

MSG_NO_USER = "用户不存在"
MSG_BAD_SIGN = "签名错误"
MSG_NOT_FOUND = "订单不存在"
MSG_DUPLICATE = "三方订单号已存在"
MSG_NO_GOODS = "商品不存在"
_REFUSALS: Mapping[Refusal, str] = {
    Refusal.AUTH: MSG_BAD_SIGN,
    Refusal.RATE_LIMITED: "请求过于频繁，请稍后再试",
    Refusal.DUPLICATE: MSG_DUPLICATE,
    Refusal.MAINTENANCE: "系统维护中，请稍后再试",
    Refusal.UNKNOWN_PRODUCT: MSG_NO_GOODS,
    Refusal.OFF_SHELF: "商品已下架",
    Refusal.INVALID_ACCOUNT: "充值账号格式错误",
    Refusal.PRICE_ABOVE_CEILING: "安全价格不能小于售价",
    Refusal.OUT_OF_STOCK: "库存不足",
    Refusal.INSUFFICIENT_BALANCE: "余额不足",
}
_HINTS = {Status.PROCESSING: "充值处理中", Status.SUCCESS: "充值成功", Status.FAILED: "充值失败/已退款"}


# ------------------------------------------------------------ signing (pure)


def canonical_json(value: object, *, escape_slashes: bool = False) -> str:
    """``value`` as the protocol's signatures see it: objects with their keys
    in ascending order (at every level), compact, non-ASCII as is, and ``/``
    as is unless ``escape_slashes`` (PHP's ``json_encode`` with only
    ``JSON_UNESCAPED_UNICODE``). Numbers keep the text they arrived with."""
    if isinstance(value, dict):
        parts = [
            canonical_json(str(k), escape_slashes=escape_slashes)
            + ":"
            + canonical_json(value[k], escape_slashes=escape_slashes)
            for k in sorted(value)
        ]
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v, escape_slashes=escape_slashes) for v in value) + "]"
    if isinstance(value, str):
        # PHP escapes the two JavaScript line terminators even with flag 256
        text = json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return text.replace("/", "\\/") if escape_slashes else text
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


def sha1_sign(timestamp: str, canonical: str, api_key: str) -> str:
    """``sha1(timestamp + canonical + apikey)``, lower-case hex."""
    return hashlib.sha1((timestamp + canonical + api_key).encode("utf-8")).hexdigest()


def callback_signature(fields: Mapping[str, str], api_key: str) -> str:
    """``sign`` for a callback's form fields (``time`` among them)."""
    signed = {k: v for k, v in fields.items() if not _unsigned(k)}
    return sha1_sign(fields["time"], canonical_json(signed, escape_slashes=True), api_key)


def _unsigned(name: str) -> bool:
    return any(name == f or name.startswith(f + "[") for f in UNSIGNED_CALLBACK_FIELDS)


class _Malformed(Exception):
    """The body does not have the protocol's shape (code 400 参数错误)."""


# ---------------------------------------------------------------- simulator


class KasushouSimulator(ProtocolSimulator):
    """One simulated 卡速售 merchant account (see the module docstring).
    Needs the credentials ``user_id`` and ``api_key``."""

    protocol: ClassVar[str] = "kasushou"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._user_id = self.credential("user_id")
        self._api_key = self.credential("api_key")
        #: ordersn -> external_orderno, for queries by the supplier's number
        self._by_ordersn: dict[str, str] = {}
        self._endpoints: dict[str, Callable[[dict[str, Any]], Response | Reply]] = {
            PATH_BUY: self._buy,
            PATH_INFO: self._info,
            PATH_USER: self._user,
            PATH_GOODS_INFO: self._goods_info,
            PATH_GOODS_LIST: self._goods_list,
        }

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return Response.json(404, {"code": 404, "msg": "接口不存在", "data": None})
        if request.method != "POST":
            return Response.json(405, {"code": 405, "msg": "请使用POST请求", "data": None})
        try:
            body = request.json() if request.body.strip() else {}
        except BadRequest:
            body = None
        if not isinstance(body, dict):
            return _fail("参数错误：请求体必须是JSON对象")
        refusal = self._authenticate(request, body)
        if refusal is not None:
            return _fail(refusal)
        try:
            return endpoint(body)
        except _Malformed as exc:
            return _fail(f"参数错误：{exc}")

    def _authenticate(self, request: Request, body: dict[str, Any]) -> str | None:
        """None when the request is signed by this merchant, else the refusal."""
        headers = request.headers
        if headers.get("userid") != self._user_id.reveal():
            return MSG_NO_USER
        timestamp, signature = headers.get("timestamp", ""), headers.get("sign", "")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) == 13):
            return MSG_BAD_SIGN
        if abs(self.wall_clock() - int(timestamp) / 1000) > MAX_SKEW_S:
            return "请求已过期"
        expected = sha1_sign(timestamp, canonical_json(body), self._api_key.reveal())
        if not (signature.isascii() and hmac.compare_digest(expected, signature.lower())):
            return MSG_BAD_SIGN
        return None

    # ------------------------------------------------------------- endpoints

    def _buy(self, body: dict[str, Any]) -> Response | Reply:
        result = self.account.place(_parse_buy(body))
        if isinstance(result, Refused):
            if result.order is not None:
                self._by_ordersn[result.order.order_no] = result.order.merchant_order_no
            return _fail(_REFUSALS[result.reason])
        order = result.order
        self._by_ordersn[order.order_no] = order.merchant_order_no
        placed = {"ordersn": order.order_no, "external_orderno": order.merchant_order_no}
        return self.reply_to(
            result,
            _ok(placed, "下单成功"),
            duplicate=_fail(MSG_DUPLICATE),
            system_error=_reply(CODE_UNKNOWN, "未知错误"),
        )

    def _info(self, body: dict[str, Any]) -> Response:
        external, ordersn = body.get("external_orderno"), body.get("ordersn")
        key = external if isinstance(external, str) and external else None
        if key is None and isinstance(ordersn, str) and ordersn:
            key = self._by_ordersn.get(ordersn)
            if key is None:
                return _fail(MSG_NOT_FOUND)
        if key is None:
            raise _Malformed("external_orderno 与 ordersn 不能同时为空")
        order = self.account.query(key)
        if order is None:
            return _fail(MSG_NOT_FOUND)
        return _ok([_order_json(order)])

    def _user(self, body: dict[str, Any]) -> Response:
        return _ok({"balance": format_money(self.account.balance)})

    def _goods_info(self, body: dict[str, Any]) -> Response:
        goods_id = _goods_id(body.get("id"))
        goods = self._goods(goods_id)
        return _fail(MSG_NO_GOODS) if goods is None else _ok(goods)

    def _goods_list(self, body: dict[str, Any]) -> Response:
        page, limit = _positive(body, "page", 1), _positive(body, "limit", 20)
        ids = [pid for pid in self.account.products if pid.isascii() and pid.isdigit()]
        listed = [self._goods(int(pid)) for pid in ids[(page - 1) * limit : page * limit]]
        return _ok({"list": listed, "total": len(ids), "page": page, "limit": limit})

    def _goods(self, goods_id: int) -> dict[str, Any] | None:
        product = self.account.products.get(str(goods_id))
        if product is None:
            return None
        skus = sorted(o.sku for o in self.supplier.offers.values() if o.product_id == str(goods_id))
        return {
            "id": goods_id,
            "goods_name": skus[0] if skus else str(goods_id),
            "goods_price": format_money(product.price),
            "status": GOODS_ON_SALE if product.on_shelf else GOODS_OFF_SALE,
            "stock_num": VIRTUAL_STOCK if product.stock is None else product.stock,
        }

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback:
        fields = {
            "external_orderno": order.merchant_order_no,
            "ordersn": order.order_no,
            "status": str(STATUS[status]),
            "has_back_money": format_money(order.total if status is Status.FAILED else Decimal(0)),
            "total_price": format_money(order.total),
            "recharge_hints": _hints(order, status),
            "time": str(int(self.wall_clock() * 1000)),
        }
        fields["sign"] = callback_signature(fields, self._api_key.reveal())
        form = list(fields.items())
        cards, _ = order.goods(status)
        for i, card in enumerate(cards):
            form += [
                (f"card_list[{i}][card_no]", card.number),
                (f"card_list[{i}][card_password]", card.password),
                (f"card_list[{i}][end_time]", card.expires or ""),
            ]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return OutgoingCallback(urlencode(form).encode("ascii"), headers)

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip() == b"ok"


# ---------------------------------------------------------------- rendering


def _reply(code: int, msg: str, data: Any = None) -> Response:
    return Response.json(200, {"code": code, "msg": msg, "data": data})


def _ok(data: Any, msg: str = "成功") -> Response:
    return _reply(CODE_OK, msg, data)


def _fail(msg: str) -> Response:
    return _reply(CODE_FAILED, msg)


def _hints(order: SimOrder, status: Status) -> str:
    _, receipt = order.goods(status)
    hint = _HINTS[status]
    return f"{hint}，流水号{receipt}" if receipt else hint


def _order_json(order: SimOrder) -> dict[str, Any]:
    cards, _ = order.goods()
    return {
        "ordersn": order.order_no,
        "external_orderno": order.merchant_order_no,
        "goods_id": _goods_id(order.product_id),
        "quantity": order.quantity,
        "status": STATUS[order.status],
        "total_price": format_money(order.total),
        "has_back_money": format_money(order.total if order.status is Status.FAILED else Decimal(0)),
        "recharge_info": [],
        "recharge_hints": _hints(order, order.status),
        "card_list": [
            {"card_no": c.number, "card_password": c.password, "end_time": c.expires or ""} for c in cards
        ],
    }


# ------------------------------------------------------------------ parsing


def _goods_id(value: object) -> int:
    """The product ``id``: an integer (a string of digits is taken too)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise _Malformed("id 必须是商品ID")


def _positive(body: Mapping[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
        raise _Malformed(f"{key} 必须是正整数")
    return value


def _parse_buy(body: Mapping[str, Any]) -> OrderIn:
    goods_id = _goods_id(body.get("id"))
    external = body.get("external_orderno")
    if not isinstance(external, str) or not 0 < len(external) <= 64:
        raise _Malformed("external_orderno 必须是1到64个字符")
    quantity = body.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        raise _Malformed("quantity 必须是正整数")
    attach = body.get("attach") or {}
    if isinstance(attach, list) and not attach:  # PHP's empty array
        attach = {}
    if not isinstance(attach, dict) or not all(isinstance(v, str | int) for v in attach.values()):
        raise _Malformed("attach 必须是对象")
    fields = {str(k): str(v) for k, v in attach.items()}
    account = fields.pop(ACCOUNT_KEY, None) or None
    raw_cap = body.get("safe_price")
    cap = None if raw_cap in (None, "") else parse_money(raw_cap)
    if raw_cap not in (None, "") and cap is None:
        raise _Malformed("safe_price 必须是金额")
    url = body.get("url") or None
    if url is not None and not (
        isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc
    ):
        raise _Malformed("url 必须是http(s)地址")
    return OrderIn(
        merchant_order_no=external,
        product_id=str(goods_id),
        quantity=quantity,
        account=account,
        fields=fields,
        max_unit_price=cap,
        notify_url=url,
    )


__all__ = ["KasushouSimulator", "callback_signature", "canonical_json", "sha1_sign"]
