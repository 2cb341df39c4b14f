"""The ``kasushou`` plugin against its simulator (kamen_router.sim.kasushou):
the conformance kit, every check its own test, and the simulator's own
reading of the protocol's signatures."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import httpx
import trio
from plugin_helpers import plugin_class, supplier_config

from kamen_router.config import SupplierConfig
from kamen_router.conformance import conformance_tests
from kamen_router.plugin import SubmitRequest, SupplierContext
from kamen_router.sim.base import serve
from kamen_router.sim.kasushou import KasushouSimulator, callback_signature, canonical_json, sha1_sign

PLUGIN = plugin_class("kasushou")


def supplier() -> SupplierConfig:
    return supplier_config(
        "kss-sim",
        "kasushou",
        {"user_id": "kss-user-51207", "api_key": "kss-apikey-Hq7Zr2Lx"},
        {"mobile-cmcc-100": ("2909", "99.20"), "steam-50": ("4120", "48.60")},
        seed=11,
    )


test_kasushou_conforms = conformance_tests(PLUGIN, supplier())


def test_the_simulator_signs_the_published_example() -> None:
    """doc.kasushou.com/api/v2api/39: the body's keys sorted a-z, compact,
    between the 13-digit timestamp and the apikey."""
    body = {"ordersn": "D100759082558859640832", "external_orderno": "", "day": 10}
    canonical = canonical_json(body)
    assert canonical == '{"day":10,"external_orderno":"","ordersn":"D100759082558859640832"}'
    signed = sha1_sign("1696645385740", canonical, "H0YnuPpcVtx7rQdMTbjN6932s5oDOqFa")
    assert signed == "15b8f541eb10e3fbb33efd92c8d52d50ddca0784"


def test_callbacks_sign_slashes_escaped_and_leave_the_cards_out() -> None:
    fields = {"time": "1695072521534", "status": "5", "recharge_hints": "充值失败/已退款"}
    with_cards = {**fields, "card_list[0][card_no]": "NO-1"}
    text = '{"recharge_hints":"充值失败\\/已退款","status":"5","time":"1695072521534"}'
    expected = hashlib.sha1(("1695072521534" + text + "key").encode()).hexdigest()
    assert callback_signature(fields, "key") == callback_signature(with_cards, "key") == expected


async def test_a_body_sent_with_its_keys_out_of_order_is_refused() -> None:
    """The simulator signs the sorted form of what it parsed, so a client
    that signs unsorted bytes fails as it would upstream."""
    config = supplier()
    sim = KasushouSimulator(config)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(trust_env=False) as http:
            url = await nursery.start(serve, sim)
            body = b'{"quantity":1,"id":2909,"external_orderno":"KRUNSORTED1"}'
            stamp = str(int(sim.wall_clock() * 1000))
            sign = hashlib.sha1(stamp.encode() + body + b"kss-apikey-Hq7Zr2Lx").hexdigest()
            headers = {"UserId": "kss-user-51207", "Timestamp": stamp, "Sign": sign}
            reply = await http.post(url + "/api/v1/order/buy", content=body, headers=headers)
            assert reply.json() == {"code": 400, "msg": "签名错误", "data": None}
            assert sim.ledger() == []
            # the plugin's bytes for the same order pass
            plugin = PLUGIN(SupplierContext(config, url, http))
            request = SubmitRequest(
                attempt_key="KRSORTED00000000000000000000001",
                order_id="o-1",
                sku="mobile-cmcc-100",
                product_id="2909",
                quantity=1,
                unit_price=Decimal("99.20"),
                max_price=Decimal("99.20"),
                account="13800138000",
            )
            assert (await plugin.submit(request)).kind == "pending"
            assert [e["merchant_order_no"] for e in sim.ledger()] == [request.attempt_key]
            nursery.cancel_scope.cancel()
