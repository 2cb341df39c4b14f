"""The simulated upstream for the ``juhe`` protocol: 聚合数据 (Juhe) phone
top-up, ``/ofpay/mobile/*``.

Written from the protocol as Juhe publishes it (juhe.cn/docs/85, as copied
in public integrations such as syx1314/outZhongkongv2
``extend/Recharge/Juheh.php``), not from the ``juhe`` plugin: it signs and
verifies with its own code, so the plugin and the simulator check each
other. The account behind it (products, balance, fates, faults, ledger,
callbacks) is ``kamen_router.sim.core.SupplierAccount``.

Credentials: ``appkey`` (the API's AppKey, sent as ``key``) and ``openid``
(the account's OpenID, never sent: it only goes into signatures). Every
endpoint reads its parameters from the query string and from a form body
alike (integrations use both), and answers HTTP 200 with JSON
``{"reason", "result", "error_code"}``:

=================================  ==============================================================
endpoint                           parameters -> ``result`` when ``error_code`` is 0
=================================  ==============================================================
``/ofpay/mobile/onlineorder``      ``key, phoneno, cardnum, orderid, sign``;
                                   ``sign = md5(OpenID + key + phoneno + cardnum + orderid)`` ->
                                   ``cardid, cardnum`` (the quantity, "1"), ``ordercash`` (a
                                   number), ``cardname, sporder_id, uorderid, game_userid,
                                   game_state`` ("0": a fresh order always says 0)
``/ofpay/mobile/ordersta``         ``key, orderid`` -> ``uordercash, sporder_id, game_state``
                                   (0 in progress, 1 success, 9 failed)
``/ofpay/mobile/yue``              ``key, timestamp, sign``; ``sign = md5(OpenID + key +
                                   timestamp)`` -> ``uid, money``
=================================  ==============================================================

md5 is lower-case hex of the UTF-8 bytes (signatures are compared without
regard to case). ``cardnum`` in a request is the face value in yuan, which
is the product id of a ``juhe`` offer; ``orderid`` is 8 to 32 letters and
digits; ``phoneno`` is an 11-digit mobile number.

How each answer is given (checks in this order; the first failing answers):

- a ``key`` that is not the account's: 10001 (Juhe's platform-wide "wrong
  request key"), before anything else;
- a missing or repeated parameter, or a body that is not a form: 208502;
- a ``sign`` that does not match: 208507;
- an ``orderid``, ``phoneno`` or ``cardnum`` out of shape: 208511, 208505,
  208506;
- then the account's checks: the rate limit 10012 ("too many requests"),
  a known ``orderid`` 208509 ("order number exists"), maintenance 10020
  ("API under maintenance"), an unknown or off-shelf face value and an
  invalid or blacklisted number 208501 ("number and face value not
  allowed"), out of stock 208503 ("operator region under maintenance"),
  insufficient balance 208517.

Juhe's platform-wide codes (10001-10021) are its published common table.
Its business codes for the top-up API are not in the public sources this
simulator was written from: the 2085xx numbers above are the simulator's
own, in Juhe's range, each with a Chinese reason as Juhe writes them. A
client can tell nothing from them but "not accepted, or not known": the
plugin reads every one as UNKNOWN. An ``ordersta`` for an order the
account does not have (or inside the not-found window) answers 208516
("order not found").

Reply faults (``Simulate``): a timeout holds the normal reply; a system
error answers 10014 ("system error: query the order"); a duplicate reply
answers 208509 as if the order had been submitted before; resets and
gateway pages come from ``ProtocolSimulator``.

Callbacks. Juhe keeps one notify URL per account (set by its support
staff), so orders carry none: the account's callbacks go to
``callback_url_on_file``, which the daemon and the conformance kit set.
When an order succeeds or fails, the simulator POSTs the form
``sporder_id, orderid, sta`` (1 success, 9 failed), ``sign = md5(appkey +
sporder_id + orderid)`` (``sta`` is not signed), and ``err_msg`` for a
failure. Juhe takes any text in the answer as "received" and sends again
only when nothing comes back, so any non-empty body acknowledges it. No
callback says "in progress".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import trio

from ..config import Simulate, SupplierConfig
from ..http import Request, Response
from .base import ProtocolSimulator, Reply
from .core import Clock, OrderIn, OutgoingCallback, Refusal, Refused, SimOrder, Status

PATH_ORDER = "/ofpay/mobile/onlineorder"
PATH_QUERY = "/ofpay/mobile/ordersta"
PATH_BALANCE = "/ofpay/mobile/yue"

# Juhe's platform-wide codes
OK = 0
WRONG_KEY = 10001
TOO_MANY_REQUESTS = 10012
SYSTEM_ERROR = 10014
API_MAINTENANCE = 10020
# the top-up API's business codes (the simulator's own numbers: see above)
NOT_ALLOWED = 208501
BAD_PARAMETERS = 208502
REGION_MAINTENANCE = 208503
BAD_PHONE = 208505
BAD_FACE_VALUE = 208506
BAD_SIGN = 208507
ORDERID_EXISTS = 208509
BAD_ORDERID = 208511
ORDER_NOT_FOUND = 208516
LOW_BALANCE = 208517

REASONS: Mapping[int, str] = {
    OK: "查询成功",
    WRONG_KEY: "错误的请求KEY",
    TOO_MANY_REQUESTS: "请求超过次数限制",
    SYSTEM_ERROR: "系统内部异常(调用充值类业务时，请务必联系客服或通过订单查询接口检测订单，避免造成损失)",
    API_MAINTENANCE: "接口维护",
    NOT_ALLOWED: "不允许充值的手机号码及金额",
    BAD_PARAMETERS: "请求参数错误",
    REGION_MAINTENANCE: "运营商地区维护，暂不能充值",
    BAD_PHONE: "错误的手机号码",
    BAD_FACE_VALUE: "错误的充值金额",
    BAD_SIGN: "校验值sign错误",
    ORDERID_EXISTS: "商家订单号重复",
    BAD_ORDERID: "错误的订单号",
    ORDER_NOT_FOUND: "订单号不存在",
    LOW_BALANCE: "当前账户余额不足",
}

#: how each of the account's refusals is answered
REFUSALS: Mapping[Refusal, int] = {
    Refusal.AUTH: BAD_SIGN,
    Refusal.RATE_LIMITED: TOO_MANY_REQUESTS,
    Refusal.DUPLICATE: ORDERID_EXISTS,
    Refusal.MAINTENANCE: API_MAINTENANCE,
    Refusal.UNKNOWN_PRODUCT: NOT_ALLOWED,
    Refusal.OFF_SHELF: NOT_ALLOWED,
    Refusal.INVALID_ACCOUNT: NOT_ALLOWED,
    # Juhe takes no price cap, so the account never refuses on one
    Refusal.PRICE_ABOVE_CEILING: NOT_ALLOWED,
    Refusal.OUT_OF_STOCK: REGION_MAINTENANCE,
    Refusal.INSUFFICIENT_BALANCE: LOW_BALANCE,
}

GAME_STATE: Mapping[Status, str] = {Status.PROCESSING: "0", Status.SUCCESS: "1", Status.FAILED: "9"}

_ORDERID = re.compile(r"^[A-Za-z0-9]{8,32}$")
_PHONE = re.compile(r"^1[0-9]{10}$")
_FACE_VALUE = re.compile(r"^[1-9][0-9]{0,3}$")


class _Malformed(Exception):
    """The request's parameters are missing, repeated or not a form."""


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _signed(expected: str, received: str) -> bool:
    received = received.strip().lower()
    return received.isascii() and hmac.compare_digest(expected, received)


