"""The conformance kit on the ``ofpay`` plugin against its simulator
(kamen_router/sim/ofpay.py): every check passes, or carries the leeway its
plugin's profile states, with the reason."""

from __future__ import annotations

import hashlib
import urllib.parse
from xml.etree import ElementTree

from plugin_helpers import plugin_class, supplier_config

from kamen_router.config import SupplierConfig
from kamen_router.conformance import conformance_tests
from kamen_router.http import Request, Response
from kamen_router.sim.base import Reply
from kamen_router.sim.core import Status
from kamen_router.sim.ofpay import PATH_ORDER, PATH_QUERY, OfpaySimulator

OfpayPlugin = plugin_class("ofpay")


def ofpay_supplier() -> SupplierConfig:
    return supplier_config(
        "ofpay-conformance",
        "ofpay",
        {"userid": "A917264", "password": "conformance-pass-5c2e", "keystr": "K7fQ2mZ9xR4w"},
        {"mobile-cmcc-100": ("140101:100", "98.80"), "mobile-cmcc-50": ("140101:50", "49.40")},
        seed=13,
    )


test_ofpay_conforms = conformance_tests(OfpayPlugin, ofpay_supplier())


# ------------------------------------------- the simulator on its own terms

ORDER_ID = "KR00000000000000000000000000TEST"


def order_form(**changes: str) -> dict[str, str]:
    """md5_str worked by hand (printf '%s' ... | md5sum, upper-cased):
    "A917264" + md5("conformance-pass-5c2e") = 28ce1518456c7e6b50dee170066d0fa6
    + "140101" + "100" + ORDER_ID + "20240501120000" + "13800138000" + "K7fQ2mZ9xR4w"
    -> 4DD38471DE1C957F95ECBFA7635F1313"""
    form = {
        "userid": "A917264",
        "userpws": "28ce1518456c7e6b50dee170066d0fa6",
        "cardid": "140101",
        "cardnum": "100",
        "sporder_id": ORDER_ID,
        "sporder_time": "20240501120000",
        "game_userid": "13800138000",
        "md5_str": "4DD38471DE1C957F95ECBFA7635F1313",
        "ret_url": "http://127.0.0.1:9/callbacks/ofpay-conformance",
        "version": "6.0",
    }
    return {**form, **changes}


def gbk_request(path: str, form: dict[str, str]) -> Request:
    body = urllib.parse.urlencode(form, encoding="gbk").encode("ascii")
    return Request("POST", path, {}, {"content-type": "application/x-www-form-urlencoded"}, body)


def reply_of(simulator: OfpaySimulator, request: Request) -> Response:
    reply = simulator.answer(request)
    response = reply.response if isinstance(reply, Reply) else reply
    assert response is not None and response.status == 200
    return response


def xml_fields(response: Response) -> dict[str, str]:
    assert response.body.startswith(b'<?xml version="1.0" encoding="GB2312" ?>')
    root = ElementTree.fromstring(response.body.decode("gb18030").split("?>", 1)[1])
    return {child.tag: child.text or "" for child in root}


async def test_the_simulator_checks_md5_str_and_the_password_and_answers_gb2312_xml() -> None:
    assert hashlib.md5(b"conformance-pass-5c2e").hexdigest() == order_form()["userpws"]
    simulator = OfpaySimulator(ofpay_supplier())
    for wrong in (
        order_form(md5_str="0" * 32),
        order_form(userpws=hashlib.md5(b"another password").hexdigest()),
        order_form(cardnum="50"),  # changed after signing
    ):
        fields = xml_fields(reply_of(simulator, gbk_request(PATH_ORDER, wrong)))
        assert fields["retcode"] == "9999" and fields["err_msg"] in ("MD5串验证错误", "用户名或密码错误")
    assert simulator.ledger() == []
    fields = xml_fields(reply_of(simulator, gbk_request(PATH_ORDER, order_form())))
    assert fields["retcode"] == "1" and fields["sporder_id"] == ORDER_ID
    assert (fields["cardid"], fields["cardnum"], fields["game_state"]) == ("140101", "100", "1")
    assert fields["ordercash"] == "98.800" and fields["cardname"] == "全国话费100元快充"
    query = Request("GET", PATH_QUERY, {"userid": ["A917264"], "spbillid": [ORDER_ID]}, {}, b"")
    assert reply_of(simulator, query).body == b"1"
    other = Request("GET", PATH_QUERY, {"userid": ["A000001"], "spbillid": [ORDER_ID]}, {}, b"")
    assert reply_of(simulator, other).body not in (b"1", b"0", b"9", b"-1")


async def test_the_simulator_signs_callbacks_with_the_keystr() -> None:
    """sign = UPPER(md5("A917264" + "1" + ORDER_ID + "K7fQ2mZ9xR4w"))
    = E1DB2CB7F0DB2944D164E5F2408E7DBF"""
    simulator = OfpaySimulator(ofpay_supplier())
    reply_of(simulator, gbk_request(PATH_ORDER, order_form()))
    order = simulator.account.find(ORDER_ID)
    assert order is not None and order.notify_url == order_form()["ret_url"]
    callback = simulator.render_callback(order, Status.SUCCESS)
    assert callback is not None
    fields = dict(urllib.parse.parse_qsl(callback.content.decode("ascii"), encoding="gbk"))
    assert fields["sign"] == "E1DB2CB7F0DB2944D164E5F2408E7DBF"
    assert (fields["ret_code"], fields["sporder_id"], fields["err_msg"]) == ("1", ORDER_ID, "充值成功")
    assert simulator.render_callback(order, Status.PROCESSING) is None
    assert simulator.callback_acknowledged(200, b"OK\n")
    assert not simulator.callback_acknowledged(200, b"") and not simulator.callback_acknowledged(500, b"OK")
