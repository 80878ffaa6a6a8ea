"""TLS end to end: a client and a worker talk through a TLS front of the broker, verifying it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tls_proxy import Certificates, TlsProxy, make_certificates

from tchu_rpc import ConnectionLost, Registry
from tchu_rpc.testing import TchuFactory


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def tls_proxy(certificates: Certificates, tchu_broker_url: str) -> Iterator[TlsProxy]:
    parts = urlsplit(tchu_broker_url)
    with TlsProxy(certificates, (parts.hostname or "127.0.0.1", parts.port or 5672)) as proxy:
        yield proxy


def _tls_url(broker_url: str, host: str, port: int) -> str:
    parts = urlsplit(broker_url)
    userinfo = parts.netloc.rpartition("@")[0]
    return f"amqps://{userinfo}@{host}:{port}{parts.path}"


def _echo() -> Registry:
    registry = Registry()

    @registry.subscribe("rpc.tls.echo")
    def echo(data: Any) -> Any:
        return data

    return registry


def test_a_call_round_trips_over_tls_with_the_ca_and_host_name_checked(
    tls_proxy: TlsProxy, tchu: TchuFactory, certificates: Certificates
) -> None:
    # Given a worker and a client that reach the broker only through TLS, trusting the test CA, and
    # checking that the broker's certificate names "localhost" (the host of the URL)
    url = _tls_url(tchu.broker_url, "localhost", tls_proxy.port)
    tls = {"broker_url": url, "tls_ca_file": str(certificates.ca)}
    tchu.worker(_echo(), **tls)
    client = tchu.client(**tls)

    # When the client calls
    result = client.call("rpc.tls.echo", {"over": "tls"}, timeout=10)

    # Then the answer came back over two verified TLS connections
    assert result == {"over": "tls"}
    assert tls_proxy.handshakes >= 2


def test_a_certificate_for_another_host_name_is_refused(
    tls_proxy: TlsProxy, tchu: TchuFactory, certificates: Certificates
) -> None:
    # Given a client that expects the broker's certificate to name another host
    url = _tls_url(tchu.broker_url, "127.0.0.1", tls_proxy.port)
    client = tchu.client(
        broker_url=url, tls_ca_file=str(certificates.ca), tls_server_hostname="rabbit.example"
    )

    # Then it does not talk to the broker, and says why without showing the password
    with pytest.raises(ConnectionLost) as info:
        client.call("rpc.tls.echo", {}, timeout=1)
    assert "guest:guest" not in str(info.value)
    assert tls_proxy.handshakes == 0


def test_a_broker_signed_by_an_unknown_ca_is_refused(tls_proxy: TlsProxy, tchu: TchuFactory) -> None:
    # Given a client that trusts only the system's CAs
    client = tchu.client(broker_url=_tls_url(tchu.broker_url, "localhost", tls_proxy.port))

    # Then the test CA's certificate is refused
    with pytest.raises(ConnectionLost):
        client.call("rpc.tls.echo", {}, timeout=1)
    assert tls_proxy.handshakes == 0


def test_without_verification_any_certificate_is_accepted(tls_proxy: TlsProxy, tchu: TchuFactory) -> None:
    url = _tls_url(tchu.broker_url, "127.0.0.1", tls_proxy.port)
    tchu.worker(_echo(), broker_url=url, tls_verify=False)
    client = tchu.client(broker_url=url, tls_verify=False)
    assert client.call("rpc.tls.echo", 7, timeout=10) == 7
