"""Open a kombu connection from `Settings`: URL, timeouts, heartbeat and TLS options, in one place."""

from __future__ import annotations

import ssl
from typing import Any

from kombu import Connection

from tchu_rpc._amqp import properties
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConnectionLost
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


def open_connection(settings: Settings) -> Connection:
    """Return a connected kombu connection built from `settings`."""
    conn = Connection(
        settings.broker_url,
        heartbeat=settings.heartbeat or None,
        connect_timeout=settings.connect_timeout,
        ssl=tls_options(settings) or False,
        # A virtual transport's polling interval is set by the I/O loop before each drain.
        transport_options={"write_timeout": max(settings.connect_timeout, 10.0)},
    )
    try:
        conn.connect()
    except Exception as exc:
        conn.release()
        raise ConnectionLost(
            f"cannot connect to {mask_url(settings.broker_url)}: {exc or type(exc).__name__}"
        ) from exc
    if is_amqp(conn):
        properties.tolerate(conn.connection)  # a message with non-UTF-8 properties must not fail it
    return conn


def is_amqp(conn: Connection) -> bool:
    """Tell whether the connection speaks real AMQP 0-9-1 (not a kombu virtual transport)."""
    return bool(conn.transport.driver_type == "amqp")
