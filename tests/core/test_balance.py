"""Connections spread over the processes of `vna serve` (vna/cli/balance.py): each goes to
the process with the fewest open connections of its kind, across a real hand-over channel."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from vna.cli import balance


class Held:
    """A front end that keeps every adopted connection open until told otherwise."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def adopt(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)

    def count(self) -> int:
        with self.lock:
            return sum(1 for s in self.sockets if s.fileno() != -1)

    def close_all(self) -> None:
        with self.lock:
            for sock in self.sockets:
                sock.close()


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def balanced() -> Iterator[tuple[int, list[Held]]]:
    """Three 'processes' (reporters; two of them behind hand-over channels) and the
    dispatcher's listening port."""
    shared, child_ends = balance.make_shared({"dimse": 3})
    fronts = [Held() for _ in range(3)]
    reporters = [
        balance.Reporter(
            shared if i == 0 else shared.for_child(), i, {"dimse": balance.Front(f.adopt, f.count)}
        )
        for i, f in enumerate(fronts)
    ]
    for i, reporter in enumerate(reporters):
        reporter.start(None if i == 0 else child_ends[i])
    listener = balance.listen("127.0.0.1", 0)
    dispatcher = balance.Dispatcher(shared, reporters[0], {"dimse": listener})
    dispatcher.start()
    try:
        yield listener.getsockname()[1], fronts
    finally:
        dispatcher.stop()
        for reporter in reporters:
            reporter.stop()
        for front in fronts:
            front.close_all()
        for end in child_ends:
            end.close()


def test_a_burst_of_connections_is_spread_evenly(balanced: tuple[int, list[Held]]) -> None:
    port, fronts = balanced
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        wait_for(lambda: sum(f.count() for f in fronts) == 6)
        assert [f.count() for f in fronts] == [2, 2, 2]
    finally:
        for client in clients:
            client.close()


def test_new_connections_go_where_fewest_are_open(balanced: tuple[int, list[Held]]) -> None:
    port, fronts = balanced
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    wait_for(lambda: [f.count() for f in fronts] == [1, 1, 1])
    fronts[1].close_all()  # the second process's association ends
    time.sleep(3 * balance.REPORT_INTERVAL)  # it reports
    more = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        wait_for(lambda: sum(f.count() for f in fronts) == 4)
        time.sleep(0.1)
        counts = [f.count() for f in fronts]
        assert sum(counts) == 4 and max(counts) == 2 and counts[1] >= 1
    finally:
        for client in clients + more:
            client.close()


def test_adopted_connection_carries_the_bytes(balanced: tuple[int, list[Held]]) -> None:
    """The socket that arrives over the channel is the client's connection itself."""
    port, fronts = balanced
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        wait_for(lambda: all(f.count() == 1 for f in fronts))
        for n, client in enumerate(clients):
            client.sendall(b"ping%d" % n)
        received = sorted(f.sockets[0].recv(16) for f in fronts)
        assert received == [b"ping0", b"ping1", b"ping2"]
    finally:
        for client in clients:
            client.close()
