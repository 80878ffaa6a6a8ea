"""tchu-tchu's README examples, run on `tchu_rpc.compat` against RabbitMQ with only imports changed.

Each test holds a README snippet as the README gives it (tchu-tchu 3.0.4's, in its wheel's
METADATA), except for its import lines, which name `tchu_rpc.compat` (and, for Django REST
framework, the small stand-in below). The snippets' helpers (`send_email`, `get_price`, ...) are
stubs at the bottom; `print` is this module's recorder, so that a test can wait for a line.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tchu_rpc import NoRoute, Registry, context, current_delivery
from tchu_rpc.compat import registering_on, set_default_client
from tchu_rpc.testing import TchuFactory

# -- the recorder behind the snippets' `print` ----------------------------------------------------
_lines: list[str] = []
_printed = threading.Condition()


def print(*args: Any) -> None:  # the snippets print; the tests wait for their lines
    with _printed:
        _lines.append(" ".join(str(a) for a in args))
        _printed.notify_all()


def wait_printed(*expected: str, timeout: float = 10) -> list[str]:
    """Wait until every expected line was printed; return all lines printed so far."""
    with _printed:
        assert _printed.wait_for(lambda: all(e in _lines for e in expected), timeout), _lines
        return list(_lines)


@pytest.fixture
def compat(tchu: TchuFactory) -> Iterator[Registry]:
    """Register compat handlers on a fresh registry; make `TchuClient()` use the test's client."""
    _lines.clear()
    previous = set_default_client(tchu.client())
    with registering_on(Registry()) as registry:
        yield registry
    set_default_client(previous)


def test_readme_subscribe_and_publish_events_reach_exact_and_wildcard_handlers(tchu, compat):
    # Given "2. Subscribe to Events" (myapp/subscribers.py)
    from tchu_rpc.compat import subscribe

    @subscribe("user.created")
    def handle_user_created(event_data):
        """This handler will be called when user.created events are published"""
        print(f"User created: {event_data}")
        # Process the event...

    @subscribe("user.*")  # Wildcard pattern
    def handle_any_user_event(event_data):
        """This handler receives all user.* events"""
        print(f"User event: {event_data}")

    tchu.worker(compat, "myapp")

    # When "3. Publish Events" runs: the event is published, and the call of 'user.validate', which
    # nobody serves, fails at once with NoRoute (tchu-tchu waited for its timeout)
    with pytest.raises(NoRoute):
        # In any microservice
        from tchu_rpc.compat import TchuClient

        client = TchuClient()

        # Publish an event (all subscribed apps receive it)
        client.publish("user.created", {"user_id": 123, "email": "user@example.com", "name": "John Doe"})

        # RPC call (request-response pattern)
        try:
            result = client.call("user.validate", {"email": "user@example.com"}, timeout=5)
            print(f"Validation result: {result}")
        except TimeoutError:
            print("No response within timeout")

    # Then both handlers ran once
    body = {"user_id": 123, "email": "user@example.com", "name": "John Doe"}
    lines = wait_printed(f"User created: {body}", f"User event: {body}")
    assert len(lines) == 2


def test_readme_star_matches_one_word_and_hash_many(tchu, compat):
    from tchu_rpc.compat import TchuClient, subscribe

    @subscribe("user.*")
    def one(event):
        print("one", event["n"])

    @subscribe("user.#")
    def many(event):
        print("many", event["n"])

    tchu.worker(compat, "patterns")
    client = TchuClient()
    client.publish("user.profile.updated", {"n": 1})  # two words after user: not for 'user.*'
    client.publish("user.created", {"n": 2})
    lines = wait_printed("many 1", "one 2", "many 2")
    assert "one 1" not in lines


