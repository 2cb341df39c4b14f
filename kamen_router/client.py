"""A small Python client for the order API on the Unix socket.

    from kamen_router.client import OrderClient
    with OrderClient("run/orders.sock") as client:
        order = client.submit("A1001", "mobile-cmcc-100", account="13800138000", wait_s=10)
        print(order["state"], order["deliverables"])

``AsyncOrderClient`` is the same for trio (or asyncio) code. Both raise
``ApiError`` (with ``status``, ``code`` and ``message``) for every 4xx/5xx
answer; a 409 has code ``conflict``. A call that waits (``wait_s``) gets
that long plus ``timeout_s`` before the client gives up.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from .errors import ApiError
from .money import dumps_json

_BASE = "http://kamen-router"


def _order_body(
    order_id: str,
    sku: str,
    *,
    quantity: int | None,
    account: str | None,
    fields: dict[str, str] | None,
    max_price: Decimal | str | None,
    deadline_s: float | None,
    wait_s: float | None,
) -> bytes:
    body: dict[str, Any] = {"order_id": order_id, "sku": sku}
    for key, value in (
        ("quantity", quantity),
        ("account", account),
        ("fields", fields),
        ("max_price", None if max_price is None else str(max_price)),
        ("deadline_s", deadline_s),
        ("wait_s", wait_s),
    ):
        if value is not None:
            body[key] = value
    return dumps_json(body)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except ValueError:
        raise ApiError(response.status_code, "bad_reply", response.text[:200]) from None
    if response.status_code >= 400:
        error = (data or {}).get("error") or {}
        raise ApiError(response.status_code, str(error.get("code", "error")), str(error.get("message", "")))
    if not isinstance(data, dict):
        raise ApiError(response.status_code, "bad_reply", "the reply is not a JSON object")
    return data


_HEADERS = {"content-type": "application/json"}


def _resolution(by: str, delivered: dict[str, Any] | None, failed: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"by": by}
    if delivered is not None:
        body["delivered"] = delivered
    if failed is not None:
        body["failed"] = failed
    return body


class OrderClient:
    """Blocking client; one connection reused across calls."""

    def __init__(self, socket: str | Path, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)), base_url=_BASE, timeout=timeout_s, trust_env=False
        )

    def __enter__(self) -> OrderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        order_id: str,
        sku: str,
        *,
        quantity: int | None = None,
        account: str | None = None,
        fields: dict[str, str] | None = None,
        max_price: Decimal | str | None = None,
        deadline_s: float | None = None,
        wait_s: float | None = None,
    ) -> dict[str, Any]:
        body = _order_body(
            order_id,
            sku,
            quantity=quantity,
            account=account,
            fields=fields,
            max_price=max_price,
            deadline_s=deadline_s,
            wait_s=wait_s,
        )
        return _answer(
            self._http.post(
                "/v1/orders", content=body, headers=_HEADERS, timeout=self.timeout_s + (wait_s or 0)
            )
        )

    def get(self, order_id: str, wait_s: float | None = None) -> dict[str, Any]:
        params = {"wait_s": str(wait_s)} if wait_s else None
        return _answer(
            self._http.get(f"/v1/orders/{order_id}", params=params, timeout=self.timeout_s + (wait_s or 0))
        )

    def route(self, sku: str) -> dict[str, Any]:
        return _answer(self._http.get("/v1/route", params={"sku": sku}))

    def suppliers(self) -> dict[str, Any]:
        return _answer(self._http.get("/v1/suppliers"))

    def orders_in(self, state: str, limit: int = 100) -> dict[str, Any]:
        return _answer(self._http.get("/v1/orders", params={"state": state, "limit": str(limit)}))

    def resolve(
        self, order_id: str, *, by: str, delivered: dict[str, Any] | None = None, failed: str | None = None
    ) -> dict[str, Any]:
        body = dumps_json(_resolution(by, delivered, failed))
        return _answer(self._http.post(f"/v1/orders/{order_id}/resolve", content=body, headers=_HEADERS))

    def health(self) -> dict[str, Any]:
        return _answer(self._http.get("/healthz"))


class AsyncOrderClient:
    """The same client for async code (trio or asyncio)."""

    def __init__(self, socket: str | Path, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket)),
            base_url=_BASE,
            timeout=timeout_s,
            trust_env=False,
        )

    async def __aenter__(self) -> AsyncOrderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        order_id: str,
        sku: str,
        *,
        quantity: int | None = None,
        account: str | None = None,
        fields: dict[str, str] | None = None,
        max_price: Decimal | str | None = None,
        deadline_s: float | None = None,
        wait_s: float | None = None,
    ) -> dict[str, Any]:
        body = _order_body(
            order_id,
            sku,
            quantity=quantity,
            account=account,
            fields=fields,
            max_price=max_price,
            deadline_s=deadline_s,
            wait_s=wait_s,
        )
        return _answer(
            await self._http.post(
                "/v1/orders", content=body, headers=_HEADERS, timeout=self.timeout_s + (wait_s or 0)
            )
        )

    async def get(self, order_id: str, wait_s: float | None = None) -> dict[str, Any]:
        params = {"wait_s": str(wait_s)} if wait_s else None
        return _answer(
            await self._http.get(
                f"/v1/orders/{order_id}", params=params, timeout=self.timeout_s + (wait_s or 0)
            )
        )

    async def route(self, sku: str) -> dict[str, Any]:
        return _answer(await self._http.get("/v1/route", params={"sku": sku}))

    async def suppliers(self) -> dict[str, Any]:
        return _answer(await self._http.get("/v1/suppliers"))

    async def orders_in(self, state: str, limit: int = 100) -> dict[str, Any]:
        return _answer(await self._http.get("/v1/orders", params={"state": state, "limit": str(limit)}))

    async def resolve(
        self, order_id: str, *, by: str, delivered: dict[str, Any] | None = None, failed: str | None = None
    ) -> dict[str, Any]:
        return _answer(
            await self._http.post(
                f"/v1/orders/{order_id}/resolve",
                content=dumps_json(_resolution(by, delivered, failed)),
                headers=_HEADERS,
            )
        )

    async def health(self) -> dict[str, Any]:
        return _answer(await self._http.get("/healthz"))
