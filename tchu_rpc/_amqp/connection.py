"""Open a kombu connection from `Settings`: URL, timeouts, heartbeat and TLS options, in one place."""

from __future__ import annotations

import queue
import random
import re
import socket
import ssl
import threading
import time
from typing import Any

from amqp import exceptions as amqp_errors
from kombu import Connection
from kombu.utils.url import parse_url

from tchu_rpc._amqp import properties
from tchu_rpc.config import FailoverStrategy, Settings
from tchu_rpc.errors import AccessRefused, ConnectionLost
from tchu_rpc.log import mask_url


def tls_options(settings: Settings) -> dict[str, Any] | None:
    """Return kombu's `ssl=` argument for `settings`: py-amqp's socket-wrapping options, or None.

    py-amqp 5 takes a dict of `SSLContext` wrapping options (not an `SSLContext`). With
    `server_hostname` None, kombu fills in the host of the URL, and py-amqp then checks the broker's
    certificate names it; py-amqp checks no host name when the key is absent, so it is always set
    while verifying.
    """
    if not settings.tls:
        return None
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE}
    if settings.tls_verify:
        # Omitted without verification: py-amqp turns a host name into check_hostname=True.
        options["server_hostname"] = settings.tls_server_hostname or None
    if settings.tls_ca_file:
        options["ca_certs"] = settings.tls_ca_file
    if settings.tls_cert_file:
        options["certfile"] = settings.tls_cert_file
        options["keyfile"] = settings.tls_key_file  # None: the key is in the certificate file
    return options


def open_connection(settings: Settings, cancel: threading.Event | None = None) -> Connection:
    """Return a kombu connection to the first broker of `settings`, within a bounded time.

    One attempt tries one URL, the first of a failover list: a caller that retries builds its
    settings from a `Hosts` (as the I/O loop does), so that its attempts go round the list and a
    dead node costs one attempt, not every one. Every step is bounded: the name lookup and the TCP
    connect and handshake by `connect_time` (the lookup has no timeout of its own, so the attempt
    runs on a helper thread that is left behind if it hangs, and closes what it opened late), and
    every later wait for the broker (a declaration, a `basic.cancel`) by the socket's read and
    write timeouts.
    """
    attempt = _Attempt(settings, Hosts(settings.broker_url).current)
    threading.Thread(target=attempt.run, name="tchu-connect", daemon=True).start()
    return attempt.result(connect_time(settings), cancel or threading.Event())


#: A `;` that starts another URL (not one inside a password), as `log.mask_url` splits them.
_FAILOVER_SPLIT = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")


class Hosts:
    """The URLs of a failover list (`url1;url2;...`), and which one the next attempt tries.

    kombu rotates through alternates inside one `Connection`; each attempt here builds a new one,
    so the rotation lives here: each `take()` returns the URL after the one taken last, round
    robin, and the first attempt after a lost connection goes to the next node. `shuffle` orders
    the list at random once (per client or worker), so that processes spread over the nodes.
    """

    def __init__(
        self, broker_url: str, strategy: FailoverStrategy = "round-robin", rng: random.Random | None = None
    ) -> None:
        urls = [url for url in _FAILOVER_SPLIT.split(broker_url) if url.strip()] or [broker_url]
        if strategy == "shuffle":
            (rng or random.Random()).shuffle(urls)
        self.urls: tuple[str, ...] = tuple(urls)
        self._taken = -1
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        """Return the URL taken last (the first one before any)."""
        return self.urls[max(self._taken, 0)]

    def take(self) -> str:
        """Return the URL the next attempt tries, and move on."""
        with self._lock:
            self._taken = (self._taken + 1) % len(self.urls)
            return self.urls[self._taken]


#: How often a wait for a connection looks whether its loop was stopped meanwhile.
_CANCEL_POLL = 0.1


def connect_time(settings: Settings) -> float:
    """Return the longest a connection attempt may take: lookup, TCP connect, AMQP handshake."""
    return 2 * settings.connect_timeout + 1.0