def test_readme_rpc_vs_broadcast(tchu, compat):
    # Responder (only data-room service handles this)
    from tchu_rpc.compat import TchuClient, subscribe

    @subscribe("rpc.app_name.documents.list")
    def list_documents(data):
        docs = Document.objects.filter(company_id=data["company_id"])
        return [doc.to_dict() for doc in docs]  # Returned to caller

    tchu.worker(compat, "data_room")

    # Subscriber 1 (notifications service)
    with registering_on(Registry()) as notifications:

        @subscribe("user.created")
        def send_welcome_email(event):
            send_email(event["user_id"])

    tchu.worker(notifications, "notifications")

    # Subscriber 2 (analytics service)
    with registering_on(Registry()) as analytics:

        @subscribe("user.created")
        def track_signup(event):
            track_event(event["user_id"])

    tchu.worker(analytics, "analytics")

    client = TchuClient()
    # Publisher
    client.publish("user.created", {"user_id": 123})
    # Caller
    result = client.call("rpc.app_name.documents.list", {"company_id": 67})
    print(result)  # Returns document list

    assert result == [{"id": 1, "company_id": 67}, {"id": 2, "company_id": 67}]
    wait_printed("email 123", "track 123")


def test_readme_rpc_returns_the_handler_result(tchu, compat):
    from tchu_rpc.compat import TchuClient, subscribe

    # Publisher (any app)
    client = TchuClient()

    # Subscriber (handler app)
    @subscribe("order.calculate_total")
    def calculate_order_total(data):
        items = data["items"]
        total = sum(item["quantity"] * get_price(item["id"]) for item in items)

        # Apply discount if provided
        if data.get("discount_code"):
            total = apply_discount(total, data["discount_code"])

        # Return value will be sent back to caller
        return {"total": total, "currency": "USD"}

    tchu.worker(compat, "orders")

    try:
        result = client.call(
            "order.calculate_total",
            {"items": [{"id": 1, "quantity": 2}], "discount_code": "SAVE10"},
            timeout=10,
        )

        print(f"Order total: ${result['total']}")
    except TimeoutError:
        print("No response within 10 seconds")
    except Exception as e:
        print(f"RPC call failed: {e}")

    assert wait_printed("Order total: $18.0") == ["Order total: $18.0"]


def test_call_timeout_is_caught_by_the_builtin_timeout_error(tchu, compat):
    from tchu_rpc.compat import TchuClient, subscribe

    release = threading.Event()

    @subscribe("order.slow")
    def slow(data):
        release.wait(10)
        return {}

    tchu.worker(compat, "slow")
    try:
        TchuClient().call("order.slow", {}, timeout=0.5)
    except TimeoutError:
        print("No response within timeout")
    finally:
        release.set()
    wait_printed("No response within timeout")


def test_readme_tchu_event_with_serializers_and_rpc_exception(tchu, compat):
    from drf_standin import serializers

    from tchu_rpc.compat import TchuEvent, TchuRPCException

    # Define your serializers
    class RequestSerializer(serializers.Serializer):
        user_id = serializers.IntegerField()
        amount = serializers.DecimalField(max_digits=10, decimal_places=2)

    class SuccessResponseSerializer(serializers.Serializer):
        transaction_id = serializers.CharField()
        amount = serializers.DecimalField(max_digits=10, decimal_places=2)
        status = serializers.CharField()

    class ErrorResponseSerializer(serializers.Serializer):
        success = serializers.BooleanField()
        error_message = serializers.CharField()
        error_code = serializers.CharField()
        error_details = serializers.JSONField(required=False, default=dict)

    # Define your event
    class ProcessPaymentEvent(TchuEvent):
        class Meta:
            topic = "rpc.payments.process"
            request_serializer_class = RequestSerializer
            response_serializer_class = SuccessResponseSerializer
            error_serializer_class = ErrorResponseSerializer

    # Handler - raise TchuRPCException for business logic errors
    def process_payment_handler(event):
        user_id = event["user_id"]
        amount = event["amount"]

        # Business validation - raise TchuRPCException
        if amount <= 0:
            raise TchuRPCException(
                message="Amount must be positive", code="INVALID_AMOUNT", details={"amount": str(amount)}
            )

        if not user_exists(user_id):
            raise TchuRPCException(
                message="User not found", code="USER_NOT_FOUND", details={"user_id": user_id}
            )

        # Process and return success response
        transaction = charge_user(user_id, amount)
        return {"transaction_id": transaction.id, "amount": transaction.amount, "status": "completed"}

    ProcessPaymentEvent(handler=process_payment_handler).subscribe()
    tchu.worker(compat, "payments")

    for user_id in (123, 404):
        # Caller - check for error_code to detect errors
        event = ProcessPaymentEvent()
        event.serialize_request({"user_id": user_id, "amount": 50.00})
        response = event.call(timeout=30)

        if "error_code" in response:
            print(f"Failed: {response['error_message']} ({response['error_code']})")
        else:
            print(f"Success: {response['transaction_id']}")

    assert wait_printed() == ["Success: txn_123", "Failed: User not found (USER_NOT_FOUND)"]
    # The answers were validated by their serializers: the amount is a Decimal again
    event = ProcessPaymentEvent()
    event.serialize_request({"user_id": 123, "amount": "50.00"})
    assert event.call(timeout=5)["amount"] == Decimal("50.00")
    event.serialize_request({"user_id": 123, "amount": 0})
    assert event.call(timeout=5) == {
        "success": False,
        "error_message": "Amount must be positive",
        "error_code": "INVALID_AMOUNT",
        "error_details": {"amount": "0.00"},
    }


