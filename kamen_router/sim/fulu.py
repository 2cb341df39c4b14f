"""The simulated upstream for the ``fulu`` protocol: 福禄开放平台 (Fulu open
platform) API v2, written from its public documentation (PROTOCOLS.md and
the sources it names), not from the plugin, so the two check each other.

One gateway, ``POST /api/getway``, JSON in and out. A request carries the
public parameters ``app_key, method, timestamp ("yyyy-MM-dd HH:mm:ss",
Beijing time), version "2.0", format "json", charset "utf-8", sign_type
"md5", app_auth_token`` and ``biz_content`` (the method's parameters, a
JSON *string*), and ``sign``: the request object without ``sign``
serialised to compact JSON with unicode and slashes unescaped, its
characters sorted (by code point, as the Go and PHP SDKs do), joined, the
app secret appended, MD5, lower-case hex. The simulator re-serialises what
it parsed (numbers kept as their text) and checks every request that way.

Replies are ``{code, message, result, sign}``: ``result`` is a JSON string
(keys sorted, unicode unescaped, as in the published samples) or ``""``;
``sign`` follows the rule the PHP SDK verifies replies with (the object
without ``sign``, ``json_encode`` with unescaped unicode, so ``/`` written
``\\/``; characters sorted, secret appended, MD5). ``code`` 0 means the call
itself succeeded.

Methods: ``fulu.order.direct.add`` (``customer_order_no, product_id,
charge_account, buy_num``, optional ``customer_price`` per unit and the
game fields), ``fulu.order.card.add`` (``customer_order_no, product_id,
buy_num``, optional ``customer_price``), ``fulu.order.info.get`` (by
``customer_order_no``), ``fulu.user.info.get`` (``name, balance,
is_open``), ``fulu.goods.list.get``, ``fulu.goods.info.get``,
``fulu.goods.stock.check``. Other methods (``fulu.order.mobile.add``, the
templates) are not simulated and answer 1001.

Refusals, with Fulu's own codes where its table has one:

=============================  =============================================
check                          code
=============================  =============================================
public parameters              1000-1015, 1017, 1018 (missing or wrong)
timestamp more than 10 minutes 1004
off
app_key                        1006
signature                      1016
merchant order number exists   4010 (before every business check)
product unknown / off shelf    3001 / 3002
maintenance                    3003 商品维护中 (Fulu's maintenance codes are
                               per product; it has none for the platform)
account refused                4004 充值账号在黑名单中
out of stock                   3005
missing order number, bad      4000, 4001, 4002
quantity, missing account
above ``customer_price``,      4008 添加订单失败 with the reason in the
balance short, rate limit      message: Fulu's table has no code for these,
                               and 4008 ("order not created, query to
                               confirm") is its generic failure
=============================  =============================================

Order states: ``untreated`` (just taken, the first third of its pending
time), ``processing``, ``success``, ``failed``. Query results carry
``order_id, order_price`` (the unit price, as the callback's documented
"交易单价"), ``operator_serial_number`` (a top-up's receipt) and, for a
card order that succeeded, ``cards[{card_number, card_pwd,
card_deadline}]`` with number and password AES-256-ECB encrypted under the
app secret (NUL-padded or cut to 32 bytes, PKCS#7), base64. Submit replies
carry the order without cards.

Reply faults: a timeout holds the normal reply; ``unknown_rate`` answers
5000 系统异常; ``duplicate_reply_rate`` answers 4010; resets and gateway
pages come from the base class. The not-found window answers 4011.

Callbacks go to the notify URL kept for the app in Fulu's console
(``callback_url_on_file``): a JSON POST of ``order_id, charge_finish_time,
customer_order_no, order_status (success|failed), recharge_description,
product_id, price, buy_num, operator_serial_number`` (all strings, as the
.NET integration reads them) and ``sign`` over them by the request rule.
Only final states are notified; the answer ``success`` acknowledges.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..conformance import Profile, accept
from ..http import Request, Response
from ..money import format_money, loads_json, parse_money
from .base import ProtocolSimulator, Reply
from .core import OrderIn, OutgoingCallback, Refusal, Refused, SimOrder, Status

GATEWAY_PATH = "/api/getway"
BEIJING = timezone(timedelta(hours=8))
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
#: how far a request's timestamp may be from the simulator's clock
MAX_SKEW_S = 600.0
CALLBACK_ACK = b"success"

KIND_DIRECT = "直充"
KIND_CARD = "卡密"

#: the public parameters: (name, code when missing, expected value or None,
#: code when it differs)
_PUBLIC: tuple[tuple[str, int, str | None, int], ...] = (
    ("method", 1000, None, 1001),
    ("timestamp", 1002, None, 1003),
    ("app_key", 1005, None, 1006),
    ("version", 1007, "2.0", 1008),
    ("format", 1009, "json", 1010),
    ("charset", 1011, "utf-8", 1012),
    ("sign_type", 1013, "md5", 1014),
    ("sign", 1015, None, 1016),
    ("biz_content", 1017, None, 1018),
)

_MESSAGES: Mapping[int, str] = {
    0: "接口调用成功",
    1000: "必须传入API接口名称",
    1001: "无效的API接口名称",
    1002: "必须传入时间戳",
    1003: "时间戳格式错误",
    1004: "时间戳已超过有效期",
    1005: "必须传入app_key",
    1006: "无效的app_key",
    1007: "必须传入版本号",
    1008: "版本号错误",
    1009: "必须传入format格式",
    1010: "format格式错误",
    1011: "必须传入编码格式",
    1012: "编码格式错误",
    1013: "必须传入签名加密类型",
    1014: "签名加密类型错误",
    1015: "必须传入签名",
    1016: "签名错误",
    1017: "必须传入请求参数集合",
    1018: "缺少必要参数",
    3001: "商品不存在或无法购买",
    3002: "商品已下架",
    3003: "商品维护中",
    3005: "商品库存不足",
    4000: "必须传入外部订单号",
    4001: "购买数量必须大于0",
    4002: "必须传入充值账号",
    4004: "充值账号在黑名单中",
    4008: "添加订单失败",
    4010: "外部订单号已存在",
    4011: "订单不存在",
    5000: "系统异常",
}

#: how ``place`` refusals are answered: code, and the reason added to the
#: message for 4008
_REFUSALS: Mapping[Refusal, tuple[int, str]] = {
    Refusal.AUTH: (1016, ""),
    Refusal.RATE_LIMITED: (4008, "请求过于频繁"),
    Refusal.DUPLICATE: (4010, ""),
    Refusal.MAINTENANCE: (3003, ""),
    Refusal.UNKNOWN_PRODUCT: (3001, ""),
    Refusal.OFF_SHELF: (3002, ""),
    Refusal.INVALID_ACCOUNT: (4004, ""),
    Refusal.PRICE_ABOVE_CEILING: (4008, "商品价格高于customer_price"),
    Refusal.OUT_OF_STOCK: (3005, ""),
    Refusal.INSUFFICIENT_BALANCE: (4008, "账户余额不足"),
}

#: order fields a direct order may carry, as Fulu names them
_ORDER_FIELDS = (
    "charge_game_name",
    "charge_game_region",
    "charge_game_srv",
    "charge_type",
    "charge_game_role",
    "charge_password",
    "charge_ip",
    "contact_qq",
    "contact_tel",
    "remaining_number",
)


class _Refuse(Exception):
    """Answer the request with ``code`` (and ``detail`` after the message)."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


