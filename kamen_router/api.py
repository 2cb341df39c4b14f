"""The order API on the Unix socket: HTTP/1.1 with JSON bodies.

``POST /v1/orders``, ``GET /v1/orders/{order_id}``, ``GET /v1/route?sku=``,
``GET /healthz``. Request bodies are validated strictly (types, lengths,
character sets, bounds, unknown fields); a bad one gets a 400 naming the
field and changes nothing. See docs/api.md.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .config import RouterConfig
from .dispatch import Dispatcher, NotReady, OrderConflict, Overloaded, ShuttingDown
from .http import BadRequest, Request, Response
from .money import parse_money
from .orders import FINAL, OrderRequest, State, TransitionError
from .outcome import Card, Deliverables
from .plugin import CallbackRejected, CallbackReply

log = logging.getLogger("kamen_router.api")

# \Z, not $: "$" also matches before a trailing newline ("A1\n" would pass)
ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
ACCOUNT = re.compile(r"^[A-Za-z0-9@._+-]{1,64}\Z")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}\Z")
#: the largest max_price taken, and its finest step
MAX_PRICE = Decimal("1000000000")
MAX_PRICE_PLACES = 8
MAX_QUANTITY = 1000
MAX_FIELDS = 16
_ORDER_KEYS = {"order_id", "sku", "quantity", "account", "fields", "max_price", "deadline_s", "wait_s"}


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", code="invalid_order")


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _invalid(key, "must be a number")
    result = float(value)
    if not low <= result <= high:
        raise _invalid(key, f"must be between {low:g} and {high:g}")
    return result


def parse_order(body: object, config: RouterConfig) -> tuple[OrderRequest, float]:
    """Validate a POST body; returns the order request and its wait_s."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_order")
    unknown = sorted(set(body) - _ORDER_KEYS)
    if unknown:
        raise _invalid(unknown[0][:64], "unknown field")
    order_id = body.get("order_id")
    if not isinstance(order_id, str) or not ORDER_ID.match(order_id):
        raise _invalid(
            "order_id", "required: 1-64 characters, letters, digits and _.:- (first a letter or digit)"
        )
    sku = body.get("sku")
    if not isinstance(sku, str) or not sku:
        raise _invalid("sku", "required: a string")
    known = config.skus.get(sku)
    if known is None:
        raise BadRequest(f"sku: unknown sku {sku[:64]!r}", code="unknown_sku")
    sku = known.sku  # the configuration's string: one copy, not one per order held
    quantity = body.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
        raise _invalid("quantity", f"must be an integer from 1 to {MAX_QUANTITY}")
    account = body.get("account")
    if account is not None and (not isinstance(account, str) or not ACCOUNT.match(account)):
        raise _invalid("account", "must be 1-64 characters: letters, digits and @._+-")
    fields = body.get("fields")
    if fields is None:
        fields = {}
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        raise _invalid("fields", f"must be an object of at most {MAX_FIELDS} string values")
    for name, value in fields.items():
        if (
            not FIELD_NAME.match(name)
            or not isinstance(value, str)
            or len(value) > 128
            or "\x00" in value
            or not _encodable(value)
        ):
            raise _invalid("fields", "names are identifiers; values strings of at most 128 characters")
    max_price = None
    if body.get("max_price") is not None:
        max_price = parse_money(body["max_price"])
        if (
            max_price is None
            or max_price <= 0
            or max_price > MAX_PRICE
            or -max_price.as_tuple().exponent > MAX_PRICE_PLACES  # type: ignore[operator]
        ):
            raise _invalid(
                "max_price",
                f"must be a positive decimal up to {MAX_PRICE} with at most {MAX_PRICE_PLACES} decimals,"
                ' such as 99.50 or "99.50"',
            )
    orders = config.orders
    deadline = _number(body, "deadline_s", 1, orders.max_deadline_s)
    wait = _number(body, "wait_s", 0, orders.max_wait_s)
    request = OrderRequest(
        order_id=order_id,
        sku=sku,
        quantity=quantity,
        account=account,
        fields=dict(fields),
        max_price=max_price,
        deadline_s=orders.default_deadline_s if deadline is None else deadline,
    )
    return request, wait or 0.0


