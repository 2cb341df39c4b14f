"""The simulated upstream for the ``ofpay`` protocol: 欧飞 (Ofpay) direct
top-up, API version 6.0.

Written from the protocol as Ofpay's integrations show it (bluecatlee/common
``OuFeiRechargeUtil.java``, Ren650119726/okdeer-mall, baolm-hp/
brand-GascardInterface ``OfcardReturnCodes.java``), not from the ``ofpay``
plugin: it verifies and signs with its own code, so the plugin and the
simulator check each other. The account behind it (products, balance,
fates, faults, ledger, callbacks) is ``kamen_router.sim.core.SupplierAccount``.

Credentials: ``userid`` (the SP account), ``password`` (sent only as its
MD5, ``userpws``) and ``keystr`` (the KeyStr agreed with Ofpay, never sent;
``OFCARD`` when not set). Every endpoint reads its parameters from the
query string and from a form body alike (integrations use both); form
bodies are read as GBK, Ofpay's encoding.

===============================  ================================================================
endpoint                         parameters -> reply
===============================  ================================================================
``/onlineorder.do``              ``userid, userpws, cardid, cardnum, sporder_id, sporder_time,
                                 game_userid[, game_area, game_srv], md5_str, ret_url, version``
                                 -> XML ``<orderinfo>``: ``err_msg, retcode`` and, when
                                 accepted (retcode 1), ``orderid, cardid, cardnum, ordercash,
                                 cardname, sporder_id, game_userid, game_state``
``/api/query.do``                ``userid, spbillid`` -> plain text ``1`` success, ``0`` in
                                 progress, ``9`` failed, ``-1`` no such order
``/newqueryuserinfo.do``         ``userid, userpws, version`` -> XML ``<userinfo>``: ``err_msg,
                                 retcode, username, ret_leftcredit``
===============================  ================================================================

``userpws`` is the lower-case hex MD5 of the password. ``md5_str =
UPPER(md5(userid + userpws + cardid + cardnum + sporder_id + sporder_time +
game_userid + game_area + game_srv + KeyStr))``: a phone top-up sends no
``game_area``/``game_srv``, and the string is the documented one; a game
top-up's area and server go in before KeyStr. Strings are hashed as GBK.
XML replies are declared GB2312 and encoded GB18030 (its superset, which
Ofpay's GBK texts need). ``game_state`` in an accepted reply is the
order's state at the time of the reply (0 in progress, 1 success, 9
failed). The product is ``cardid`` with ``cardnum``, the face value for a
phone top-up (140101 fast, 170101 slow) and ``1`` for a fixed-value
product: an ``ofpay`` offer's product id ``CARDID:CARDNUM``.

How each answer is given (the first failing check answers):

- a missing parameter, a ``version`` other than 6.0 or a malformed
  ``sporder_time``: 9999 (缺少必需参数 / 参数错误);
- a ``userid`` or ``userpws`` that is not the account's: 9999 (用户名或密码错误);
- an ``md5_str`` that does not match: 9999 (MD5串验证错误);
- a phone top-up for anything but an 11-digit mobile number: 1018;
- then the account's: the rate limit 9999, a known ``sporder_id`` 9999 (SP
  订单号重复), maintenance 9999, an unknown or off-shelf product and one out
  of stock 1004 (此商品暂不可用: a top-up has no stock of its own), an invalid
  or blacklisted account 1018, insufficient balance 9999 (账户余额不足).

Only 1, 9999, 105, 334, 1043, 1004 and 1018 are numbered in the sources;
Ofpay's texts for a bad password, a bad MD5 string, a low balance or a
duplicate order number appear there without their numbers. For those the
simulator answers Ofpay's generic 9999 ("unknown error") with the text, as a
client that knows only the documented codes would have to read them: the
order's fate is unknown until a query says otherwise.

``query.do`` asks by ``userid`` alone (it is not signed); for a ``userid``
the account does not know it answers an error text, none of the four
states. Inside the not-found window (``Simulate.not_found_rate``) it
answers ``-1``.

Reply faults (``Simulate``): a timeout holds the normal reply; a system
error answers 9999 (未知错误); a duplicate reply answers 9999 "SP订单号重复" as
if the order had been submitted before; resets and gateway pages come from
``ProtocolSimulator``.

Callbacks go to each order's ``ret_url`` (none when it is empty): a GBK
form POST of ``ret_code`` (1 success, 9 failed), ``sporder_id``,
``ordersuccesstime`` (``yyyyMMddHHmmss``, Beijing time), ``err_msg`` and
``sign = UPPER(md5(userid + ret_code + sporder_id + KeyStr))``. The answer
``OK`` (HTTP 200, any case) acknowledges it; anything else is sent again.
No callback says "in progress".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import ClassVar
from xml.sax.saxutils import escape

import trio

from ..config import Simulate, SupplierConfig
from ..http import Request, Response
from .base import ProtocolSimulator, Reply
from .core import Clock, OrderIn, OutgoingCallback, Refusal, Refused, SimOrder, Status

PATH_ORDER = "/onlineorder.do"
PATH_QUERY = "/api/query.do"
PATH_BALANCE = "/newqueryuserinfo.do"
VERSION = "6.0"
DEFAULT_KEYSTR = "OFCARD"
ENCODING = "gb18030"
BEIJING = timezone(timedelta(hours=8))
PHONE_CARDIDS = frozenset({"140101", "170101"})

ACCEPTED = "1"
UNKNOWN_ERROR = "9999"
PRODUCT_UNAVAILABLE = "1004"
BAD_ACCOUNT = "1018"

#: how each of the account's refusals is answered: retcode, err_msg
REFUSALS: Mapping[Refusal, tuple[str, str]] = {
    Refusal.AUTH: (UNKNOWN_ERROR, "MD5串验证错误"),
    Refusal.RATE_LIMITED: (UNKNOWN_ERROR, "请求过于频繁，请稍后再试"),
    Refusal.DUPLICATE: (UNKNOWN_ERROR, "SP订单号重复"),
    Refusal.MAINTENANCE: (UNKNOWN_ERROR, "系统维护中"),
    Refusal.UNKNOWN_PRODUCT: (PRODUCT_UNAVAILABLE, "此商品暂不可用"),
    Refusal.OFF_SHELF: (PRODUCT_UNAVAILABLE, "此商品暂不可用"),
    Refusal.OUT_OF_STOCK: (PRODUCT_UNAVAILABLE, "此商品暂不可用"),
    Refusal.INVALID_ACCOUNT: (BAD_ACCOUNT, "充值账号错误"),
    # Ofpay takes no price cap, so the account never refuses on one
    Refusal.PRICE_ABOVE_CEILING: (UNKNOWN_ERROR, "未知错误"),
    Refusal.INSUFFICIENT_BALANCE: (UNKNOWN_ERROR, "账户余额不足"),
}

GAME_STATE: Mapping[Status, str] = {Status.PROCESSING: "0", Status.SUCCESS: "1", Status.FAILED: "9"}

_SPORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PHONE = re.compile(r"^1[0-9]{10}$")
_SPORDER_TIME = re.compile(r"^[0-9]{14}$")


class _Malformed(Exception):
    """The request's parameters are missing, repeated or not a form."""


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode(ENCODING)).hexdigest()


