"""A small HTTP/1.1 server on trio and h11, behind the order API, the
metrics endpoint, the callback listener and the simulators.

It owns the hostile edge: limits on header and body size, a read timeout
against slow clients, a cap on concurrent connections and on requests per
connection. A bad request gets a JSON 4xx and its connection closes; a
handler that raises gets a JSON 500 and the server keeps serving everyone
else. Handlers see a complete ``Request`` and return a ``Response``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdsocket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import h11
import trio

from .errors import ListenerError
from .money import dumps_json, loads_json

log = logging.getLogger("kamen_router.http")


@attrs.frozen
class HttpLimits:
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    #: time allowed to receive one whole request once it has started, and
    #: idle time allowed between keep-alive requests
    read_timeout_s: float = 10.0
    max_connections: int = 512
    max_requests_per_connection: int = 1000


class BadRequest(Exception):
    """Raised by handlers (and Request.json) to answer a 4xx with a JSON error."""

    def __init__(self, message: str, *, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class DropConnection(Exception):
    """Raised by a handler to drop the connection without answering: the
    server closes it at once, with a TCP reset where the socket allows, as an
    upstream that crashed mid-request would. For simulators."""


@attrs.frozen
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    peer: str | None = None

    def json(self) -> Any:
        # the content type is not checked: PHP's curl sends JSON bodies as
        # application/x-www-form-urlencoded unless told otherwise, and the
        # order API promises to work with it unchanged
        try:
            return loads_json(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc.__class__.__name__}", code="malformed_json") from None
        except RecursionError:
            raise BadRequest("malformed JSON: nested too deeply", code="malformed_json") from None

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, value: Any) -> Response:
        return cls(status, dumps_json(value) + b"\n")

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, text.encode(), content_type)

    @classmethod
    def error(cls, status: int, code: str, message: str) -> Response:
        return cls.json(status, {"error": {"code": code, "message": message}})


Handler = Callable[[Request], Awaitable[Response]]


_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"")


async def _send_response(
    stream: trio.abc.Stream, conn: h11.Connection, response: Response, *, close: bool, head: bool = False
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *response.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    data = conn.send(
        h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))
    )
    # a reply to HEAD carries the headers only: h11 refuses a body for it
    data += conn.send(h11.Data(data=response.body)) if response.body and not head else b""
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


class _TooLarge(Exception):
    pass


class _HeadTooLarge(Exception):
    pass


def _head_size(head: h11.Request) -> int:
    """The size of a request's head on the wire (request line and headers)."""
    line = len(head.method) + len(head.target) + len(head.http_version) + 9
    return line + sum(len(name) + len(value) + 4 for name, value in head.headers) + 2