def _encodable(text: str) -> bool:
    """No lone surrogates: the journal and the reply are UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class OrderApi:
    """The handler behind the order socket."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    @property
    def config(self) -> RouterConfig:
        return self.dispatcher.config

    async def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/v1/orders":
            if request.method == "GET":
                return await self.list_orders(request)
            if request.method != "POST":
                return _method_not_allowed("GET, POST")
            return await self.post_order(request)
        if path.startswith("/v1/orders/") and path.endswith("/resolve"):
            if request.method != "POST":
                return _method_not_allowed("POST")
            return await self.resolve(path[len("/v1/orders/") : -len("/resolve")], request)
        if path.startswith("/v1/orders/"):
            if request.method != "GET":
                return _method_not_allowed("GET")
            return await self.get_order(path[len("/v1/orders/") :], request)
        if path == "/v1/route":
            if request.method != "GET":
                return _method_not_allowed("GET")
            sku = request.query_one("sku")
            if not sku or sku not in self.config.skus:
                return Response.error(400, "unknown_sku", "give a configured sku: /v1/route?sku=...")
            return Response.json(200, self.dispatcher.route(sku).to_json())
        if path == "/v1/suppliers":
            if request.method != "GET":
                return _method_not_allowed("GET")
            return Response.json(200, {"suppliers": self.dispatcher.suppliers_snapshot()})
        if path == "/healthz":
            d = self.dispatcher
            status = "stopping" if d.draining else "ok" if d.ready else "starting"
            return Response.json(200 if status == "ok" else 503, {"status": status})
        return Response.error(404, "not_found", f"no such endpoint: {request.method} {path[:100]}")

    async def post_order(self, request: Request) -> Response:
        order_request, wait_s = parse_order(request.json(), self.config)
        try:
            order, _created = await self.dispatcher.submit(order_request, route_now=wait_s > 0)
        except OrderConflict as exc:
            reply = exc.existing.to_json()
            reply["error"] = {"code": "conflict", "message": "this order_id exists with a different body"}
            return Response.json(409, reply)
        except Overloaded:
            return Response.error(503, "overloaded", "too many open orders; retry later")
        except ShuttingDown:
            return Response.error(503, "stopping", "the daemon is shutting down; retry shortly")
        except NotReady:
            return Response.error(503, "starting", "the daemon is recovering; retry shortly")
        if wait_s > 0 and not self.dispatcher.settled_on_disk(order):
            order = await self.dispatcher.wait(order, wait_s)
        return Response.json(200 if order.state in FINAL else 202, order.to_json())

    async def list_orders(self, request: Request) -> Response:
        """``GET /v1/orders?state=attention``: the orders in one state."""
        raw = request.query_one("state")
        try:
            state = State(raw or "")
        except ValueError:
            states = ", ".join(s.value for s in State)
            return Response.error(400, "invalid_query", f"state: one of {states}")
        limit_raw = request.query_one("limit") or "100"
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            return Response.error(400, "invalid_query", "limit: an integer from 1 to 1000")
        orders = await self.dispatcher.orders_in(state, int(limit_raw))
        return Response.json(200, {"orders": [o.to_json() for o in orders]})

    async def resolve(self, order_id: str, request: Request) -> Response:
        """``POST /v1/orders/{id}/resolve`` with ``{"by": NAME, "delivered":
        {cards, receipt}}`` or ``{"by": NAME, "failed": REASON}``."""
        if not ORDER_ID.match(order_id):
            return Response.error(400, "invalid_order", "order_id: not a valid order id")
        body = request.json()
        if not isinstance(body, dict) or set(body) - {"by", "delivered", "failed"}:
            raise BadRequest("the body is {by, delivered} or {by, failed}", code="invalid_resolution")
        by = body.get("by")
        if not isinstance(by, str) or not 1 <= len(by) <= 64:
            raise BadRequest("by: who resolves it, 1-64 characters", code="invalid_resolution")
        delivered, failed = body.get("delivered"), body.get("failed")
        if (delivered is None) == (failed is None):
            raise BadRequest("give exactly one of delivered or failed", code="invalid_resolution")
        deliverables = None
        if delivered is not None:
            deliverables = _parse_deliverables(delivered)
        elif not isinstance(failed, str) or not 1 <= len(failed) <= 200:
            raise BadRequest("failed: a reason, 1-200 characters", code="invalid_resolution")
        try:
            order = await self.dispatcher.resolve(
                order_id, by=by, deliverables=deliverables, failed_reason=failed
            )
        except TransitionError as exc:
            return Response.error(409, "not_in_attention", str(exc))
        if order is None:
            return Response.error(404, "not_found", f"no order {order_id}")
        return Response.json(200, order.to_json())

    async def get_order(self, order_id: str, request: Request) -> Response:
        if not ORDER_ID.match(order_id):
            return Response.error(400, "invalid_order", "order_id: not a valid order id")
        wait_raw = request.query_one("wait_s")
        wait_s = 0.0
        if wait_raw is not None:
            try:
                wait_s = float(wait_raw)
            except ValueError:
                return Response.error(400, "invalid_order", "wait_s: must be a number")
            if not 0 <= wait_s <= self.config.orders.max_wait_s:
                return Response.error(
                    400, "invalid_order", f"wait_s: must be between 0 and {self.config.orders.max_wait_s:g}"
                )
        order = await self.dispatcher.get(order_id)
        if order is None:
            return Response.error(404, "not_found", f"no order {order_id}")
        if wait_s > 0 and not self.dispatcher.settled_on_disk(order):
            order = await self.dispatcher.wait(order, wait_s)
        return Response.json(200 if order.state in FINAL else 202, order.to_json())