def _same(expected: str, received: str) -> bool:
    """Hex digests compared in constant time, without regard to case."""
    received = received.strip().lower()
    return received.isascii() and hmac.compare_digest(expected.lower(), received)


def xml_reply(root: str, fields: Mapping[str, str], status: int = 200) -> Response:
    """A ``<root>`` document the way Ofpay writes one: declared GB2312."""
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    text = f'<?xml version="1.0" encoding="GB2312" ?>\n<{root}>{inner}</{root}>\n'
    return Response(status, text.encode(ENCODING), "text/xml; charset=GB2312")


def order_error(retcode: str, err_msg: str) -> Response:
    return xml_reply("orderinfo", {"err_msg": err_msg, "retcode": retcode})


def text_reply(text: str) -> Response:
    return Response(200, text.encode(ENCODING), "text/html; charset=GB2312")


def parameters(request: Request) -> dict[str, str]:
    """The query string's and the form body's parameters together (the
    body's ``%XX`` read as GBK). Raises ``_Malformed`` for a repeated name."""
    pairs = [(name, value) for name, values in request.query.items() for value in values]
    if request.body.strip():
        try:
            text = request.body.decode("ascii")
            pairs += urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=ENCODING, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise _Malformed("the body is not a form") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise _Malformed(f"{name} is repeated")
        out[name] = value
    return out


