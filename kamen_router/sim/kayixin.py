"""A simulated 卡易信 (kayixin) merchant-customer API 3.0 supplier.

Written from the protocol's description (``PROTOCOLS.md`` and the
open-source integration it cites), not from the plugin: the signatures are
computed here on their own, so the ``kayixin`` plugin and this simulator
check each other.

Requests are JSON ``POST`` s with four headers: ``X-APP-ID`` (credential
``app_id``), ``X-Version: 3.0``, ``X-Timestamp`` (10-digit unix seconds,
within ``MAX_SKEW_S`` of the simulator's clock) and ``X-Signature`` =
``md5_lower(appId + secret + version + timestamp + body)`` over the exact
body bytes received (credential ``app_secret``).

============================  ==================================================
path                          body -> ``data``
============================  ==================================================
``/api/v3/order/create``      ``goodsId`` (a string; a number is taken too),
                              ``count``, ``outerNumber``, ``safePrice`` (a
                              JSON number capping the order TOTAL),
                              ``attach`` (``[{name, value}]``: ``充值账号`` is
                              the account, other names the order's fields),
                              ``notifyUrl``, ``sku`` (empty: single-spec)
                              -> ``{orderNumber, outerNumber, status, cards}``
``/api/v3/order/getDetail``   ``outerNumber`` or ``orderNumber`` -> one order
``/api/v3/user/getAccount``   ``{}`` -> ``{balance}``
``/api/v3/goods/getDetail``   ``goodsId`` -> one product
``/api/v3/goods/getList``     ``page`` (other filters ignored) ->
                              ``{allCount, allPage, items}``
``/api/v3/goods/getDirs``     ``{}`` -> the directory tree
============================  ==================================================

Every reply is HTTP 200 with ``{code, msg, data}``; ``code 1000`` means the
call succeeded. No other code is documented, so every failure here is the
protocol's generic failure, code ``CODE_FAILED`` with the reason in ``msg``
(用户不存在 for an unknown app id, 签名错误, 请求过于频繁, 外部订单号已存在 for an
``outerNumber`` taken — also the ``duplicate_reply`` fault —, 系统维护中,
商品不存在, 商品已下架, 充值账号错误, 商品价格高于保护价, 库存不足, 余额不足),
and a query for an order the supplier does not have (or not yet, inside the
not-found window) answers 订单不存在. The ``unknown_rate`` fault answers
系统繁忙，请查单确认.

Orders: ``status`` 2 processing, 3 success, 5 refunded (a failed order is
refunded in full: ``retMoney`` is its total); ``money`` is the total charged;
``cards`` holds ``cardNo, cardPwd``; ``result`` is free text (for a top-up,
the operator's serial in words).

Callbacks (``POST`` to ``notifyUrl``): the order's ``outerNumber,
orderNumber, status, count, money, result`` as JSON, signed with the same
four headers as a request. The sources name no card list in callbacks, so
none is sent. The receiver answers ``ok``; anything else is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..http import BadRequest, Request, Response
from ..money import dumps_json, format_money
from .base import ProtocolSimulator, Reply
from .core import OrderIn, OutgoingCallback, Refusal, Refused, SimOrder, Status

PATH_CREATE = "/api/v3/order/create"
PATH_DETAIL = "/api/v3/order/getDetail"
PATH_ACCOUNT = "/api/v3/user/getAccount"
PATH_GOODS_DETAIL = "/api/v3/goods/getDetail"
PATH_GOODS_LIST = "/api/v3/goods/getList"
PATH_GOODS_DIRS = "/api/v3/goods/getDirs"

VERSION = "3.0"
CODE_OK = 1000
#: the simulator's stand-in for the protocol's undocumented failure codes
CODE_FAILED = 1001
MAX_SKEW_S = 300.0
MAX_COUNT = 1000
PAGE_SIZE = 20
#: the attach name that carries the account to charge
ACCOUNT_NAME = "充值账号"
#: what stands for unlimited stock in goods replies
VIRTUAL_STOCK = 9999

STATUS = {Status.PROCESSING: 2, Status.SUCCESS: 3, Status.FAILED: 5}
GOODS_ON_SALE, GOODS_OFF_SALE = 1, 2
GOODS_CARD, GOODS_DIRECT = 1, 3
SINGLE_SKU = 0

MSG_NO_USER = "用户不存在"
MSG_BAD_SIGN = "签名错误"
MSG_NOT_FOUND = "订单不存在"
MSG_DUPLICATE = "外部订单号已存在"
MSG_NO_GOODS = "商品不存在"
_REFUSALS: Mapping[Refusal, str] = {
    Refusal.AUTH: MSG_BAD_SIGN,
    Refusal.RATE_LIMITED: "请求过于频繁",
    Refusal.DUPLICATE: MSG_DUPLICATE,
    Refusal.MAINTENANCE: "系统维护中",
    Refusal.UNKNOWN_PRODUCT: MSG_NO_GOODS,
    Refusal.OFF_SHELF: "商品已下架",
    Refusal.INVALID_ACCOUNT: "充值账号错误",
    Refusal.PRICE_ABOVE_CEILING: "商品价格高于保护价",
    Refusal.OUT_OF_STOCK: "库存不足",
    Refusal.INSUFFICIENT_BALANCE: "余额不足",
}
_RESULTS = {Status.PROCESSING: "处理中", Status.SUCCESS: "充值成功", Status.FAILED: "充值失败，已退款"}


# ------------------------------------------------------------ signing (pure)


def md5_signature(app_id: str, secret: str, version: str, timestamp: str, body: bytes) -> str:
    """``md5_lower(appId + secret + version + timestamp + body)``."""
    return hashlib.md5((app_id + secret + version + timestamp).encode("utf-8") + body).hexdigest()


def signed_headers(app_id: str, secret: str, body: bytes, now: float) -> dict[str, str]:
    """The four headers of a request or callback carrying ``body``, sent at ``now``."""
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-APP-ID": app_id,
        "X-Version": VERSION,
        "X-Timestamp": timestamp,
        "X-Signature": md5_signature(app_id, secret, VERSION, timestamp, body),
    }


class _Malformed(Exception):
    """The body does not have the protocol's shape (参数错误)."""


