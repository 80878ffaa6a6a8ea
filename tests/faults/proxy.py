"""Forward TCP through a loopback proxy that tests can cut, black-hole or make refuse.

One selector thread owns every socket; other threads hand it commands through a queue and a
wake-up socket, so the fault switches need no locks around socket state and `stop()` leaves
no thread behind.
"""

from __future__ import annotations

import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any
from urllib.parse import quote

_CHUNK = 65536
# Stop reading from one side while this much is still queued for the other (backpressure).
_HIGH_WATER = 1 << 20
# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)
_COMMAND_TIMEOUT = 5.0
_STOP_TIMEOUT = 2.0


class _Side:
    """One socket of a proxied connection and the bytes waiting to be written to it."""

    __slots__ = ("mask", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.mask = 0


class _Pair:
    """A client connection and its upstream connection."""

    __slots__ = ("client", "connecting", "dead", "inbound", "rewrite", "upstream")

    def __init__(
        self, client: socket.socket, upstream: socket.socket | None, rewrite: dict[bytes, bytes] | None
    ) -> None:
        self.client = _Side(client)
        self.upstream = _Side(upstream) if upstream is not None else None
        self.connecting = upstream is not None
        # A dead pair forwards nothing, ever again: black-holed bytes are gone, so the AMQP
        # framing on it could never be trusted after a restore.
        self.dead = upstream is None
        # Bytes from the broker not yet forwarded, kept until a whole frame is in (see `rewrite_headers`).
        self.inbound = bytearray()
        self.rewrite = rewrite

    def peer(self, side: _Side) -> _Side | None:
        return self.upstream if side is self.client else self.client


def _rewritten_frames(inbound: bytearray, rewrite: dict[bytes, bytes]) -> bytes:
    """Take the whole AMQP frames from `inbound`; return them with content headers rewritten."""
    out, offset = [], 0
    while len(inbound) - offset >= 7:
        frame_type, _, size = struct.unpack_from(">BHI", inbound, offset)
        end = offset + 7 + size + 1
        if len(inbound) < end:
            break
        frame = bytes(inbound[offset:end])
        if frame_type == 2:
            for old, new in rewrite.items():
                frame = frame.replace(old, new)
        out.append(frame)
        offset = end
    del inbound[:offset]
    return b"".join(out)


def _abort(sock: socket.socket | None) -> None:
    """Close a socket with RST."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """Forward TCP connections to one target, with switches to inject network faults."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        # Resolve once, so that the event loop never blocks on a name lookup.
        self._address = socket.getaddrinfo(target_host, target_port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
        self.listen_host = listen_host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._pairs: set[_Pair] = set()
        self._blackholed = False
        self._refusing = False
        self._rewrite: dict[bytes, bytes] | None = None
        self._running = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen and start forwarding in a background thread."""
        if self._thread is not None or self._closed:
            raise RuntimeError("FaultProxy already started or stopped")
        self._listener.listen(512)
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"FaultProxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every socket and join the thread; safe twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            self._close_resources()
            return
        if thread.is_alive():
            self._submit(self._request_stop)
            thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"FaultProxy thread did not stop within {_STOP_TIMEOUT} s")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "/") -> str:
        """Return an AMQP URL that connects through the proxy."""
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"amqp://{credentials}@{self.listen_host}:{self.port}/{quote(vhost, safe='')}"

    def reset_all(self) -> int:
        """Cut every current connection with RST on both sides; return how many were cut."""
        return int(self._call(self._reset_all))

    def blackhole(self) -> None:
        """Stop forwarding in both directions, keeping sockets open; new connections too."""
        self._call(self._blackhole)

    def restore(self) -> None:
        """Forward new connections again; black-holed connections stay dead."""
        self._call(self._restore)

    def refuse(self, on: bool) -> None:
        """When on, close new incoming connections at once (with RST)."""
        self._call(lambda: self._set_refusing(on))

    def rewrite_headers(self, replacements: dict[bytes, bytes]) -> None:
        """Replace bytes in content headers from the broker on connections made from now on.

        Each key is replaced by its value, of the same length, in every content header frame the broker
        sends: how a test hands a client header tables the broker itself would refuse at publish.
        `replacements` stays shared: a test may add to it later.
        """
        assert all(len(old) == len(new) for old, new in replacements.items()), "lengths must match"
        self._rewrite = replacements

    @property
    def connection_count(self) -> int:
        """Return the number of client connections currently open."""
        if self._thread is None:
            return 0
        return int(self._call(lambda: len(self._pairs)))

    # -- cross-thread plumbing -----------------------------------------------------------------

    def _submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._commands.put((fn, future))
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a full wake-up buffer already guarantees a wake-up
        return future

    def _call(self, fn: Callable[[], Any]) -> Any:
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise RuntimeError("FaultProxy is not running")
        if threading.current_thread() is thread:
            return fn()
        return self._submit(fn).result(_COMMAND_TIMEOUT)

    # -- commands, run on the proxy thread -----------------------------------------------------

    def _request_stop(self) -> None:
        self._running = False

    def _reset_all(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            self._close_pair(pair, rst=True)
        return len(pairs)

    def _blackhole(self) -> None:
        self._blackholed = True
        for pair in self._pairs:
            pair.dead = True
            pair.client.out.clear()
            if pair.upstream is not None:
                pair.upstream.out.clear()
            self._update(pair)

    def _restore(self) -> None:
        self._blackholed = False

    def _set_refusing(self, on: bool) -> None:
        self._refusing = on

    # -- the event loop ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._running:
                for key, events in self._selector.select(timeout=1.0):
                    self._dispatch(key, events)
        finally:
            self._close_resources()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        if key.data == "listener":
            self._accept()
        elif key.data == "wake":
            self._run_commands()
        else:
            pair, side = key.data
            if pair in self._pairs:
                self._on_event(pair, side, events)

    def _run_commands(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: leave it in the backlog, retry on the next event
            if self._refusing:
                _abort(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._add_pair(client)

    def _add_pair(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        if not self._blackholed:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = upstream.connect_ex(self._address)
            if err not in (0, errno.EINPROGRESS):
                upstream.close()
                _abort(client)
                return
        pair = _Pair(client, upstream, self._rewrite)
        self._pairs.add(pair)
        self._update(pair)

    def _on_event(self, pair: _Pair, side: _Side, events: int) -> None:
        try:
            if pair.connecting and side is pair.upstream:
                self._finish_connect(pair)
                return
            if events & selectors.EVENT_READ:
                self._read(pair, side)
            if pair in self._pairs and events & selectors.EVENT_WRITE:
                self._write(side)
        except OSError:
            self._close_pair(pair, rst=True)
            return
        if pair in self._pairs:
            self._update(pair)

    def _finish_connect(self, pair: _Pair) -> None:
        assert pair.upstream is not None
        if pair.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            self._close_pair(pair, rst=True)
            return
        pair.connecting = False
        self._update(pair)

    def _read(self, pair: _Pair, side: _Side) -> None:
        data = side.sock.recv(_CHUNK)
        peer = pair.peer(side)
        if not data:
            self._close_pair(pair, rst=False)
        elif not pair.dead and peer is not None:
            if pair.rewrite is None or side is pair.client:
                peer.out += data
                return
            pair.inbound += data
            peer.out += _rewritten_frames(pair.inbound, pair.rewrite)

    def _write(self, side: _Side) -> None:
        if side.out:
            sent = side.sock.send(side.out)
            del side.out[:sent]

    def _update(self, pair: _Pair) -> None:
        """Register each socket for the events its state needs."""
        client, upstream = pair.client, pair.upstream
        if upstream is None:
            self._set_mask(client, selectors.EVENT_READ, pair)
            return
        if pair.connecting:
            client_read = len(upstream.out) < _HIGH_WATER
            self._set_mask(client, selectors.EVENT_READ if client_read else 0, pair)
            self._set_mask(upstream, selectors.EVENT_WRITE, pair)
            return
        for side, peer in ((client, upstream), (upstream, client)):
            mask = 0
            # A dead pair keeps reading only to discard, so that a close is still noticed.
            if pair.dead or len(peer.out) < _HIGH_WATER:
                mask |= selectors.EVENT_READ
            if side.out and not pair.dead:
                mask |= selectors.EVENT_WRITE
            self._set_mask(side, mask, pair)

    def _set_mask(self, side: _Side, mask: int, pair: _Pair) -> None:
        if mask == side.mask:
            return
        if side.mask == 0:
            self._selector.register(side.sock, mask, (pair, side))
        elif mask == 0:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, mask, (pair, side))
        side.mask = mask

    def _close_pair(self, pair: _Pair, *, rst: bool) -> None:
        self._pairs.discard(pair)
        for side in (pair.client, pair.upstream):
            if side is None:
                continue
            if side.mask:
                self._selector.unregister(side.sock)
                side.mask = 0
            if rst:
                _abort(side.sock)
                continue
            if side.out and not pair.dead:
                # Best effort: hand over what the closing side sent last (e.g. close-ok).
                try:
                    side.sock.send(side.out)
                except OSError:
                    pass
            side.sock.close()

    def _close_resources(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pair in list(self._pairs):
            self._close_pair(pair, rst=True)
        for sock in (self._listener, self._wake_r, self._wake_w):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._selector.close()
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                break
            if not future.done():
                future.set_exception(RuntimeError("FaultProxy stopped"))
