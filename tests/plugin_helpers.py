"""Helpers shared by the supplier plugin and conformance tests: loading a
plugin from ``plugins/``, building supplier configs, faking the supplier
with ``httpx.MockTransport``, and checking that no secret leaks."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from kamen_router.config import Limits, Offer, Secret, Simulate, SupplierConfig
from kamen_router.plugin import Plugin, load_plugins
from kamen_router.plugin import _plugins_package as plugins_package

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DIR = ROOT / "plugins"

Handler = Callable[[httpx.Request], httpx.Response]
Answer = httpx.Response | Exception | Handler


def load_plugin_module(name: str) -> ModuleType:
    """Import plugins/<name>.py the way the daemon does, on its own."""
    plugins_package(PLUGINS_DIR)  # so it can import its siblings (_common)
    spec = importlib.util.spec_from_file_location(f"kamen_router_plugins.{name}", PLUGINS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def plugin_class(name: str) -> type[Plugin]:
    """The plugin class called ``name``, loaded as the daemon loads plugins."""
    return load_plugins(PLUGINS_DIR)[name]


def supplier_config(
    name: str,
    plugin: str,
    credentials: Mapping[str, str],
    offers: Mapping[str, tuple[str, str]],
    *,
    endpoint: str | None = None,
    file: str | None = None,
    seed: int | None = None,
) -> SupplierConfig:
    """A supplier config; ``offers`` maps a SKU to (product id, price), and
    ``seed`` makes it a simulated supplier."""
    extra: dict[str, Any] = {} if seed is None else {"simulate": Simulate(seed=seed)}
    return SupplierConfig(
        name=name,
        file=Path(file or f"suppliers.d/{name}.yaml"),
        plugin=plugin,
        enabled=True,
        endpoint=endpoint,
        credentials={key: Secret(value) for key, value in credentials.items()},
        limits=Limits(timeout_s=5),
        offers={sku: Offer(sku, pid, Decimal(price)) for sku, (pid, price) in offers.items()},
        **extra,
    )


def mock_client(handler: Handler) -> httpx.AsyncClient:
    """An HTTP client whose every request is answered by ``handler``."""
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


class Canned:
    """The faked supplier: answers with canned replies in turn (the last one
    for good) and keeps every request received."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def json_reply(data: Any, status: int = 200) -> httpx.Response:
    """A reply whose body is ``data`` as JSON, non-ASCII kept as is."""
    return httpx.Response(status, content=json.dumps(data, ensure_ascii=False).encode())


def raw(status: int, body: bytes) -> Handler:
    """A handler answering every request with ``body``."""
    return lambda request: httpx.Response(status, content=body)


class Recorder:
    """The faked supplier: answers with ``handler`` and keeps every request."""

    def __init__(self, default: Any) -> None:
        self.seen: list[httpx.Request] = []
        self.handler: Handler = lambda request: json_reply(default)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.handler(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.seen]


def answer(upstream: Recorder, data: Any, status: int = 200) -> None:
    """Make ``upstream`` answer every request with ``data`` as JSON."""
    upstream.handler = lambda request: json_reply(data, status)


def refuse_connection(request: httpx.Request) -> httpx.Response:
    """A handler that never reaches the supplier."""
    raise httpx.ConnectError(f"cannot reach {request.url}", request=request)


def assert_no_secret(texts: Iterable[str], *secrets: str) -> None:
    """No text contains any of the secrets."""
    for text in texts:
        for secret in secrets:
            assert secret not in text, text
