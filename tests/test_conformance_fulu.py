"""The ``fulu`` plugin against its simulator (kamen_router.sim.fulu): every
conformance check, each its own test; and the simulator against requests
built by hand the way the PHP SDK builds them."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from plugin_helpers import plugin_class, supplier_config

from kamen_router.config import Secret, SupplierConfig
from kamen_router.conformance import conformance_tests
from kamen_router.http import Request
from kamen_router.sim.base import Reply
from kamen_router.sim.fulu import FuluSimulator

PLUGINS = {"fulu": plugin_class("fulu")}


def fulu_supplier() -> SupplierConfig:
    return supplier_config(
        "fulu-sim",
        "fulu",
        {"app_key": "conformance-fulu-app-key", "app_secret": "0a091b3aa4324435aab703142518a8f7"},
        {"mobile-cmcc-100": ("10000585", "98.80"), "steam-50": ("10000587", "48.30")},
        seed=11,
    )


test_fulu_conforms = conformance_tests(PLUGINS["fulu"], fulu_supplier())


# ------------------------------------------- the simulator's own rules
# (worked from the protocol's sources, not from the plugin)

APP_KEY = "conformance-fulu-app-key"
SECRET = "0a091b3aa4324435aab703142518a8f7"


def _sim() -> FuluSimulator:
    supplier = attrs.evolve(
        fulu_supplier(), credentials={"app_key": Secret(APP_KEY), "app_secret": Secret(SECRET)}
    )
    return FuluSimulator(supplier, attrs.evolve(supplier.simulate, latency_ms=(0.0, 0.0)))


def _php_request(
    method: str, biz: dict[str, object], *, stamp: str | None = None, secret: str = SECRET
) -> bytes:
    """A request as the PHP SDK builds it: ``biz_content`` by plain
    ``json_encode`` (``/`` as ``\\/``, non-ASCII as ``\\uXXXX``), the outer
    object signed unescaped: characters sorted, secret appended, MD5."""
    params = {
        "app_key": APP_KEY,
        "method": method,
        "timestamp": stamp or datetime.now(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "2.0",
        "format": "json",
        "charset": "utf-8",
        "sign_type": "md5",
        "app_auth_token": "",
        "biz_content": json.dumps(biz, separators=(",", ":")).replace("/", "\\/"),
    }
    text = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
    sign = hashlib.md5(("".join(sorted(text)) + secret).encode()).hexdigest()
    return json.dumps({"sign": sign, **params}, ensure_ascii=False).encode()


def _call(sim: FuluSimulator, body: bytes) -> dict[str, Any]:
    reply = sim.answer(Request("POST", "/api/getway", {}, {}, body))
    response = reply.response if isinstance(reply, Reply) else reply
    assert response is not None
    data: dict[str, Any] = json.loads(response.body)
    # the reply's signature, as the PHP SDK verifies it: json_encode with
    # unescaped unicode (slashes escaped), characters sorted, secret appended
    unsigned = {k: v for k, v in data.items() if k != "sign"}
    text = json.dumps(unsigned, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")
    assert data["sign"] == hashlib.md5(("".join(sorted(text)) + SECRET).encode()).hexdigest()
    return data


def _open_card(value: str) -> str:
    decryptor = Cipher(algorithms.AES(SECRET.encode()), modes.ECB()).decryptor()
    padded = decryptor.update(base64.b64decode(value)) + decryptor.finalize()
    return padded[: -padded[-1]].decode()


async def test_a_request_signed_as_the_php_sdk_signs_it_is_taken() -> None:
    sim = _sim()
    direct = {
        "customer_order_no": "KRFULU0001",
        "product_id": 10000585,
        "charge_account": "13800138000",
        "buy_num": 1,
        "charge_game_region": "电信一区/2",
    }
    reply = _call(sim, _php_request("fulu.order.direct.add", direct))
    assert reply["code"] == 0, reply
    assert json.loads(reply["result"])["customer_order_no"] == "KRFULU0001"
    assert _call(sim, _php_request("fulu.order.direct.add", direct))["code"] == 4010
    cards = {"customer_order_no": "KRFULU0002", "product_id": 10000587, "buy_num": 2}
    assert _call(sim, _php_request("fulu.order.card.add", cards))["code"] == 0
    info = _call(sim, _php_request("fulu.order.info.get", {"customer_order_no": "KRFULU0002"}))
    result = json.loads(info["result"])
    assert result["order_state"] == "success" and len(result["cards"]) == 2
    order = sim.account.find("KRFULU0002")
    assert order is not None
    assert [_open_card(c["card_pwd"]) for c in result["cards"]] == [c.password for c in order.cards]


async def test_forged_stale_and_foreign_requests_are_refused() -> None:
    sim = _sim()
    biz = {"customer_order_no": "KRFULU0003", "product_id": 10000587, "buy_num": 1}
    forged = _php_request("fulu.order.card.add", biz).replace(b'\\"buy_num\\":1', b'\\"buy_num\\":9')
    assert _call(sim, forged)["code"] == 1016
    assert _call(sim, _php_request("fulu.order.card.add", biz, secret="another"))["code"] == 1016
    stale = _php_request("fulu.order.card.add", biz, stamp="2020-01-01 00:00:00")
    assert _call(sim, stale)["code"] == 1004
    assert sim.account.order_count == 0