def _json_amount(value: Decimal) -> float:
    """``ordercash`` goes out as a JSON number, as Juhe sends it. A float of
    an amount in cents (under 15 significant digits) prints back as exactly
    those digits, so nothing is lost on the wire."""
    return float(value)


def reply(code: int, result: Any = None) -> Response:
    body = {"reason": REASONS.get(code, "错误"), "result": result, "error_code": code}
    return Response.json(200, body)


def parameters(request: Request) -> dict[str, str]:
    """The query string's and the form body's parameters together. Raises
    ``_Malformed`` for a body that is not a UTF-8 form or a repeated name."""
    pairs = [(name, value) for name, values in request.query.items() for value in values]
    if request.body.strip():
        try:
            text = request.body.decode("utf-8")
            pairs += urllib.parse.parse_qsl(
                text, keep_blank_values=True, strict_parsing=True, errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            raise _Malformed("the body is not a form") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise _Malformed(f"{name} is repeated")
        out[name] = value
    return out


def _required(params: Mapping[str, str], *names: str) -> list[str]:
    values = [params.get(name, "").strip() for name in names]
    if not all(values):
        raise _Malformed("a required parameter is missing")
    return values


class JuheSimulator(ProtocolSimulator):
    """One simulated Juhe account (see the module docstring).

    ``JuheSimulator(supplier, simulate)`` is the factory the daemon calls
    (``JuhePlugin.simulator``); see ``ProtocolSimulator`` for the keyword
    arguments and ``self.account`` for steering it."""

    protocol: ClassVar[str] = "juhe"

    def __init__(
        self,
        supplier: SupplierConfig,
        simulate: Simulate | None = None,
        *,
        clock: Clock = trio.current_time,
        wall_clock: Clock = time.time,
        rate_limit_per_s: float | None = None,
        timeout_hold_s: float | None = None,
    ) -> None:
        super().__init__(
            supplier,
            simulate,
            clock=clock,
            wall_clock=wall_clock,
            rate_limit_per_s=rate_limit_per_s,
            timeout_hold_s=timeout_hold_s,
        )
        self._appkey = self.credential("appkey")
        self._openid = self.credential("openid")
        # Juhe's own account number (not the OpenID, which stays secret)
        self._uid = str(zlib.crc32(supplier.name.encode()))
        self._endpoints: dict[str, Callable[[Mapping[str, str]], Response | Reply]] = {
            PATH_ORDER: self._order,
            PATH_QUERY: self._query,
            PATH_BALANCE: self._balance,
        }

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return Response.json(404, {"reason": "接口地址不存在", "result": None, "error_code": 404})
        if request.method not in ("GET", "POST"):
            return Response.json(405, {"reason": "请求方式错误", "result": None, "error_code": 405})
        try:
            params = parameters(request)
            # the gateway answers a key it does not know before any API logic
            if not hmac.compare_digest(params.get("key", "").encode(), self._appkey.reveal().encode()):
                return reply(WRONG_KEY)
            return endpoint(params)
        except _Malformed:
            return reply(BAD_PARAMETERS)

    # ------------------------------------------------------------- endpoints

    def _order(self, params: Mapping[str, str]) -> Response | Reply:
        phoneno, cardnum, orderid, sign = _required(params, "phoneno", "cardnum", "orderid", "sign")
        key, openid = self._appkey.reveal(), self._openid.reveal()
        if not _signed(md5_hex(openid + key + phoneno + cardnum + orderid), sign):
            return self._refusal(Refused(Refusal.AUTH))
        if not _ORDERID.match(orderid):
            return reply(BAD_ORDERID)
        if not _PHONE.match(phoneno):
            return reply(BAD_PHONE)
        if not _FACE_VALUE.match(cardnum):
            return reply(BAD_FACE_VALUE)
        result = self.account.place(
            OrderIn(
                merchant_order_no=orderid,
                product_id=cardnum,
                quantity=1,
                account=phoneno,
                notify_url=self.callback_url_on_file,
            )
        )
        if isinstance(result, Refused):
            return self._refusal(result)
        order = result.order
        return self.reply_to(
            result,
            reply(OK, self._placed_json(order)),
            duplicate=reply(ORDERID_EXISTS),
            system_error=reply(SYSTEM_ERROR),
        )

    def _refusal(self, refused: Refused) -> Response:
        return reply(REFUSALS[refused.reason])

    def _query(self, params: Mapping[str, str]) -> Response:
        (orderid,) = _required(params, "orderid")
        order = self.account.query(orderid)
        if order is None:
            return reply(ORDER_NOT_FOUND)
        return reply(
            OK,
            {
                "uordercash": f"{order.total:.3f}",
                "sporder_id": sporder_id(order),
                "game_state": GAME_STATE[order.status],
            },
        )

    def _balance(self, params: Mapping[str, str]) -> Response:
        timestamp, sign = _required(params, "timestamp", "sign")
        if not _signed(md5_hex(self._openid.reveal() + self._appkey.reveal() + timestamp), sign):
            return reply(BAD_SIGN)
        return reply(OK, {"uid": self._uid, "money": f"{self.account.balance:.3f}"})

    def _placed_json(self, order: SimOrder) -> dict[str, Any]:
        face = order.product_id
        return {
            # Juhe's own product number for the face value, and the quantity
            "cardid": f"19{int(face):05d}",
            "cardnum": str(order.quantity),
            "ordercash": _json_amount(order.total),
            "cardname": f"全国话费{face}元直充",
            "sporder_id": sporder_id(order),
            "uorderid": order.merchant_order_no,
            "game_userid": order.account,
            # a fresh submit always says "in progress", whatever happens next
            "game_state": GAME_STATE[Status.PROCESSING],
        }

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback | None:
        if status is Status.PROCESSING:
            return None  # Juhe notifies results only
        ref = sporder_id(order)
        fields = {
            "sporder_id": ref,
            "orderid": order.merchant_order_no,
            "sta": GAME_STATE[status],
            "sign": md5_hex(self._appkey.reveal() + ref + order.merchant_order_no),
        }
        if status is Status.FAILED:
            fields["err_msg"] = "充值失败"
        body = urllib.parse.urlencode(fields).encode("ascii")
        return OutgoingCallback(body, {"content-type": "application/x-www-form-urlencoded"})

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        # any text is "received"; only an empty answer is sent again
        return bool(body.strip())


def sporder_id(order: SimOrder) -> str:
    """Juhe's order number for ``order``: the account's own order number."""
    return order.order_no


__all__ = ["JuheSimulator", "md5_hex", "sporder_id"]