# ---------------------------------------------------------------- simulator


class KayixinSimulator(ProtocolSimulator):
    """One simulated 卡易信 merchant account (see the module docstring).
    Needs the credentials ``app_id`` and ``app_secret``."""

    protocol: ClassVar[str] = "kayixin"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app_id = self.credential("app_id")
        self._secret = self.credential("app_secret")
        #: orderNumber -> outerNumber, for queries by the supplier's number
        self._by_number: dict[str, str] = {}
        self._endpoints: dict[str, Callable[[dict[str, Any]], Response | Reply]] = {
            PATH_CREATE: self._create,
            PATH_DETAIL: self._detail,
            PATH_ACCOUNT: self._account,
            PATH_GOODS_DETAIL: self._goods_detail,
            PATH_GOODS_LIST: self._goods_list,
            PATH_GOODS_DIRS: self._goods_dirs,
        }

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return Response.json(404, {"code": 404, "msg": "接口不存在", "data": None})
        if request.method != "POST":
            return Response.json(405, {"code": 405, "msg": "请使用POST请求", "data": None})
        refusal = self._authenticate(request)
        if refusal is not None:
            return _fail(refusal)
        try:
            body = request.json()
        except BadRequest:
            body = None
        if not isinstance(body, dict):
            return _fail("参数错误：请求体必须是JSON对象")
        try:
            return endpoint(body)
        except _Malformed as exc:
            return _fail(f"参数错误：{exc}")

    def _authenticate(self, request: Request) -> str | None:
        """None when the request is signed by this merchant, else the refusal."""
        headers = request.headers
        app_id = self._app_id.reveal()
        if headers.get("x-app-id") != app_id:
            return MSG_NO_USER
        if headers.get("x-version") != VERSION:
            return "不支持的接口版本"
        timestamp, signature = headers.get("x-timestamp", ""), headers.get("x-signature", "")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) == 10):
            return MSG_BAD_SIGN
        if abs(self.wall_clock() - int(timestamp)) > MAX_SKEW_S:
            return "请求已过期"
        expected = md5_signature(app_id, self._secret.reveal(), VERSION, timestamp, request.body)
        if not (signature.isascii() and hmac.compare_digest(expected, signature.lower())):
            return MSG_BAD_SIGN
        return None

    # ------------------------------------------------------------- endpoints

    def _create(self, body: dict[str, Any]) -> Response | Reply:
        result = self.account.place(_parse_create(body))
        if isinstance(result, Refused):
            if result.order is not None:
                self._by_number[result.order.order_no] = result.order.merchant_order_no
            return _fail(_REFUSALS[result.reason])
        order = result.order
        self._by_number[order.order_no] = order.merchant_order_no
        cards, _ = order.goods()
        created = {
            "orderNumber": order.order_no,
            "outerNumber": order.merchant_order_no,
            "status": STATUS[order.status],
            "cards": [{"cardNo": c.number, "cardPwd": c.password} for c in cards],
        }
        return self.reply_to(
            result,
            _ok(created, "下单成功"),
            duplicate=_fail(MSG_DUPLICATE),
            system_error=_fail("系统繁忙，请查单确认"),
        )

    def _detail(self, body: dict[str, Any]) -> Response:
        outer, number = body.get("outerNumber"), body.get("orderNumber")
        key = outer if isinstance(outer, str) and outer else None
        if key is None and isinstance(number, str) and number:
            key = self._by_number.get(number)
            if key is None:
                return _fail(MSG_NOT_FOUND)
        if key is None:
            raise _Malformed("outerNumber 与 orderNumber 不能同时为空")
        order = self.account.query(key)
        return _fail(MSG_NOT_FOUND) if order is None else _ok(_order_json(order))

    def _account(self, body: dict[str, Any]) -> Response:
        return _ok({"balance": format_money(self.account.balance)})

    def _goods_detail(self, body: dict[str, Any]) -> Response:
        goods = self._goods(_goods_id(body.get("goodsId")))
        return _fail(MSG_NO_GOODS) if goods is None else _ok(goods)

    def _goods_list(self, body: dict[str, Any]) -> Response:
        page = body.get("page", 1)
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise _Malformed("page 必须是正整数")
        ids = [int(pid) for pid in self.account.products if pid.isascii() and pid.isdigit()]
        items = [self._goods(i) for i in ids[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]]
        return _ok({"allCount": len(ids), "allPage": max(1, math.ceil(len(ids) / PAGE_SIZE)), "items": items})

    def _goods_dirs(self, body: dict[str, Any]) -> Response:
        return _ok([{"id": 1, "name": "全部商品", "children": []}])

    def _goods(self, goods_id: int) -> dict[str, Any] | None:
        product = self.account.products.get(str(goods_id))
        if product is None:
            return None
        skus = sorted(o.sku for o in self.supplier.offers.values() if o.product_id == str(goods_id))
        return {
            "goodsId": goods_id,
            "name": skus[0] if skus else str(goods_id),
            "salesPrice": format_money(product.price),
            "status": GOODS_ON_SALE if product.on_shelf else GOODS_OFF_SALE,
            "stockCount": VIRTUAL_STOCK if product.stock is None else product.stock,
            "skuType": SINGLE_SKU,
            "minQuantity": 1,
            "maxQuantity": MAX_COUNT,
        }

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback:
        data = dumps_json(
            {
                "outerNumber": order.merchant_order_no,
                "orderNumber": order.order_no,
                "status": STATUS[status],
                "count": order.quantity,
                "money": format_money(order.total),
                "result": _result(order, status),
            }
        )
        headers = signed_headers(self._app_id.reveal(), self._secret.reveal(), data, self.wall_clock())
        return OutgoingCallback(data, headers)

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip() == b"ok"


