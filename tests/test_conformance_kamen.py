"""The ``kamen`` plugin against its simulator (kamen_router.sim.kamen):
every conformance check, each its own test; and the simulator's signing
rules against vectors worked from the protocol's sources."""

from __future__ import annotations

import hashlib

import attrs
from plugin_helpers import plugin_class, supplier_config

from kamen_router.config import Secret, SupplierConfig
from kamen_router.conformance import conformance_tests
from kamen_router.http import Request
from kamen_router.sim.base import Reply
from kamen_router.sim.kamen import KamenSimulator, callback_sign, kamen_sign

PLUGINS = {"kamen": plugin_class("kamen")}


def kamen_supplier() -> SupplierConfig:
    return supplier_config(
        "kamen-sim",
        "kamen",
        {"customer_id": "804130", "key": "7C1D0E6A5B4F48E2A9D3C6B1F0E2D4A8"},
        {"mobile-cmcc-100": ("1258442", "98.70"), "mobile-unicom-100": ("1258444", "98.50")},
        seed=12,
    )


test_kamen_conforms = conformance_tests(PLUGINS["kamen"], kamen_supplier())


# ------------------------------------------- the simulator's own rules
# (worked from the protocol's sources, not from the plugin)

KEY = "BAA20338FD3E36050B62AD16226EA96D"  # a public Java integration's demo key
ATTEMPT = "KRABCDEFGHIJKLMNOPQRSTUVWXYZ0001"


def test_the_signing_rule_gives_the_published_java_demo_signature() -> None:
    assert kamen_sign({"CustomerID": "801479"}, ["CustomerID"], KEY) == "FCD4CEE20CA4FDDAAC0023FB860DDCA2"


def test_the_callback_signature_signs_the_time_with_dashes() -> None:
    text = (
        f"chargetime=2024-05-01 12:00:05&customerorderno={ATTEMPT}&orderno=1234567890"
        f"&remark=充值成功&status=True{KEY}"
    )
    expected = hashlib.md5(text.encode()).hexdigest()
    assert callback_sign("2024/05/01 12:00:05", ATTEMPT, "1234567890", "充值成功", "True", KEY) == expected


def _sim() -> KamenSimulator:
    supplier = attrs.evolve(
        kamen_supplier(), credentials={"customer_id": Secret("801479"), "key": Secret(KEY)}
    )
    return KamenSimulator(supplier, attrs.evolve(supplier.simulate, latency_ms=(0.0, 0.0)))


def _charge(sim: KamenSimulator, body: str) -> str:
    reply = sim.answer(Request("POST", "/Api/Order/Charge.aspx", {}, {}, body.encode()))
    response = reply.response if isinstance(reply, Reply) else reply
    assert response is not None
    return response.body.decode("gb2312")


async def test_a_charge_signed_by_hand_is_taken_and_a_changed_one_refused() -> None:
    """The .NET integration's way: the URL-encoded pairs in the fixed order,
    the ``&`` removed, the key appended, MD5, upper-case hex."""
    form = (
        f"CustomerId=801479&CustomerOrderNo={ATTEMPT}&ProductId=1258442&BuyNum=1"
        "&ChargeAccount=13800138000&ChargeRegion=%e7%94%b5%e4%bf%a1%e4%b8%80%e5%8c%ba"
        "&NotifyUrl=http%3a%2f%2f127.0.0.1%3a9465%2fcallbacks%2fkamen-a"
    )
    sign = hashlib.md5((form.replace("&", "") + KEY).encode()).hexdigest().upper()
    sim = _sim()
    assert "<ErrorCode>1003</ErrorCode>" in _charge(
        sim, f"{form.replace('BuyNum=1', 'BuyNum=2')}&Sign={sign}"
    )
    assert "<ErrorCode>1005</ErrorCode>" in _charge(sim, f"{form.replace('801479', '801478')}&Sign={sign}")
    taken = _charge(sim, f"{form}&Sign={sign.lower()}")
    assert f"<CustomerOrderNo>{ATTEMPT}</CustomerOrderNo>" in taken and "ErrorCode" not in taken
    assert "<ErrorCode>1015</ErrorCode>" in _charge(sim, f"{form}&Sign={sign}")
