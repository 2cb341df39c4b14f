"""The conformance kit on the ``juhe`` plugin against its simulator
(kamen_router/sim/juhe.py): every check passes, or carries the leeway its
plugin's profile states, with the reason."""

from __future__ import annotations

import hashlib
import urllib.parse
from decimal import Decimal
from typing import Any

from plugin_helpers import plugin_class, supplier_config

from kamen_router.config import SupplierConfig
from kamen_router.conformance import conformance_tests
from kamen_router.http import Request
from kamen_router.money import loads_json
from kamen_router.sim.base import Reply
from kamen_router.sim.core import Status
from kamen_router.sim.juhe import PATH_ORDER, PATH_QUERY, JuheSimulator

JuhePlugin = plugin_class("juhe")


def juhe_supplier() -> SupplierConfig:
    return supplier_config(
        "juhe-conformance",
        "juhe",
        {"appkey": "5d9c0a7e31f24b68a0e3c1d7b9f25e46", "openid": "JHc4e1f07a9b3d5e2f6a8c0b1d3e5f7a9c"},
        {"mobile-cmcc-100": ("100", "98.80"), "mobile-cmcc-50": ("50", "49.40")},
        seed=11,
    )


test_juhe_conforms = conformance_tests(JuhePlugin, juhe_supplier())


# ------------------------------------------- the simulator on its own terms


def form_request(path: str, form: dict[str, str], method: str = "POST") -> Request:
    return Request(
        method=method,
        path=path,
        query={},
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=urllib.parse.urlencode(form).encode(),
    )


def answered(simulator: JuheSimulator, request: Request) -> dict[str, Any]:
    reply = simulator.answer(request)
    response = reply.response if isinstance(reply, Reply) else reply
    assert response is not None and response.status == 200
    data: dict[str, Any] = loads_json(response.body)
    return data


async def test_the_simulator_checks_the_order_sign_over_the_openid() -> None:
    """sign = md5(OpenID + key + phoneno + cardnum + orderid), worked by hand:
    md5("JHc4e1f07a9b3d5e2f6a8c0b1d3e5f7a9c" "5d9c0a7e31f24b68a0e3c1d7b9f25e46"
    "13800138000" "100" "KR00000000000000000000000000TEST")
    = 2689528cac4a09d7239f07eb0ad42826 (printf '%s' ... | md5sum)."""
    supplier = juhe_supplier()
    simulator = JuheSimulator(supplier)
    creds = {k: v.reveal() for k, v in supplier.credentials.items()}
    orderid = "KR00000000000000000000000000TEST"
    expected = "2689528cac4a09d7239f07eb0ad42826"
    text = creds["openid"] + creds["appkey"] + "13800138000" + "100" + orderid
    assert hashlib.md5(text.encode()).hexdigest() == expected
    form = {"key": creds["appkey"], "phoneno": "13800138000", "cardnum": "100", "orderid": orderid}
    # the right key with a sign made without the OpenID: refused, nothing taken
    wrong = hashlib.md5((creds["appkey"] + "13800138000100" + orderid).encode()).hexdigest()
    assert answered(simulator, form_request(PATH_ORDER, {**form, "sign": wrong}))["error_code"] == 208507
    assert simulator.ledger() == []
    # another key: Juhe's platform-wide 10001, before any order logic
    assert answered(simulator, form_request(PATH_ORDER, {**form, "key": "x" * 32}))["error_code"] == 10001
    data = answered(simulator, form_request(PATH_ORDER, {**form, "sign": expected.upper()}))
    assert data["error_code"] == 0
    # the published reply's shape: cardnum is the quantity, a fresh order is "0"
    result = data["result"]
    assert (result["cardnum"], result["game_state"], result["uorderid"]) == ("1", "0", orderid)
    assert result["ordercash"] == Decimal("98.8")
    [entry] = simulator.ledger()
    assert entry["merchant_order_no"] == orderid


async def test_the_simulator_signs_callbacks_without_sta_and_queries_by_get() -> None:
    supplier = juhe_supplier()
    simulator = JuheSimulator(supplier)
    simulator.callback_url_on_file = "http://127.0.0.1:9/callbacks/juhe-conformance"
    creds = {k: v.reveal() for k, v in supplier.credentials.items()}
    orderid = "KR00000000000000000000000000CALL"
    sign = hashlib.md5((creds["openid"] + creds["appkey"] + "13800138000100" + orderid).encode()).hexdigest()
    form = {"key": creds["appkey"], "phoneno": "13800138000", "cardnum": "100", "orderid": orderid}
    answered(simulator, form_request(PATH_ORDER, {**form, "sign": sign}))
    order = simulator.account.find(orderid)
    assert order is not None and order.notify_url == simulator.callback_url_on_file
    callback = simulator.render_callback(order, Status.SUCCESS)
    assert callback is not None
    fields = dict(urllib.parse.parse_qsl(callback.content.decode()))
    assert fields["sta"] == "1" and fields["orderid"] == orderid
    assert (
        fields["sign"] == hashlib.md5((creds["appkey"] + fields["sporder_id"] + orderid).encode()).hexdigest()
    )
    assert simulator.render_callback(order, Status.PROCESSING) is None
    query = Request("GET", PATH_QUERY, {"key": [creds["appkey"]], "orderid": [orderid]}, {}, b"")
    assert answered(simulator, query)["result"]["game_state"] == "1"
    # any text acknowledges a Juhe callback; only an empty answer is sent again
    assert simulator.callback_acknowledged(200, b"success")
    assert not simulator.callback_acknowledged(500, b"")