# ---------------------------------------------------------------- rendering


def _ok(data: Any, msg: str = "成功") -> Response:
    return Response.json(200, {"code": CODE_OK, "msg": msg, "data": data})


def _fail(msg: str) -> Response:
    return Response.json(200, {"code": CODE_FAILED, "msg": msg, "data": None})


def _result(order: SimOrder, status: Status) -> str:
    _, receipt = order.goods(status)
    text = _RESULTS[status]
    return f"{text}，流水号{receipt}" if receipt else text


def _order_json(order: SimOrder) -> dict[str, Any]:
    cards, _ = order.goods()
    return {
        "orderNumber": order.order_no,
        "outerNumber": order.merchant_order_no,
        "goodsId": order.product_id,
        "count": order.quantity,
        "status": STATUS[order.status],
        "money": format_money(order.total),
        "retMoney": format_money(order.total if order.status is Status.FAILED else Decimal(0)),
        "result": _result(order, order.status),
        "cards": [{"cardNo": c.number, "cardPwd": c.password} for c in cards],
    }


# ------------------------------------------------------------------ parsing


def _goods_id(value: object) -> int:
    """``goodsId``: a string of digits on order/create, a number on
    goods/getDetail in the named source's examples; either is taken."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise _Malformed("goodsId 必须是商品ID")


def _attach(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise _Malformed("attach 必须是数组")
    out: dict[str, str] = {}
    for item in raw:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            raise _Malformed("attach 的每一项必须有 name 和 value")
        value = item.get("value")
        if not isinstance(value, str):
            raise _Malformed("attach 的 value 必须是字符串")
        out[item["name"]] = value
    return out


def _parse_create(body: Mapping[str, Any]) -> OrderIn:
    goods_id = _goods_id(body.get("goodsId"))
    outer = body.get("outerNumber")
    if not isinstance(outer, str) or not 0 < len(outer) <= 64:
        raise _Malformed("outerNumber 必须是1到64个字符")
    count = body.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise _Malformed("count 必须是正整数")
    if body.get("sku") not in (None, ""):
        raise _Malformed("单规格商品的 sku 必须为空")
    fields = _attach(body.get("attach"))
    account = fields.pop(ACCOUNT_NAME, None) or None
    cap = body.get("safePrice")
    # a JSON number (read as int or Decimal), never a string
    if cap is not None and (
        isinstance(cap, bool) or not isinstance(cap, int | Decimal) or not Decimal(cap).is_finite() or cap < 0
    ):
        raise _Malformed("safePrice 必须是数字")
    url = body.get("notifyUrl") or None
    if url is not None and not (
        isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc
    ):
        raise _Malformed("notifyUrl 必须是http(s)地址")
    return OrderIn(
        merchant_order_no=outer,
        product_id=str(goods_id),
        quantity=count,
        account=account,
        fields=fields,
        max_total_price=None if cap is None else Decimal(cap),
        notify_url=url,
    )


__all__ = ["KayixinSimulator", "md5_signature", "signed_headers"]