# ------------------------------------------------------------------ JSON


class _Number(str):
    """A JSON number kept as the text it was written with."""


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(text: str, escape_slashes: bool) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == "/" and escape_slashes:
            out.append("\\/")
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def php_json(value: object, *, escape_slashes: bool = False) -> str:
    """Compact JSON with unicode unescaped, as PHP's ``json_encode`` writes
    it with ``JSON_UNESCAPED_UNICODE`` (and ``JSON_UNESCAPED_SLASHES`` unless
    ``escape_slashes``). Numbers: ``_Number`` as written, ``int``, and
    ``Decimal`` as money (``99.20``)."""
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return _json_string(value, escape_slashes)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format_money(value)
    if isinstance(value, Mapping):
        members = (
            _json_string(str(k), escape_slashes) + ":" + php_json(v, escape_slashes=escape_slashes)
            for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(php_json(v, escape_slashes=escape_slashes) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key} given twice")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_exact(data: bytes | str) -> Any:
    """JSON with its members in order, numbers as their text, no duplicate keys."""
    return json.loads(
        data, parse_int=_Number, parse_float=_Number, parse_constant=_constant, object_pairs_hook=_pairs
    )


def fulu_sign(text: str, secret: str) -> str:
    """Fulu's signature of a serialised object: characters sorted, joined,
    the secret appended, MD5, lower-case hex."""
    return hashlib.md5(("".join(sorted(text)) + secret).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ cards


def _aes(secret: str) -> Cipher[modes.ECB]:
    key = secret.encode("utf-8")[:32].ljust(32, b"\0")
    return Cipher(algorithms.AES(key), modes.ECB())


def seal_card(text: str, secret: str) -> str:
    """A card number or password as Fulu delivers it."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = _aes(secret).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


# ------------------------------------------------------------- simulator


class FuluSimulator(ProtocolSimulator):
    """One simulated Fulu merchant app (see the module docstring). Needs the
    supplier's ``app_key`` and ``app_secret`` credentials."""

    protocol: ClassVar[str] = "fulu"
    conformance: ClassVar[Profile] = Profile(
        leeway={
            "insufficient_balance": accept(
                "Fulu's published code table has no insufficient-balance code; the simulator answers "
                "4008 (order not created, query to confirm), which the plugin takes as unknown",
                "unknown",
            ),
            "price_above_ceiling": accept(
                "Fulu takes customer_price but documents no code for refusing an order above it; "
                "4008 (order not created, query to confirm) is unknown",
                "unknown",
            ),
            "rate_limited": accept(
                "Fulu documents no rate-limit code; 4008 (order not created, query to confirm) is unknown",
                "unknown",
            ),
            "maintenance": accept(
                "Fulu's maintenance codes (3003, 3004) are per product, so a supplier in maintenance "
                "shows as a product unavailable",
                "rejected:product_unavailable",
            ),
        }
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app_key = self.credential("app_key")
        self._secret = self.credential("app_secret")
        #: product id -> 直充 or 卡密, from the orders taken (for the catalog)
        self._kinds: dict[str, str] = {}
        self._names = {offer.product_id: offer.sku for offer in self.supplier.offers.values()}
        self._methods: dict[str, Callable[[Mapping[str, Any]], Response | Reply]] = {
            "fulu.order.direct.add": self._direct,
            "fulu.order.card.add": self._card,
            "fulu.order.info.get": self._order_info,
            "fulu.user.info.get": self._user_info,
            "fulu.goods.list.get": self._goods_list,
            "fulu.goods.info.get": self._goods_info,
            "fulu.goods.stock.check": self._stock_check,
        }

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        if request.path.rstrip("/").lower() != GATEWAY_PATH:
            return Response.text(404, "Not Found")
        if request.method != "POST":
            return Response.text(405, "Method Not Allowed")
        try:
            method, biz = self._authentic(request.body)
            return self._methods[method](biz)
        except _Refuse as refusal:
            return self._reply(refusal.code, detail=refusal.detail)

    def _authentic(self, body: bytes) -> tuple[str, Mapping[str, Any]]:
        """The method and its parameters of a well-formed, signed request;
        raises ``_Refuse`` with Fulu's code otherwise."""
        try:
            data = parse_exact(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _Refuse(1018, "请求不是JSON") from None
        if not isinstance(data, dict):
            raise _Refuse(1018, "请求不是JSON对象")
        for name, missing, expected, wrong in _PUBLIC:
            value = data.get(name)
            if value is None or value == "":
                raise _Refuse(missing)
            if not isinstance(value, str) or (expected is not None and value != expected):
                raise _Refuse(wrong)
        if data["method"] not in self._methods:
            raise _Refuse(1001)
        try:
            stamp = datetime.strptime(data["timestamp"], TIMESTAMP_FORMAT).replace(tzinfo=BEIJING)
        except ValueError:
            raise _Refuse(1003) from None
        if abs(self.wall_clock() - stamp.timestamp()) > MAX_SKEW_S:
            raise _Refuse(1004)
        if not hmac.compare_digest(data["app_key"], self._app_key.reveal()):
            raise _Refuse(1006)
        unsigned = {k: v for k, v in data.items() if k != "sign"}
        expected_sign = fulu_sign(php_json(unsigned), self._secret.reveal())
        if not hmac.compare_digest(expected_sign, data["sign"].lower()):
            raise _Refuse(1016)
        try:
            biz = loads_json(data["biz_content"])
        except ValueError:
            raise _Refuse(1018, "biz_content不是JSON") from None
        if biz is None:
            biz = {}
        if not isinstance(biz, dict):
            raise _Refuse(1018, "biz_content不是JSON对象")
        return data["method"], biz

    def _reply(self, code: int, result: object = None, *, detail: str = "") -> Response:
        message = _MESSAGES.get(code, "")
        if detail:
            message = f"{message}：{detail}"
        body: dict[str, object] = {
            "code": code,
            "message": message,
            "result": "" if result is None else php_json(_sorted(result)),
        }
        body["sign"] = fulu_sign(php_json(body, escape_slashes=True), self._secret.reveal())
        return Response(200, php_json(body).encode("utf-8"), "application/json; charset=utf-8")

    # ---------------------------------------------------------------- orders

    def _direct(self, biz: Mapping[str, Any]) -> Response | Reply:
        account = biz.get("charge_account")
        if not isinstance(account, str | int) or isinstance(account, bool) or account == "":
            raise _Refuse(4002)
        fields = {name: str(biz[name]) for name in _ORDER_FIELDS if biz.get(name) not in (None, "")}
        return self._place(biz, KIND_DIRECT, str(account), fields)

    def _card(self, biz: Mapping[str, Any]) -> Response | Reply:
        return self._place(biz, KIND_CARD, None, {})

    def _place(
        self, biz: Mapping[str, Any], kind: str, account: str | None, fields: dict[str, str]
    ) -> Response | Reply:
        order_no = _order_no(biz)
        product_id = biz.get("product_id")
        if isinstance(product_id, bool) or not isinstance(product_id, int | str) or str(product_id) == "":
            raise _Refuse(3001, "product_id")
        quantity = biz.get("buy_num")
        if isinstance(quantity, str) and quantity.isascii() and quantity.isdigit():
            quantity = int(quantity)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            raise _Refuse(4001)
        ceiling = None
        if biz.get("customer_price") not in (None, ""):
            ceiling = parse_money(biz["customer_price"])
            if ceiling is None:
                raise _Refuse(1018, "customer_price")
        result = self.account.place(
            OrderIn(
                merchant_order_no=order_no,
                product_id=str(product_id),
                quantity=quantity,
                account=account,
                fields=fields,
                max_unit_price=ceiling,
                notify_url=self.callback_url_on_file,
            )
        )
        if isinstance(result, Refused):
            code, detail = _REFUSALS[result.reason]
            raise _Refuse(code, detail)
        order = result.order
        self._kinds.setdefault(order.product_id, kind)
        return self.reply_to(
            result,
            self._reply(0, self._order_json(order, cards=False)),
            duplicate=self._reply(4010),
            system_error=self._reply(5000),
        )

    def _order_info(self, biz: Mapping[str, Any]) -> Response:
        order = self.account.query(_order_no(biz))
        if order is None:
            return self._reply(4011)
        return self._reply(0, self._order_json(order, cards=True))

    def _order_json(self, order: SimOrder, *, cards: bool) -> dict[str, object]:
        found, receipt = order.goods()
        secret = self._secret.reveal()
        fields = order.fields
        data: dict[str, object] = {
            "order_id": order.order_no,
            "customer_order_no": order.merchant_order_no,
            "product_id": _product_number(order.product_id),
            "product_name": self._names.get(order.product_id, order.product_id),
            "charge_account": order.account,
            "buy_num": order.quantity,
            "order_type": 4 if order.account else 3,
            "order_price": order.unit_price,
            "order_state": self._state(order),
            "create_time": self._stamp(order.accepted_at),
            "finish_time": None if order.delivered_at is None else self._stamp(order.delivered_at),
            "area": fields.get("charge_game_region"),
            "server": fields.get("charge_game_srv"),
            "type": fields.get("charge_type"),
            "operator_serial_number": receipt or "",
        }
        if cards:
            data["cards"] = [
                {
                    "card_number": seal_card(card.number, secret),
                    "card_pwd": seal_card(card.password, secret),
                    "card_deadline": f"{card.expires} 23:59:59" if card.expires else "",
                }
                for card in found
            ] or None
        return data

    def _state(self, order: SimOrder) -> str:
        if order.status is Status.SUCCESS:
            return "success"
        if order.status is Status.FAILED:
            return "failed"
        # processing: "untreated" until a third of its time has passed
        assert order.ready_at is not None
        third = (order.ready_at - order.accepted_at) / 3
        return "untreated" if self.account.clock() < order.accepted_at + third else "processing"

    def _stamp(self, at: float) -> str:
        """A time on the account's clock as Fulu writes it (Beijing time)."""
        wall = self.wall_clock() - (self.account.clock() - at)
        return datetime.fromtimestamp(wall, BEIJING).strftime(TIMESTAMP_FORMAT)

    # ------------------------------------------------------- account, goods

    def _user_info(self, biz: Mapping[str, Any]) -> Response:
        return self._reply(0, {"name": self.supplier.name, "balance": self.account.balance, "is_open": 1})

    def _product_json(self, product_id: str) -> dict[str, object] | None:
        product = self.account.products.get(product_id)
        if product is None:
            return None
        if product.stock is None or product.stock >= 10:
            stock = "充足"
        else:
            stock = "断货" if product.stock <= 0 else "警报"
        return {
            "product_id": _product_number(product_id),
            "product_name": self._names.get(product_id, product_id),
            "product_type": self._kinds.get(product_id, ""),
            "purchase_price": product.price,
            "sales_status": "上架" if product.on_shelf else "下架",
            "stock_status": stock,
        }

    def _goods_list(self, biz: Mapping[str, Any]) -> Response:
        products = [self._product_json(pid) for pid in self.account.products]
        return self._reply(0, [p for p in products if p is not None])

    def _goods_info(self, biz: Mapping[str, Any]) -> Response:
        product = self._product_json(str(biz.get("product_id", "")))
        return self._reply(3001) if product is None else self._reply(0, product)

    def _stock_check(self, biz: Mapping[str, Any]) -> Response:
        product = self._product_json(str(biz.get("product_id", "")))
        if product is None:
            return self._reply(3001)
        return self._reply(0, {"product_id": product["product_id"], "stock_status": product["stock_status"]})

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback | None:
        if status is Status.PROCESSING:
            return None  # Fulu notifies final states only
        _, receipt = order.goods(status)
        success = status is Status.SUCCESS
        fields = {
            "order_id": order.order_no,
            "charge_finish_time": self._stamp(order.delivered_at or order.accepted_at),
            "customer_order_no": order.merchant_order_no,
            "order_status": "success" if success else "failed",
            "recharge_description": "充值成功" if success else "充值失败",
            "product_id": order.product_id,
            "price": f"{order.unit_price:.4f}",
            "buy_num": str(order.quantity),
            "operator_serial_number": receipt or "",
        }
        signed = {**fields, "sign": fulu_sign(php_json(fields), self._secret.reveal())}
        return OutgoingCallback(
            php_json(signed).encode("utf-8"), {"content-type": "application/json; charset=utf-8"}
        )

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip() == CALLBACK_ACK


def _order_no(biz: Mapping[str, Any]) -> str:
    value = biz.get("customer_order_no")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise _Refuse(4000)
    if len(value) > 64:
        raise _Refuse(1018, "customer_order_no")
    return value


def _product_number(product_id: str) -> int | str:
    """Fulu writes product ids as numbers."""
    return int(product_id) if product_id.isascii() and product_id.isdigit() else product_id


def _sorted(value: object) -> object:
    """``value`` with every object's keys sorted, as Fulu's results are written."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


__all__ = [
    "CALLBACK_ACK",
    "GATEWAY_PATH",
    "FuluSimulator",
    "fulu_sign",
    "parse_exact",
    "php_json",
    "seal_card",
]
