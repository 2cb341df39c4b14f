"""The ``kayixin`` plugin against its simulator (kamen_router.sim.kayixin):
the conformance kit, every check its own test, and the order-total price
cap both sides must agree on."""

from __future__ import annotations

from decimal import Decimal

import attrs
import httpx
import trio
from plugin_helpers import plugin_class, supplier_config

from kamen_router.config import Secret, SupplierConfig
from kamen_router.conformance import conformance_tests
from kamen_router.plugin import SubmitRequest, SupplierContext
from kamen_router.sim.base import serve
from kamen_router.sim.kayixin import KayixinSimulator

PLUGIN = plugin_class("kayixin")


def supplier() -> SupplierConfig:
    return supplier_config(
        "kyx-sim",
        "kayixin",
        {"app_id": "kyx-app-20417", "app_secret": "kyx-secret-Mw3Pd8Qs"},
        {"mobile-cmcc-100": ("6518", "99.30"), "qq-coin-10": ("4994", "9.80")},
        seed=17,
    )


test_kayixin_conforms = conformance_tests(PLUGIN, supplier())


def request(key: str, quantity: int, max_price: str) -> SubmitRequest:
    return SubmitRequest(
        attempt_key=key,
        order_id=key,
        sku="qq-coin-10",
        product_id="4994",
        quantity=quantity,
        unit_price=Decimal("9.80"),
        max_price=Decimal(max_price),
    )


async def test_safe_price_caps_the_order_total() -> None:
    """safePrice is the ceiling times the quantity: three cards at 9.80 pass
    a 9.80 ceiling, and a price raised a cent above it takes nothing."""
    sim = KayixinSimulator(supplier())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(trust_env=False) as http:
            url = await nursery.start(serve, sim)
            plugin = PLUGIN(SupplierContext(supplier(), url, http))
            assert (await plugin.submit(request("KRCAP0000000000000000000000000001", 3, "9.80"))).kind == (
                "pending"
            )
            sim.account.products["4994"].price = Decimal("9.81")
            assert (await plugin.submit(request("KRCAP0000000000000000000000000002", 3, "9.80"))).kind == (
                "unknown"
            )
            assert [e["quantity"] for e in sim.ledger()] == [3]
            nursery.cancel_scope.cancel()


async def test_a_request_signed_with_another_secret_is_refused() -> None:
    """The right app id with another secret: the signature alone refuses it
    (the kit's wrong-credentials check changes the app id too)."""
    sim = KayixinSimulator(supplier())
    other = attrs.evolve(
        supplier(), credentials={**supplier().credentials, "app_secret": Secret("kyx-secret-other")}
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(trust_env=False) as http:
            url = await nursery.start(serve, sim)
            plugin = PLUGIN(SupplierContext(other, url, http))
            outcome = await plugin.submit(request("KRSIGN000000000000000000000000001", 1, "9.80"))
            assert outcome.kind == "unknown" and "签名错误" in str(outcome.detail)
            assert sim.ledger() == []
            nursery.cancel_scope.cancel()