class OfpaySimulator(ProtocolSimulator):
    """One simulated Ofpay account (see the module docstring).

    ``OfpaySimulator(supplier, simulate)`` is the factory the daemon calls
    (``OfpayPlugin.simulator``); see ``ProtocolSimulator`` for the keyword
    arguments and ``self.account`` for steering it."""

    protocol: ClassVar[str] = "ofpay"

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
        self._userid = self.credential("userid")
        self._password = self.credential("password")
        self._keystr = supplier.credentials.get("keystr")
        self._endpoints: dict[str, Callable[[Mapping[str, str]], Response | Reply]] = {
            PATH_ORDER: self._order,
            PATH_QUERY: self._query,
            PATH_BALANCE: self._balance,
        }

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return Response(404, b"", "text/html; charset=GB2312")
        if request.method not in ("GET", "POST"):
            return Response(405, b"", "text/html; charset=GB2312")
        try:
            params = parameters(request)
        except _Malformed:
            params = None
        if params is None:
            if request.path == PATH_QUERY:
                return text_reply("参数错误")
            return order_error(UNKNOWN_ERROR, "参数错误")
        return endpoint(params)

    def _known(self, params: Mapping[str, str], *, with_password: bool) -> bool:
        """Whether ``userid`` (and ``userpws``) are the account's."""
        userid = params.get("userid", "")
        ours = self._userid.reveal().encode(ENCODING)
        if not hmac.compare_digest(userid.encode(ENCODING, "replace"), ours):
            return False
        return not with_password or _same(md5_hex(self._password.reveal()), params.get("userpws", ""))

    def _keystr_value(self) -> str:
        return self._keystr.reveal() if self._keystr is not None else DEFAULT_KEYSTR

    # ------------------------------------------------------------- endpoints

    def _order(self, params: Mapping[str, str]) -> Response | Reply:
        names = ("userid", "userpws", "cardid", "cardnum", "sporder_id", "sporder_time", "game_userid")
        values = [params.get(name, "").strip() for name in names]
        if not all(values) or not params.get("md5_str"):
            return order_error(UNKNOWN_ERROR, "缺少必需参数")
        if params.get("version", "").strip() != VERSION or not _valid_time(params["sporder_time"]):
            return order_error(UNKNOWN_ERROR, "参数错误")
        if not self._known(params, with_password=True):
            return order_error(UNKNOWN_ERROR, "用户名或密码错误")
        _, _, cardid, cardnum, sporder_id, _, game_userid = values
        # signed over the values exactly as sent
        signed = "".join(params[name] for name in names)
        signed += params.get("game_area", "") + params.get("game_srv", "")
        if not _same(md5_hex(signed + self._keystr_value()), params["md5_str"]):
            return self._refusal(Refused(Refusal.AUTH))
        if not _SPORDER_ID.match(sporder_id):
            return order_error(UNKNOWN_ERROR, "SP订单号格式错误")
        if cardid in PHONE_CARDIDS and not _PHONE.match(game_userid):
            return order_error(BAD_ACCOUNT, "充值号码错误")
        fields = {k: params[k] for k in ("game_area", "game_srv") if params.get(k)}
        result = self.account.place(
            OrderIn(
                merchant_order_no=sporder_id,
                product_id=self._product_id(cardid, cardnum),
                quantity=1,
                account=game_userid,
                fields=fields,
                notify_url=_notify_url(params.get("ret_url", "")),
                extra={"cardid": cardid, "cardnum": cardnum},
            )
        )
        if isinstance(result, Refused):
            return self._refusal(result)
        order = result.order
        return self.reply_to(
            result,
            xml_reply("orderinfo", self._order_fields(order)),
            duplicate=order_error(*REFUSALS[Refusal.DUPLICATE]),
            system_error=order_error(UNKNOWN_ERROR, "未知错误"),
        )

    def _refusal(self, refused: Refused) -> Response:
        return order_error(*REFUSALS[refused.reason])

    def _product_id(self, cardid: str, cardnum: str) -> str:
        """The account's product for ``cardid`` and ``cardnum`` (a face value
        matches however it is written: 100, 100.0), or the pair as given."""
        wanted = _amount(cardnum)
        for product_id in self.account.products:
            their_cardid, _, their_cardnum = product_id.partition(":")
            if their_cardid == cardid and wanted is not None and _amount(their_cardnum) == wanted:
                return product_id
        return f"{cardid}:{cardnum}"

    def _order_fields(self, order: SimOrder) -> dict[str, str]:
        cardnum = str(order.extra.get("cardnum", ""))
        return {
            "err_msg": "",
            "retcode": ACCEPTED,
            "orderid": order.order_no,
            "cardid": str(order.extra.get("cardid", "")),
            "cardnum": cardnum,
            "ordercash": f"{order.total:.3f}",
            "cardname": f"全国话费{cardnum}元快充",
            "sporder_id": order.merchant_order_no,
            "game_userid": order.account or "",
            "game_state": GAME_STATE[order.status],
        }

    def _query(self, params: Mapping[str, str]) -> Response:
        spbillid = params.get("spbillid", "").strip()
        if not spbillid:
            return text_reply("参数错误")
        if not self._known(params, with_password=False):
            return text_reply("用户不存在")
        order = self.account.query(spbillid)
        return text_reply("-1" if order is None else GAME_STATE[order.status])

    def _balance(self, params: Mapping[str, str]) -> Response:
        if not self._known(params, with_password=True):
            return xml_reply("userinfo", {"err_msg": "用户名或密码错误", "retcode": UNKNOWN_ERROR})
        fields = {
            "err_msg": "",
            "retcode": ACCEPTED,
            "username": self.supplier.name,
            "ret_leftcredit": f"{self.account.balance:.3f}",
        }
        return xml_reply("userinfo", fields)

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback | None:
        if status is Status.PROCESSING:
            return None  # Ofpay notifies results only
        ret_code = GAME_STATE[status]
        sporder_id = order.merchant_order_no
        sign = md5_hex(self._userid.reveal() + ret_code + sporder_id + self._keystr_value()).upper()
        fields = {
            "ret_code": ret_code,
            "sporder_id": sporder_id,
            "ordersuccesstime": datetime.fromtimestamp(self.wall_clock(), BEIJING).strftime("%Y%m%d%H%M%S"),
            "err_msg": "充值成功" if status is Status.SUCCESS else "充值失败",
            "sign": sign,
        }
        body = urllib.parse.urlencode(fields, encoding="gbk").encode("ascii")
        return OutgoingCallback(body, {"content-type": "application/x-www-form-urlencoded; charset=GBK"})

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip().upper() == b"OK"


def _valid_time(text: str) -> bool:
    if not _SPORDER_TIME.match(text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


def _amount(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _notify_url(ret_url: str) -> str | None:
    parts = urllib.parse.urlsplit(ret_url.strip())
    return ret_url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


__all__ = ["OfpaySimulator", "md5_hex"]