def test_readme_custom_rpc_exception_answers_its_own_dict(tchu, compat):
    from tchu_rpc.compat import TchuEvent, TchuRPCException

    class PaymentException(TchuRPCException):
        """Custom payment error with specific fields."""

        def __init__(self, payment_id: str, error_type: str, message: str, retry_after: int = None):  # noqa: RUF013 - as the README has it
            self.payment_id = payment_id
            self.error_type = error_type
            self.retry_after = retry_after
            super().__init__(message=message, code=error_type)

        def to_response_dict(self) -> dict:
            """Return custom response structure."""
            response = {
                "payment_id": self.payment_id,
                "error_type": self.error_type,
                "message": self.message,
            }
            if self.retry_after:
                response["retry_after"] = self.retry_after
            return response

    # Handler
    def payment_handler(event):
        if insufficient_funds():
            raise PaymentException(
                payment_id="pay_123",
                error_type="INSUFFICIENT_FUNDS",
                message="Your account balance is too low",
                retry_after=3600,  # Retry after 1 hour
            )
        # ...

    TchuEvent(topic="rpc.payments.pay", handler=payment_handler).subscribe()
    tchu.worker(compat, "payments")
    event = TchuEvent(topic="rpc.payments.pay")
    event.serialize_request({"amount": 1})
    assert event.call(timeout=5) == {
        "payment_id": "pay_123",
        "error_type": "INSUFFICIENT_FUNDS",
        "message": "Your account balance is too low",
        "retry_after": 3600,
    }


def test_readme_context_helper_rebuilds_the_request_of_a_received_event(tchu, compat):
    from tchu_rpc.compat import TchuEvent

    # Define your context reconstruction logic
    def my_context_helper(event_data):
        """
        Reconstruct request context from event data.
        """
        user = event_data.get("user")
        if not user:
            return {}

        # Reconstruct your framework's request/context object
        # Example for Django:
        from types import SimpleNamespace

        mock_request = SimpleNamespace()
        mock_request.user = SimpleNamespace(**user)
        return {"request": mock_request}

    # Or per-instance
    class MyEvent(TchuEvent):
        class Meta:
            topic = "user.created"

    def handler(event):
        print("user", event.request_context["request"].user.email, event.is_authorized())

    MyEvent(handler=handler, context_helper=my_context_helper).subscribe()
    tchu.worker(compat, "users")

    event = MyEvent()
    event.serialize_request({"user": {"email": "ada@example.com"}, "company": {"id": 1}, "user_company": {}})
    event.publish()
    wait_printed("user ada@example.com True")


