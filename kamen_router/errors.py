"""The package's exception tree.

Every error kamen-router raises on purpose derives from one root, so callers
can catch the package's failures without catching bugs::

    KamenRouterError
    ├── ConfigError            router.yaml or a supplier file failed validation;
    │                          ``problems`` lists every (file, key, message)
    ├── PluginError            a plugin could not be imported or is malformed
    ├── JournalError           the journal could not be opened or written
    ├── ListenerError          a listener could not be bound (address in use,
    │                          another daemon already answers on the socket)
    ├── SupplierUnreachable    a supplier request failed before any byte of it
    │                          left the process; always safe to retry
    └── ApiError               (client side) the order API answered an error

Third-party errors (httpx, sqlite3, yaml, h11) are translated into these where
they enter the package, with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


class KamenRouterError(Exception):
    """Root of every error kamen-router raises on purpose."""


@attrs.frozen
class Problem:
    """One configuration problem: which file, which key path, what is wrong."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(KamenRouterError):
    """Raised when configuration fails validation.

    Carries every problem found, not just the first, so an operator fixes a
    file in one pass. Messages never contain secret values.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PluginError(KamenRouterError):
    """Raised when a plugin cannot be imported or does not honour the plugin
    contract. The message names the plugin, where it came from and what is
    wrong with it."""


class JournalError(KamenRouterError):
    """Raised when the journal cannot be opened, migrated or written."""


class ListenerError(KamenRouterError):
    """Raised when a listener cannot be bound: the address is in use, the
    socket path is not a socket, or another daemon answers on it."""


class SupplierUnreachable(KamenRouterError):
    """Raised by a plugin when a request failed before anything was sent
    (connection refused, DNS failure, connect timeout, pool exhausted).

    The supplier cannot have seen the request, so retrying, or failing over
    to another supplier, is always safe."""


class ApiError(KamenRouterError):
    """Raised by the Python client when the order API answers an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")
