"""Spreading accepted connections over the server processes of `vna serve`.

One Python process uses one core, so `vna serve` runs several. Letting each listen on the
port (SO_REUSEPORT) leaves the choice to a hash of the peer's address: four modalities
sending at once land three on one process and one on another about half the time, and the
busy process then sets the pace. Instead the first process accepts every connection and hands
it to the process with the fewest open connections of that kind (the socket itself travels
over a Unix socket, SCM_RIGHTS), which serves it as if it had accepted it.

Each process publishes, per kind of connection, how many it has adopted and how many are
still open, in shared memory; the accepting process adds what it has handed over and not yet
seen adopted, so a burst of connections is spread before anyone reports.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: How often each process refreshes its count of open connections (seconds).
REPORT_INTERVAL = 0.05

Adopt = Callable[[socket.socket], None]
Count = Callable[[], int]


@dataclass
class Front:
    """One kind of connection as a process serves it: adopt an accepted socket, count the
    open ones."""

    adopt: Adopt
    count: Count
    adopted: int = 0


@dataclass
class Shared:
    """What the processes share: per kind and process, (adopted, open) counters, and the
    process's end of its hand-over channel."""

    kinds: tuple[str, ...]
    processes: int
    serving: tuple[int, ...]  # per kind: processes 0 .. n-1 serve it
    counters: Any  # multiprocessing Array of 2 * kinds * processes integers
    channels: list[socket.socket] = field(default_factory=list)  # parent ends, by process

    def for_child(self) -> Shared:
        """The part a child process gets (not the other processes' channels)."""
        return Shared(self.kinds, self.processes, self.serving, self.counters)

    def slot(self, kind: str, process: int) -> int:
        return 2 * (self.kinds.index(kind) * self.processes + process)


class Reporter:
    """Publishes this process's counts and adopts the connections handed to it."""

    def __init__(self, shared: Shared, index: int, fronts: dict[str, Front]) -> None:
        self.shared = shared
        self.index = index
        self.fronts = fronts
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def adopt(self, kind: str, sock: socket.socket) -> None:
        """Serve an accepted connection here."""
        front = self.fronts[kind]
        try:
            front.adopt(sock)
        except Exception:
            log.exception("could not serve a %s connection", kind)
            with contextlib.suppress(OSError):
                sock.close()
        front.adopted += 1
        self.report()

    def report(self) -> None:
        counters = self.shared.counters
        for kind, front in self.fronts.items():
            slot = self.shared.slot(kind, self.index)
            counters[slot] = front.adopted
            counters[slot + 1] = front.count()

    def start(self, channel: socket.socket | None) -> None:
        """Report periodically, and (in a child) receive the connections handed over."""
        self._spawn(self._report_loop, "report")
        if channel is not None:
            self._spawn(lambda: self._receive_loop(channel), "receive")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"balance-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _report_loop(self) -> None:
        while not self._stop.wait(REPORT_INTERVAL):
            with contextlib.suppress(Exception):
                self.report()

    def _receive_loop(self, channel: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                message, fds, _flags, _address = socket.recv_fds(channel, 16, 1)
            except OSError:
                return
            if not message:
                return  # the accepting process is gone
            for fd in fds:
                sock = socket.socket(fileno=fd)
                self.adopt(message.decode("ascii", "replace"), sock)

    def stop(self) -> None:
        self._stop.set()


class Dispatcher:
    """In the accepting process: accept on each listening socket and hand every connection
    to the process with the fewest open connections of its kind."""

    def __init__(
        self, shared: Shared, local: Reporter, listeners: dict[str, socket.socket]
    ) -> None:
        self.shared = shared
        self.local = local
        self.listeners = listeners
        self._handed = [[0] * shared.processes for _ in shared.kinds]
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for kind, listener in self.listeners.items():
            thread = threading.Thread(
                target=self._accept_loop, args=(kind, listener), name=f"accept-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def choose(self, kind: str) -> int:
        """The process with the fewest open connections of ``kind`` (the first on a tie)."""
        counters = self.shared.counters
        k = self.shared.kinds.index(kind)
        best, best_open = 0, None
        for process in range(self.shared.serving[k]):
            slot = self.shared.slot(kind, process)
            adopted, open_now = counters[slot], counters[slot + 1]
            in_flight = max(0, self._handed[k][process] - adopted)
            total = in_flight + open_now
            if best_open is None or total < best_open:
                best, best_open = process, total
        self._handed[k][best] += 1
        return best

    def _accept_loop(self, kind: str, listener: socket.socket) -> None:
        while True:
            try:
                sock, _address = listener.accept()
            except OSError:
                return  # the listener was closed: shutting down
            with self._lock:
                target = self.choose(kind)
            if target == 0 or not self._hand_over(kind, sock, target):
                self.local.adopt(kind, sock)

    def _hand_over(self, kind: str, sock: socket.socket, process: int) -> bool:
        channel = self.shared.channels[process]
        try:
            socket.send_fds(channel, [kind.encode("ascii")], [sock.fileno()])
        except OSError:
            log.warning("server process %d is not answering; serving here", process)
            return False
        sock.close()
        return True

    def stop(self) -> None:
        for listener in self.listeners.values():
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                listener.close()
        for channel in self.shared.channels:
            with contextlib.suppress(OSError):
                channel.close()


def make_shared(serving: dict[str, int]) -> tuple[Shared, list[socket.socket]]:
    """Counters in shared memory and one hand-over channel per process, for the kinds of
    connection and how many processes serve each; returns the shared state (parent ends)
    and the child ends (index 0, the accepting process's own, is unused)."""
    import multiprocessing

    kinds = tuple(serving)
    processes = max(serving.values())
    counters = multiprocessing.get_context("spawn").Array("q", 2 * len(kinds) * processes)
    shared = Shared(kinds, processes, tuple(serving.values()), counters)
    child_ends: list[socket.socket] = []
    for _ in range(processes):
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        shared.channels.append(parent_end)
        child_ends.append(child_end)
    return shared, child_ends


def listen(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket (blocking accepts in the dispatcher's threads).

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