def test_context_follows_a_chain_of_events_whose_data_drops_the_user(tchu, compat):
    # Given an event handler that, for a user's event, calls another service with data that has no
    # user fields (tchu-tchu's downstream handler would see no user at all)
    from tchu_rpc.compat import TchuEvent

    class Audit(TchuEvent):
        class Meta:
            topic = "rpc.audit.record"

    class OrderPlaced(TchuEvent):
        class Meta:
            topic = "order.placed"

    def record(event):
        carried = current_delivery().context
        print("audit", event["what"], event["user"]["id"], event.is_authorized(), carried["request_id"])
        return {"ok": True}

    def placed(event):
        audit = Audit()
        audit.serialize_request({"what": f"order {event['order_id']}"})
        print("placed", audit.call(timeout=5))

    Audit(handler=record).subscribe()
    OrderPlaced(handler=placed).subscribe()
    tchu.worker(compat, "orders")

    # When a user's event is published under a request id
    event = OrderPlaced()
    auth = {"user": {"id": 42}, "company": {"id": 1}, "user_company": {"id": 3}}
    event.serialize_request({"order_id": 7, **auth})
    with context(request_id="r-1"):
        event.publish()

    # Then the audit handler, two hops down, still knows the user and the request id
    wait_printed("audit order 7 42 True r-1", "placed {'ok': True}")


# -- stand-ins for Django REST framework and the snippets' helpers -----------------------------------
class _Field:
    def __init__(self, required: bool = True, default: Any = None, **options: Any) -> None:
        self.required = required
        self.default = default

    def to_internal(self, value: Any) -> Any:
        return value


class _IntegerField(_Field):
    def to_internal(self, value: Any) -> Any:
        return int(value)


class _DecimalField(_Field):
    def to_internal(self, value: Any) -> Any:
        return Decimal(str(value)).quantize(Decimal("0.01"))


class _CharField(_Field):
    def to_internal(self, value: Any) -> Any:
        return str(value)


class _BooleanField(_Field):
    def to_internal(self, value: Any) -> Any:
        return bool(value)


class _Serializer:
    """DRF's `Serializer` as far as TchuEvent uses it: `data=`, `context=`, `is_valid`, `errors`."""

    def __init__(self, instance: Any = None, data: Any = None, **kwargs: Any) -> None:
        if set(kwargs) - {"context", "partial", "many"}:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")  # as DRF's Field does
        self.initial_data = data
        self.context = kwargs.get("context", {})
        self.errors: dict[str, str] = {}
        self.validated_data: dict[str, Any] = {}

    def is_valid(self) -> bool:
        fields = {k: v for k, v in vars(type(self)).items() if isinstance(v, _Field)}
        for name, field in fields.items():
            if name not in self.initial_data:
                if field.required:
                    self.errors[name] = "This field is required."
                elif field.default is not None:
                    self.validated_data[name] = field.default()
                continue
            try:
                self.validated_data[name] = field.to_internal(self.initial_data[name])
            except (TypeError, ValueError, ArithmeticError) as exc:
                self.errors[name] = str(exc)
        return not self.errors


# `from rest_framework import serializers` becomes `from drf_standin import serializers`: DRF stays
# uninstalled, and tchu_rpc.compat must not need it.
_standin = types.ModuleType("drf_standin")
_standin.serializers = types.SimpleNamespace(  # type: ignore[attr-defined]
    Serializer=_Serializer,
    IntegerField=_IntegerField,
    DecimalField=_DecimalField,
    CharField=_CharField,
    BooleanField=_BooleanField,
    JSONField=_Field,
    EmailField=_CharField,
)
sys.modules.setdefault("drf_standin", _standin)


class _Doc:
    def __init__(self, id: int, company_id: int) -> None:
        self.id, self.company_id = id, company_id

    def to_dict(self) -> dict[str, int]:
        return {"id": self.id, "company_id": self.company_id}


Document = types.SimpleNamespace(
    objects=types.SimpleNamespace(filter=lambda company_id: [_Doc(1, company_id), _Doc(2, company_id)])
)


def send_email(user_id: int) -> None:
    print("email", user_id)


def track_event(user_id: int) -> None:
    print("track", user_id)


def get_price(item_id: int) -> float:
    return 10.0


def apply_discount(total: float, code: str) -> float:
    return total * 0.9


def user_exists(user_id: int) -> bool:
    return user_id != 404


def charge_user(user_id: int, amount: Decimal) -> Any:
    return types.SimpleNamespace(id=f"txn_{user_id}", amount=amount)


def insufficient_funds() -> bool:
    return True
