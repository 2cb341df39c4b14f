"""The simulated upstream for the ``kamen`` protocol: 卡门网
(api.kamennet.com) order interface, written from its public sources
(PROTOCOLS.md and the .NET integration it names), not from the plugin, so
the two check each other.

Form-encoded POSTs (paths matched without regard to case, as IIS does),
answered in XML declared and encoded GB2312:

``/API/Order/Charge.aspx``
    ``CustomerId, CustomerOrderNo, ProductId, BuyNum, ChargeAccount``, the
    optional ``ChargePassword, ChargeGame, ChargeRegion, ChargeServer,
    ChargeType, NotifyUrl, BuyerIp, RoleName, RemainingNumber, ContactType,
    ContactQQ``, and ``Sign``. Taken: ``<OrderInfo>`` with ``OrderNo`` and
    ``CustomerOrderNo``. Refused: ``<ErrorInfo>`` with ``ErrorCode`` and
    ``ErrorMsg``.
``/API/Order/Query.aspx``
    ``CustomerId, CustomerOrderNo, Sign``: ``<OrderInfo>`` with
    ``OrderStatus`` (未处理 for the first third of a pending order's time,
    then 处理中; 成功; 失败), ``Description``, ``OrderNo``,
    ``CustomerOrderNo``, ``ProductId``, ``BuyNum``; or 1016 (no such
    order).

``Sign`` is the upper-case hex MD5 of ``name=value`` for every non-empty
parameter in the fixed order above, values URL-encoded as .NET's
``HttpUtility.UrlEncode`` writes them (letters, digits and ``-_.!*()``
kept, space as ``+``, every other UTF-8 byte as lower-case ``%xx``), with
no separators, followed by the key. The simulator decodes the form,
re-encodes each value that way and compares (letter case aside).

Codes, from the integration's table:

==============================  ===========================================
check                           code
==============================  ===========================================
missing parameter               1001 缺少必要参数
bad product id, quantity or     1002 参数格式不正确 (an account refused as
notify URL; account refused     invalid or blacklisted is this too: Kamen
                                lists no account code)
customer id                     1005 客户ID不存在
signature                       1003 签名错误
rate limit                      1020 该商品x分钟内只能购买一次！
order number exists             1015 客户外部系统订单号已存在 (before every
                                business check)
maintenance                     1024 服务器维护中
product unknown or off shelf    1006 商品不存在或无法购买
out of stock                    1011 库存不足
balance short                   1012 账户余额不足
==============================  ===========================================

Kamen has no price-cap field, so an order is never refused for its price;
it delivers top-ups only (no card delivery is documented), publishes no
balance call and no catalog this simulator serves.

Reply faults: a timeout holds the normal reply; ``unknown_rate`` answers
1014 生成订单失败 (which the integration treats as suspicious: query);
``duplicate_reply_rate`` answers 1015; resets and gateway pages come from
the base class. The not-found window answers 1016 on query.

Callbacks go to the order's ``NotifyUrl``: a form POST (UTF-8) of
``ChargeTime`` (Beijing time, ``yyyy/MM/dd HH:mm:ss``), ``CustomerOrderNo,
OrderNo, ReMark, Status`` (``True``/``False``) and ``Sign``, the lower-case
hex MD5 of ``chargetime=T&customerorderno=C&orderno=O&remark=R&status=S``
plus the key, over the decoded values with ``/`` in the time written
``-``. Only final states are notified; the answer ``True`` acknowledges.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.sax.saxutils import escape

from ..conformance import Profile, accept, skip
from ..http import Request, Response
from .base import ProtocolSimulator, Reply
from .core import OrderIn, OutgoingCallback, Refusal, Refused, SimOrder, Status

CHARGE_PATH = "/api/order/charge.aspx"
QUERY_PATH = "/api/order/query.aspx"
#: Charge.aspx parameters in signing order
CHARGE_ORDER = (
    "CustomerId",
    "CustomerOrderNo",
    "ProductId",
    "BuyNum",
    "ChargeAccount",
    "ChargePassword",
    "ChargeGame",
    "ChargeRegion",
    "ChargeServer",
    "ChargeType",
    "NotifyUrl",
    "BuyerIp",
    "RoleName",
    "RemainingNumber",
    "ContactType",
    "ContactQQ",
)
QUERY_ORDER = ("CustomerId", "CustomerOrderNo")
#: the optional parameters kept with the order (not the account's password)
_EXTRA = CHARGE_ORDER[6:10] + CHARGE_ORDER[11:]
BEIJING = timezone(timedelta(hours=8))
CALLBACK_ACK = b"True"
#: the longest merchant order number taken
MAX_ORDER_NO = 50

_MESSAGES: Mapping[int, str] = {
    1001: "缺少必要参数",
    1002: "参数格式不正确",
    1003: "签名错误",
    1005: "客户ID不存在",
    1006: "商品不存在或无法购买",
    1011: "库存不足",
    1012: "账户余额不足",
    1014: "生成订单失败",
    1015: "客户外部系统订单号已存在",
    1016: "客户外部系统订单号不存在",
    1024: "服务器维护中",
}

_REFUSALS: Mapping[Refusal, int] = {
    Refusal.AUTH: 1003,
    Refusal.RATE_LIMITED: 1020,
    Refusal.DUPLICATE: 1015,
    Refusal.MAINTENANCE: 1024,
    Refusal.UNKNOWN_PRODUCT: 1006,
    Refusal.OFF_SHELF: 1006,
    Refusal.INVALID_ACCOUNT: 1002,
    # never drawn: Kamen carries no ceiling, so the account has none to check
    Refusal.PRICE_ABOVE_CEILING: 1014,
    Refusal.OUT_OF_STOCK: 1011,
    Refusal.INSUFFICIENT_BALANCE: 1012,
}

_STATUS_TEXT = {Status.SUCCESS: "成功", Status.FAILED: "失败"}
_DESCRIPTION = {Status.SUCCESS: "充值成功", Status.FAILED: "充值失败", Status.PROCESSING: "充值处理中"}

_URL_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!*()")


def dotnet_url_encode(value: str) -> str:
    """``HttpUtility.UrlEncode(value, Encoding.UTF8)``."""
    parts = []
    for byte in value.encode("utf-8"):
        if byte in _URL_SAFE:
            parts.append(chr(byte))
        elif byte == 0x20:
            parts.append("+")
        else:
            parts.append(f"%{byte:02x}")
    return "".join(parts)


def kamen_sign(values: Mapping[str, str], order: Sequence[str], key: str) -> str:
    """The request signature: ``name=encoded value`` of every non-empty
    parameter in ``order``, concatenated, the key appended, MD5, upper-case."""
    text = "".join(f"{name}={dotnet_url_encode(values[name])}" for name in order if values.get(name))
    return hashlib.md5((text + key).encode("utf-8")).hexdigest().upper()


def callback_sign(charge_time: str, order_no: str, kamen_no: str, remark: str, status: str, key: str) -> str:
    text = (
        f"chargetime={charge_time.replace('/', '-')}&customerorderno={order_no}"
        f"&orderno={kamen_no}&remark={remark}&status={status}"
    )
    return hashlib.md5((text + key).encode("utf-8")).hexdigest()


class _Refuse(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message if message is not None else _MESSAGES.get(code, "")


def _xml(root: str, elements: Sequence[tuple[str, str]]) -> Response:
    inner = "".join(f"<{tag}>{escape(text)}</{tag}>" for tag, text in elements)
    text = f'<?xml version="1.0" encoding="gb2312"?>\r\n<{root}>{inner}</{root}>'
    return Response(200, text.encode("gb2312", errors="xmlcharrefreplace"), "text/xml; charset=gb2312")


def _error(refusal: _Refuse) -> Response:
    return _xml("ErrorInfo", [("ErrorCode", str(refusal.code)), ("ErrorMsg", refusal.message)])


class KamenSimulator(ProtocolSimulator):
    """One simulated Kamen 云接口 customer (see the module docstring). Needs
    the supplier's ``customer_id`` and ``key`` credentials."""

    protocol: ClassVar[str] = "kamen"
    conformance: ClassVar[Profile] = Profile(
        cards=None,  # no card delivery is documented: top-ups only
        leeway={
            "price_above_ceiling": skip(
                "Kamen's Charge.aspx has no price-cap field, so the supplier cannot refuse an order for its "
                "price; the router alone holds max_price, against the configured price"
            ),
            "balance": accept("Kamen publishes no balance call", "none"),
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._customer_id = self.credential("customer_id")
        self._key = self.credential("key")

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        path = request.path.rstrip("/").lower()
        if path not in (CHARGE_PATH, QUERY_PATH):
            return Response.text(404, "Not Found", "text/html; charset=utf-8")
        if request.method != "POST":
            return Response.text(405, "Method Not Allowed", "text/html; charset=utf-8")
        try:
            if path == CHARGE_PATH:
                return self._charge(self._signed(request.body, CHARGE_ORDER))
            return self._query(self._signed(request.body, QUERY_ORDER))
        except _Refuse as refusal:
            return _error(refusal)

    def _signed(self, body: bytes, order: Sequence[str]) -> dict[str, str]:
        """The parameters of a form whose customer id and signature check
        out, by their canonical names; raises ``_Refuse`` otherwise."""
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (ValueError, UnicodeDecodeError):
            raise _Refuse(1002) from None
        canonical = {name.lower(): name for name in (*order, "Sign")}
        values: dict[str, str] = {}
        for name, value in pairs:
            known = canonical.get(name.lower())
            if known is None:
                continue  # not a parameter of this call: ignored, as it is not signed
            if known in values:
                raise _Refuse(1002, f"{known} given twice")
            values[known] = value
        customer_id = values.get("CustomerId", "")
        if not customer_id:
            raise _Refuse(1001)
        if not hmac.compare_digest(customer_id.encode(), self._customer_id.reveal().encode()):
            raise _Refuse(1005)
        signature = values.get("Sign", "")
        if not signature:
            raise _Refuse(1001)
        expected = kamen_sign(values, order, self._key.reveal())
        if not hmac.compare_digest(expected.encode(), signature.upper().encode()):
            raise _Refuse(1003)
        return values

    # ---------------------------------------------------------------- charge

    def _charge(self, values: Mapping[str, str]) -> Response | Reply:
        for name in CHARGE_ORDER[1:5]:
            if not values.get(name):
                raise _Refuse(1001, f"{_MESSAGES[1001]}：{name}")
        order_no, product_id, quantity = values["CustomerOrderNo"], values["ProductId"], values["BuyNum"]
        if len(order_no) > MAX_ORDER_NO:
            raise _Refuse(1002, f"{_MESSAGES[1002]}：CustomerOrderNo")
        if not (product_id.isascii() and product_id.isdigit()):
            raise _Refuse(1002, f"{_MESSAGES[1002]}：ProductId")
        if not (quantity.isascii() and quantity.isdigit() and 0 < int(quantity) <= 10000):
            raise _Refuse(1002, f"{_MESSAGES[1002]}：BuyNum")
        notify_url = values.get("NotifyUrl") or None
        if notify_url is not None:
            parts = urlsplit(notify_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _Refuse(1002, f"{_MESSAGES[1002]}：NotifyUrl")
        result = self.account.place(
            OrderIn(
                merchant_order_no=order_no,
                product_id=product_id,
                quantity=int(quantity),
                account=values["ChargeAccount"],
                fields={name: values[name] for name in _EXTRA if values.get(name)},
                notify_url=notify_url,
            )
        )
        if isinstance(result, Refused):
            raise _Refuse(_REFUSALS[result.reason], self._refusal_message(result))
        order = result.order
        taken = _xml("OrderInfo", [("OrderNo", order.order_no), ("CustomerOrderNo", order.merchant_order_no)])
        return self.reply_to(
            result,
            taken,
            duplicate=_error(_Refuse(1015)),
            system_error=_error(_Refuse(1014)),
        )

    @staticmethod
    def _refusal_message(refused: Refused) -> str:
        if refused.reason is Refusal.RATE_LIMITED:
            minutes = max(1, math.ceil((refused.retry_after or 60.0) / 60.0))
            return f"该商品{minutes}分钟内只能购买一次！"
        if refused.reason is Refusal.INVALID_ACCOUNT:
            return f"{_MESSAGES[1002]}：ChargeAccount"
        return _MESSAGES.get(_REFUSALS[refused.reason], "")

    # ----------------------------------------------------------------- query

    def _query(self, values: Mapping[str, str]) -> Response:
        order_no = values.get("CustomerOrderNo", "")
        if not order_no:
            raise _Refuse(1001, f"{_MESSAGES[1001]}：CustomerOrderNo")
        order = self.account.query(order_no)
        if order is None:
            raise _Refuse(1016)
        return _xml(
            "OrderInfo",
            [
                ("OrderNo", order.order_no),
                ("CustomerOrderNo", order.merchant_order_no),
                ("ProductId", order.product_id),
                ("BuyNum", str(order.quantity)),
                ("OrderStatus", self._status_text(order)),
                ("Description", _DESCRIPTION[order.status]),
            ],
        )

    def _status_text(self, order: SimOrder) -> str:
        if order.status is not Status.PROCESSING:
            return _STATUS_TEXT[order.status]
        assert order.ready_at is not None
        third = (order.ready_at - order.accepted_at) / 3
        return "未处理" if self.account.clock() < order.accepted_at + third else "处理中"

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback | None:
        if status is Status.PROCESSING:
            return None  # Kamen notifies success and failure only
        at = order.delivered_at or order.accepted_at
        wall = self.wall_clock() - (self.account.clock() - at)
        charge_time = datetime.fromtimestamp(wall, BEIJING).strftime("%Y/%m/%d %H:%M:%S")
        remark = _DESCRIPTION[status]
        flag = "True" if status is Status.SUCCESS else "False"
        fields = [
            ("ChargeTime", charge_time),
            ("CustomerOrderNo", order.merchant_order_no),
            ("OrderNo", order.order_no),
            ("ReMark", remark),
            ("Status", flag),
            (
                "Sign",
                callback_sign(
                    charge_time, order.merchant_order_no, order.order_no, remark, flag, self._key.reveal()
                ),
            ),
        ]
        return OutgoingCallback(
            urlencode(fields).encode("ascii"),
            {"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        )

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip() == CALLBACK_ACK


__all__ = [
    "CALLBACK_ACK",
    "CHARGE_ORDER",
    "QUERY_ORDER",
    "KamenSimulator",
    "callback_sign",
    "dotnet_url_encode",
    "kamen_sign",
]
