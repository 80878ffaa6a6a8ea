"""`auto_publish`: bare or with options, one JSON form per field type, no sensitive field by default."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import models
from shop.models import Account, Login
from test_publishing import Received, received

from tchu_rpc.django import auto_publish, model_payload
from tchu_rpc.errors import ConfigError
from tchu_rpc.testing import capture_logs

__all__ = ["received"]  # the fixture, shared with test_publishing


def _created(received: Received, topic: str) -> dict[str, Any]:
    events = received.marker()
    assert [t for t, _ in events] == [topic]
    data: dict[str, Any] = events[0][1]
    return data


@pytest.mark.parametrize("backend", ["postgres"])
def test_bare_auto_publish_sends_no_sensitive_field_and_one_form_per_type(
    received: Received, backend: str
) -> None:
    # Given a model decorated with a bare @auto_publish, with password, token and secret fields
    uid = uuid.uuid4()
    seen_at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    # When a row is saved (its Decimal assigned as a float, its date as a string)
    account = Account.objects.using("postgres").create(
        name="ada",
        password="pbkdf2_sha256$hash",
        api_token="tok",
        client_secret="s3cret",
        balance=12.5,
        uid=uid,
        born="1815-12-10",
        seen_at=seen_at,
    )
    data = _created(received, "shop.account.created")
    # then no sensitive field is sent, and each value has its one JSON form.
    assert not {"password", "api_token", "client_secret"} & set(data)
    assert data["name"] == "ada"
    assert data["balance"] == "12.50"
    assert data["uid"] == str(uid)
    assert data["born"] == "1815-12-10"
    assert data["seen_at"] == "2026-01-02T03:04:05+00:00"
    assert data["_meta"] == {"app_label": "shop", "model_name": "account", "pk": account.pk}


@pytest.mark.parametrize("assigned", [12, 12.5, "12.5", Decimal("12.500"), Decimal("12.5")])
def test_a_decimal_is_always_a_string_with_the_fields_places(assigned: Any) -> None:
    expected = "12.00" if assigned == 12 else "12.50"
    assert model_payload(Account(name="x", balance=assigned))["balance"] == expected


@pytest.mark.parametrize("backend", ["postgres"])
def test_include_fields_sends_a_password_it_names(received: Received, backend: str) -> None:
    Login.objects.using("postgres").create(name="ada", password="hash")
    data = _created(received, "shop.auth.login.created")
    assert (data["name"], data["password"]) == ("ada", "hash")
    assert set(data) == {"name", "password", "_meta"}


def test_decorating_a_model_warns_naming_the_fields_left_out() -> None:
    with capture_logs() as logs:
        auto_publish(Account)  # again: the same signal handlers (dispatch_uid), and the warning
    warned = [e for e in logs if e["event"] == "sensitive_fields_excluded"]
    assert warned and warned[0]["fields"] == ["password", "api_token", "client_secret"]
    assert warned[0]["model"] == "shop.Account"


def test_auto_publish_on_something_else_than_a_model_fails_at_once() -> None:
    with pytest.raises(ConfigError, match="topic_prefix is a string"):
        auto_publish(42)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="decorates a model class"):
        auto_publish()(lambda: None)  # type: ignore[type-var]
    with pytest.raises(ConfigError, match="publish_on"):
        auto_publish(publish_on=["saved"])


def test_a_model_class_passed_bare_is_returned_unchanged() -> None:
    assert auto_publish(Account) is Account
    assert issubclass(Account, models.Model)
