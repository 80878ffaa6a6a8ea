"""URL masking: passwords never reach logs, error messages or reprs."""

from __future__ import annotations

import pytest

from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.log import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@127.0.0.1//", "amqp://guest:***@127.0.0.1//"),
        ("amqps://svc:s3cret@rabbit.example.com/prod", "amqps://svc:***@rabbit.example.com/prod"),
        ("amqp://svc:s3cret@rabbit:5672/vhost", "amqp://svc:***@rabbit:5672/vhost"),
        ("amqp://svc:s3cret@[::1]:5672//", "amqp://svc:***@[::1]:5672//"),
        ("amqp://svc:s3cret@[2001:db8::7]//", "amqp://svc:***@[2001:db8::7]//"),
        ("amqp://:s3cret@rabbit//", "amqp://:***@rabbit//"),
        ("amqp://svc:s3cret@rabbit//?heartbeat=10", "amqp://svc:***@rabbit//?heartbeat=10"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "password",
    ["p%40ss%3Aw%2Frd", "p@ss:w0rd", "ünï%C3%A7", "a;b,c!$&'()*+=", "%23hash%3F"],
)
def test_mask_url_hides_passwords_with_special_characters(password: str) -> None:
    masked = mask_url(f"amqp://svc:{password}@rabbit:5671/vh")
    assert masked == "amqp://svc:***@rabbit:5671/vh"
    assert password not in masked


def test_mask_url_keeps_an_encoded_user_name() -> None:
    assert mask_url("amqp://us%40er:pw@rabbit//") == "amqp://us%40er:***@rabbit//"


@pytest.mark.parametrize(
    "url",
    [
        "amqp://127.0.0.1//",
        "amqp://guest@rabbit:5672/vh",
        "amqps://[::1]:5671//",
        "memory://",
        "memory://localhost/",
        "",
    ],
)
def test_mask_url_leaves_urls_without_a_password_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_mask_url_hides_every_password_of_failover_urls() -> None:
    masked = mask_url("amqp://svc:first-secret@rabbit1//;amqp://svc:second-secret@rabbit2//")
    assert "first-secret" not in masked
    assert "second-secret" not in masked


def test_mask_url_never_raises_on_a_malformed_port() -> None:
    assert "s3cret" not in mask_url("amqp://svc:s3cret@rabbit:port//")


def test_client_repr_does_not_contain_the_password() -> None:
    # Constructing a client does not connect: its I/O thread connects when there is work.
    with Client("amqp://svc:hunter2-secret@127.0.0.1:1//", settings=Settings()) as client:
        text = repr(client)
    assert "hunter2-secret" not in text
    assert "svc:***@127.0.0.1:1" in text


def test_client_repr_masks_the_settings_url() -> None:
    settings = Settings(broker_url="amqps://svc:hunter2-secret@rabbit:5671/vh")
    with Client(settings=settings) as client:
        assert "hunter2-secret" not in repr(client)