async def _read_request(
    stream: trio.abc.Stream, conn: h11.Connection, limits: HttpLimits
) -> tuple[h11.Request, bytes] | None:
    """The next request and its body, or None when the client has gone."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data and conn.their_state is h11.IDLE and head is None:
                return None
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            head = event
            # h11 bounds only a head still incomplete; one that arrived whole
            # in a single read is measured here
            if _head_size(event) > limits.max_header_bytes:
                raise _HeadTooLarge()
            for name, value in event.headers:
                if name == b"content-length":
                    if value.isdigit() and int(value) > limits.max_body_bytes:
                        raise _TooLarge()
                    break
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limits.max_body_bytes:
                raise _TooLarge()
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _to_request(head: h11.Request, body: bytes, peer: str | None) -> Request:
    target = head.target.decode("latin-1")
    if "?" in target or "%" in target or "#" in target or not target.startswith("/"):
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query, keep_blank_values=True)
    else:  # the usual plain path: nothing to split or unquote
        path, query = target, {}
    return Request(
        method=head.method.decode("ascii", "replace").upper(),
        path=path,
        query=query,
        headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers},
        body=body,
        peer=peer,
    )


class HttpServer:
    """Serves one handler on any number of listeners, within ``limits``."""

    def __init__(self, handler: Handler, limits: HttpLimits | None = None, name: str = "http") -> None:
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.name = name
        self._connections = 0
        self.requests_served = 0

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("%s: accept failed (%s); backing off", self.name, exc.strerror)
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(self._handle_connection, stream)

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        try:
            async with stream:
                if self._connections >= self.limits.max_connections:
                    conn = h11.Connection(h11.SERVER)
                    # answer without reading: the client may still be writing
                    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    conn.next_event()
                    with trio.move_on_after(1):
                        await _send_response(
                            stream,
                            conn,
                            Response.error(503, "overloaded", "too many connections"),
                            close=True,
                        )
                    return
                self._connections += 1
                try:
                    await self._serve_connection(stream, peer)
                finally:
                    self._connections -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to answer
        except Exception:
            # one connection's failure must never take the listener (and the
            # daemon) down with it
            log.exception("%s: connection from %s failed; closed it", self.name, peer)

    async def _serve_connection(self, stream: trio.SocketStream, peer: str | None) -> None:
        limits = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        served = 0
        while True:
            try:
                with trio.fail_after(limits.read_timeout_s):
                    got = await _read_request(stream, conn, limits)
            except trio.TooSlowError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    return  # idle keep-alive connection: just close
                await self._refuse(
                    stream, conn, 408, "request_timeout", "the request was not received in time"
                )
                return
            except _HeadTooLarge:
                await self._refuse(
                    stream, conn, 431, "headers_too_large", "the request headers are too large"
                )
                return
            except _TooLarge:
                await self._refuse(
                    stream,
                    conn,
                    413,
                    "body_too_large",
                    f"the body is larger than {limits.max_body_bytes} bytes",
                )
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431 or "exceeds" in str(exc):
                    await self._refuse(
                        stream, conn, 431, "headers_too_large", "the request headers are too large"
                    )
                else:
                    await self._refuse(
                        stream, conn, status, "bad_http", f"malformed HTTP request: {str(exc)[:120]}"
                    )
                return
            if got is None:
                return
            head, body = got
            served += 1
            self.requests_served += 1
            request = _to_request(head, body, peer)
            try:
                response = await self.handler(request)
            except DropConnection:
                _abort(stream)
                return
            except BadRequest as exc:
                response = Response.error(exc.status, exc.code, exc.message)
            except Exception:
                log.exception("%s: handler failed for %s %s", self.name, request.method, request.path)
                response = Response.error(500, "internal", "internal error; the request may be retried")
            close = served >= limits.max_requests_per_connection or not _keep_alive(head)
            if conn.our_state is not h11.SEND_RESPONSE:
                return
            await _send_response(stream, conn, response, close=close, head=head.method == b"HEAD")
            state_after: object = conn.our_state  # re-read: sending changed it
            if close or state_after is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _refuse(
        self, stream: trio.abc.Stream, conn: h11.Connection, status: int, code: str, message: str
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            if conn.our_state is h11.IDLE and conn.their_state is not h11.SEND_BODY:
                # h11 can only respond once it has seen a request line; fake
                # one so the client still gets a proper error
                conn = h11.Connection(h11.SERVER)
                conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                conn.next_event()
            with trio.move_on_after(1):
                await _send_response(stream, conn, Response.error(status, code, message), close=True)
                await _linger(stream)
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then discard what the client is still sending (bounded by
    the caller's deadline): closing with unread input makes the kernel send a
    reset, and the client would lose the error reply it has not read yet."""
    if isinstance(stream, trio.SocketStream):
        await stream.send_eof()
    while await stream.receive_some(65536):
        pass


def _abort(stream: trio.SocketStream) -> None:
    """Make the coming close a reset (SO_LINGER 0) instead of an orderly FIN."""
    # should it fail, the close is orderly: the client still gets no reply
    with contextlib.suppress(OSError):
        stream.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))


def _keep_alive(head: h11.Request) -> bool:
    for name, value in head.headers:
        if name == b"connection" and b"close" in value.lower():
            return False
    return head.http_version != b"1.0"


def _peer(stream: trio.SocketStream) -> str | None:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return None
    if isinstance(addr, tuple):
        return str(addr[0])
    return "unix"


# -------------------------------------------------------------- listeners


async def open_tcp_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener; ``port`` 0 picks a free port (see ``bound_port``)."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ListenerError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return listeners[0]


def bound_port(listener: trio.SocketListener) -> int:
    return int(listener.socket.getsockname()[1])


async def open_unix_listener(path: Path, mode: int = 0o660, group: str | None = None) -> trio.SocketListener:
    """A Unix socket listener at ``path`` with permissions ``mode``.

    A stale socket file is replaced only if it is a socket and nobody
    answers on it; a live daemon on the same path is reported, never
    hijacked. Anything that is not a socket is left alone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenerError(f"{path} exists and is not a socket; not replacing it")
        probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            probe.settimeout(1)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody answers
        else:
            raise ListenerError(f"another process already answers on {path}; is a daemon running?")
        finally:
            probe.close()
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        await sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot bind {path}: {exc.strerror}") from exc
    finally:
        os.umask(old_umask)
    if group is not None:
        import grp

        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, OSError) as exc:
            sock.close()
            path.unlink(missing_ok=True)
            raise ListenerError(f"cannot give {path} to group {group}: {exc}") from exc
    os.chmod(path, mode)
    sock.listen(512)
    return trio.SocketListener(sock)
