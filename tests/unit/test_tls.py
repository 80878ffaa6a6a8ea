"""TLS options: what `Settings` turns into kombu's (py-amqp's) `ssl=` argument."""

from __future__ import annotations

import ssl

from tchu_rpc._amqp.connection import tls_options
from tchu_rpc.config import Settings


def test_plain_amqp_without_tls_settings_has_no_tls() -> None:
    assert tls_options(Settings(broker_url="amqp://u:p@rabbit//")) is None


def test_amqps_verifies_the_certificate_and_the_url_host_by_default() -> None:
    # Given an amqps:// URL and no other TLS setting
    options = tls_options(Settings(broker_url="amqps://u:p@rabbit:5671//"))

    # Then the certificate is required, and server_hostname None makes kombu check the URL's host
    assert options == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}


def test_tls_files_and_server_hostname_become_py_amqp_options() -> None:
    settings = Settings(
        broker_url="amqp://u:p@10.0.0.5//",
        tls_ca_file="/etc/tchu/ca.pem",
        tls_cert_file="/etc/tchu/client.pem",
        tls_key_file="/etc/tchu/client.key",
        tls_server_hostname="rabbit.internal",
    )
    assert tls_options(settings) == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "rabbit.internal",
        "ca_certs": "/etc/tchu/ca.pem",
        "certfile": "/etc/tchu/client.pem",
        "keyfile": "/etc/tchu/client.key",
    }


def test_a_client_certificate_may_hold_its_key() -> None:
    options = tls_options(Settings(tls_cert_file="/etc/tchu/client-and-key.pem"))
    assert options is not None
    assert options["certfile"] == "/etc/tchu/client-and-key.pem"
    assert options["keyfile"] is None


def test_without_verification_no_certificate_is_required_and_no_host_name_is_checked() -> None:
    # py-amqp turns a server_hostname into check_hostname=True, which CERT_NONE contradicts
    options = tls_options(Settings(broker_url="amqps://rabbit//", tls_verify=False))
    assert options == {"cert_reqs": ssl.CERT_NONE}


def test_each_call_builds_a_fresh_dict() -> None:
    # kombu writes the URL's host into the dict: a shared one would pin a failover URL's host
    settings = Settings(broker_url="amqps://rabbit//")
    assert tls_options(settings) is not tls_options(settings)