class _Attempt:
    """One connection attempt on a helper thread, whose result the I/O thread waits for."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self._outcome: queue.SimpleQueue[Connection | BaseException] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._abandoned = False

    def result(self, timeout: float, cancel: threading.Event) -> Connection:
        deadline = time.monotonic() + timeout
        outcome: Connection | BaseException | None = None
        while outcome is None and not cancel.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                outcome = self._outcome.get(timeout=min(left, _CANCEL_POLL))
            except queue.Empty:
                pass
        if outcome is None:
            with self._lock:
                self._abandoned = True
            why = "stopped" if cancel.is_set() else f"no connection within {timeout:g} s"
            outcome = TimeoutError(f"{why} (name lookup, TCP or handshake)")
        if isinstance(outcome, BaseException):
            refused = access_refused(outcome, login(self.url))
            if refused is not None:  # a login or vhost refused: no retry changes it
                raise refused from outcome
            where = mask_url(self.url)
            raise ConnectionLost(
                f"cannot connect to {where}: {outcome or type(outcome).__name__}"
            ) from outcome
        return outcome

    def run(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:
            self._outcome.put(exc)
            return
        with self._lock:
            late = self._abandoned
            if not late:
                self._outcome.put(conn)
        if late:
            conn.release()  # nobody waits for it any more

    def _connect(self) -> Connection:
        settings = self.settings
        bound = max(settings.connect_timeout, 10.0)
        conn = Connection(
            self.url,
            heartbeat=settings.heartbeat or None,
            connect_timeout=settings.connect_timeout,
            ssl=tls_options(settings) or False,
            # A virtual transport's polling interval is set by the I/O loop before each drain.
            transport_options={
                "write_timeout": bound,
                "read_timeout": bound,
                "socket_settings": _tcp(settings),
            },
        )
        try:
            # One attempt: kombu's `connect()` tries twice, two seconds apart; the loop retries itself.
            conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        except Exception:
            conn.release()
            raise
        if is_amqp(conn):
            properties.tolerate(conn.connection)  # a message with non-UTF-8 properties must not fail it
        return conn


def _tcp(settings: Settings) -> dict[int, int]:
    # py-amqp aborts a connection whose sent data stays unacknowledged for 1 s (TCP_USER_TIMEOUT):
    # a broker that blocks publishers during a resource alarm stops reading, and 1 s later the
    # connection was gone, again and again. Heartbeats find a dead broker; this is the backstop.
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        return {}
    return {option: int(max(2 * settings.heartbeat, 60.0) * 1000)}


#: The broker's refusals that no retry changes: 403 access refused, 404 not found, 406 precondition
#: failed (a queue that exists with other arguments), 530 not allowed (a vhost).
_REFUSALS = (
    amqp_errors.AccessRefused,
    amqp_errors.NotFound,
    amqp_errors.PreconditionFailed,
    amqp_errors.NotAllowed,
    AccessRefused,
)


def refusal(exc: BaseException) -> str | None:
    """Return the broker's reason if `exc` (or what caused it) is a refusal no retry changes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _REFUSALS):
            return f"the broker refused: {seen}"
        seen = seen.__cause__
    return None


def access_refused(exc: BaseException | None, user: str | None) -> AccessRefused | None:
    """Return `AccessRefused` if `exc` (or what caused it) is the broker's 403, else None.

    It names the AMQP method refused, the login `user` (never a password) and the broker's text,
    which names the resource (`access to exchange 'x' in vhost 'v' refused for user 'u'`).
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, AccessRefused):
            return seen
        if isinstance(seen, amqp_errors.AccessRefused):
            operation = seen.method_name or "Connection.open"
            who = f" for user {user!r}" if user else ""
            message = f"{operation} refused{who}: {seen.reply_text or seen}"
            return AccessRefused(message, operation=operation, user=user)
        seen = seen.__cause__
    return None


def login(url: str) -> str | None:
    """Return the user name in the first broker URL of `url` (None for EXTERNAL, or none given)."""
    first = Hosts(url).current
    try:
        user = parse_url(first).get("userid")
    except Exception:
        return None
    return str(user) if user else None


def is_amqp(conn: Connection) -> bool:
    """Tell whether the connection speaks real AMQP 0-9-1 (not a kombu virtual transport)."""
    return bool(conn.transport.driver_type == "amqp")
