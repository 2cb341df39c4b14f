"""The service manager's side channels: sd_notify datagrams and sockets
passed by socket activation (``LISTEN_FDS``).

The notify protocol is one datagram per message to ``$NOTIFY_SOCKET``
(an abstract socket when it starts with ``@``): ``READY=1``, ``RELOADING=1``
with ``MONOTONIC_USEC``, ``STOPPING=1``, ``WATCHDOG=1``, ``STATUS=…``.
Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same
under systemd, in a terminal and in tests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

import trio

log = logging.getLogger("kamen_router.notify")

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages, if the service manager asked for them."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if self.address is None:
            return False
        message = "\n".join(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address.replace("\0", "@"), exc.strerror)
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    async def serve_watchdog(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ping the watchdog at half its interval, for as long as the event
        loop is alive to do it (a stuck loop is exactly what it catches)."""
        task_status.started()
        if self.watchdog_s is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_s / 2)


def inherited_socket(
    env: MutableMapping[str, str] | None = None, name: str = "orders"
) -> socket.socket | None:
    """The listening socket passed by socket activation, if any.

    Honoured only when ``LISTEN_PID`` is this process. With several sockets,
    the one whose ``LISTEN_FDNAMES`` entry is ``name`` wins, else the first.
    The variables are removed so that child processes do not inherit them.
    """
    env = os.environ if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = env.get("LISTEN_FDS", "")
    if not count.isdigit() or int(count) < 1:
        return None
    names = env.get("LISTEN_FDNAMES", "").split(":")
    index = names.index(name) if name in names else 0
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    fd = SD_LISTEN_FDS_START + index
    return socket.socket(fileno=fd)