def _parse_deliverables(value: object) -> Deliverables:
    if not isinstance(value, dict) or set(value) - {"cards", "receipt"}:
        raise BadRequest(
            "delivered: {cards: [{number, password, expires}], receipt}", code="invalid_resolution"
        )
    cards = value.get("cards") or []
    receipt = value.get("receipt")
    if not isinstance(cards, list) or (receipt is not None and not isinstance(receipt, str)):
        raise BadRequest("delivered: cards is a list, receipt a string", code="invalid_resolution")
    parsed = []
    for card in cards:
        if (
            not isinstance(card, dict)
            or not isinstance(card.get("number"), str)
            or not isinstance(card.get("password"), str)
            or not isinstance(card.get("expires"), str | None)
        ):
            raise BadRequest(
                "delivered: each card is {number, password, expires?}", code="invalid_resolution"
            )
        parsed.append(Card(card["number"], card["password"], card.get("expires")))
    if not parsed and not receipt:
        raise BadRequest(
            "delivered: give the cards or the receipt the customer got", code="invalid_resolution"
        )
    return Deliverables(tuple(parsed), receipt)


def _method_not_allowed(allowed: str) -> Response:
    return Response(
        405,
        Response.error(405, "method_not_allowed", f"use {allowed}").body,
        headers=(("allow", allowed),),
    )


class CallbackApi:
    """The callback listener: ``POST /callbacks/{supplier}``.

    The supplier's plugin verifies the signature and parses; the dispatcher
    checks the attempt belongs to that supplier and that amounts and
    quantities match. Whatever is refused is logged with a fixed reason and
    changes nothing; the reply is in the supplier's own terms.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def __call__(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "callbacks":
            return Response.error(404, "not_found", "callbacks go to /callbacks/{supplier}")
        name = parts[1]
        plugin = self.dispatcher.clients.get(name)
        if plugin is None or not hasattr(plugin, "parse_callback"):
            log.warning("callback for unknown supplier %r from %s", name[:64], request.peer)
            return Response.error(404, "not_found", "no such supplier")
        methods = tuple(getattr(plugin, "callback_methods", ("POST",)))
        if request.method not in methods:
            return _method_not_allowed(", ".join(methods))
        metric = self.dispatcher.metrics.callbacks
        supplier = self.dispatcher.config.suppliers.get(name)
        allowed = None if supplier is None else supplier.callback_allow_from
        if allowed is not None and not _peer_in(request.peer, allowed):
            log.warning("callback to %s from %s refused: address not allowed", name, request.peer)
            metric.labels(supplier=name, result="forbidden_source").inc()
            return Response.error(403, "forbidden", "callbacks are not accepted from this address")
        callback_plugin: Any = plugin
        try:
            callback = callback_plugin.parse_callback(request)
        except CallbackRejected as exc:
            log.warning("callback to %s from %s rejected: %s", name, request.peer, exc.reason)
            metric.labels(supplier=name, result="rejected").inc()
            return _plugin_reply(callback_plugin.callback_reply(False))
        result = await self.dispatcher.apply_callback(name, callback)
        metric.labels(supplier=name, result=result).inc()
        # "incomplete": a real delivery the router confirms by query; the
        # supplier need not send it again
        accepted = result in ("accepted", "duplicate", "incomplete")
        if not accepted:
            log.warning("callback to %s for attempt %s refused: %s", name, callback.attempt_key[:40], result)
        return _plugin_reply(callback_plugin.callback_reply(accepted))


def _peer_in(peer: str | None, networks: Any) -> bool:
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    return any(address in network for network in networks)


def _plugin_reply(reply: CallbackReply) -> Response:
    return Response(reply.status, reply.body, reply.content_type)
