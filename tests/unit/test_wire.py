"""Wire format: codec round trips, reply envelopes, size limits and errors as data."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from tchu_rpc import wire
from tchu_rpc.errors import DecodeError, EncodeError, MessageTooLarge, RpcError

JSON = wire.codec_for("json")
MSGPACK = wire.codec_for("msgpack")
CODECS = [JSON, MSGPACK]
LIMIT = 1024 * 1024

DATA = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    0.1,
    -1.5e-300,
    1e308,
    "",
    "ascii",
    "ünïcødé ✓ 日本語 🐇",
    [],
    [1, "two", 3.0, None, [4, [5]]],
    {},
    {"a": {"b": {"c": [1, {"d": None}]}}, "ключ": "значение", "n": 2**40},
]


def _ids(value: Any) -> str:
    return repr(value)[:30]


class User(msgspec.Struct, frozen=True):
    id: int
    name: str
    tags: list[str] = []


# -- data round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
@pytest.mark.parametrize("value", DATA, ids=_ids)
def test_data_round_trips(codec: wire.Codec, value: Any) -> None:
    assert codec.decode(wire.encode(codec, value, LIMIT)) == value


@pytest.mark.parametrize("value", [b"", b"\x00\xff raw", bytes(range(256))], ids=_ids)
def test_msgpack_round_trips_bytes(value: bytes) -> None:
    decoded = MSGPACK.decode(wire.encode(MSGPACK, {"blob": value}, LIMIT))
    assert decoded == {"blob": value}
    assert type(decoded["blob"]) is bytes


def test_json_round_trips_ints_beyond_64_bits() -> None:
    big = {"big": 2**100, "small": -(2**100)}
    assert JSON.decode(wire.encode(JSON, big, LIMIT)) == big


def test_msgpack_rejects_ints_beyond_64_bits_with_encode_error() -> None:
    with pytest.raises(EncodeError, match="application/msgpack"):
        wire.encode(MSGPACK, 2**64, LIMIT)


def test_msgpack_round_trips_non_finite_floats() -> None:
    decoded = MSGPACK.decode(wire.encode(MSGPACK, [math.inf, -math.inf, math.nan], LIMIT))
    assert decoded[:2] == [math.inf, -math.inf]
    assert math.isnan(decoded[2])


@pytest.mark.parametrize(
    "value", [math.inf, [1.0, -math.inf], {"a": {"b": math.nan}}, ({"x": [None, math.nan]},)]
)
def test_json_refuses_non_finite_floats_instead_of_sending_null(value: object) -> None:
    # JSON has no NaN or Infinity: msgspec would write null, which the receiver would take for None.
    with pytest.raises(EncodeError, match="NaN and infinity"):
        wire.encode(JSON, value, LIMIT)


def test_json_still_encodes_none_and_finite_floats_beside_it() -> None:
    assert JSON.decode(wire.encode(JSON, [None, 1.5, {"a": None}], LIMIT)) == [None, 1.5, {"a": None}]


def test_json_encodes_utf8_text() -> None:
    assert JSON.content_encoding == "utf-8"
    assert wire.encode(JSON, "é", LIMIT) == '"é"'.encode()


def test_codecs_name_their_content_types() -> None:
    assert (JSON.content_type, MSGPACK.content_type) == (wire.JSON, wire.MSGPACK)
    assert wire.codec_of(wire.JSON) is JSON
    assert wire.codec_of(wire.MSGPACK) is MSGPACK


# -- reply envelopes ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
@pytest.mark.parametrize("result", [None, 0, "ok", [1, 2], {"id": 1, "name": "Ada"}], ids=_ids)
def test_result_round_trips_and_decodes_to_result(codec: wire.Codec, result: Any) -> None:
    reply = wire.decode_envelope(codec, wire.encode_reply(codec, wire.Result(result), LIMIT))
    assert isinstance(reply, wire.Result)
    assert reply == wire.Result(result)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
def test_failure_round_trips_and_decodes_to_failure(codec: wire.Codec) -> None:
    failure = wire.Failure(wire.ErrorInfo("RpcError", "no user 9", code="not_found", details={"id": 9}))
    reply = wire.decode_envelope(codec, wire.encode_reply(codec, failure, LIMIT))
    assert isinstance(reply, wire.Failure)
    assert reply == failure


def test_reply_envelope_is_tagged_by_kind() -> None:
    assert JSON.decode(wire.encode(JSON, wire.Result(1), LIMIT)) == {"type": "result", "result": 1}
    assert JSON.decode(wire.encode(JSON, wire.Failure(wire.ErrorInfo("E")), LIMIT)) == {
        "type": "error",
        "error": {"type": "E"},
    }


def test_reply_ignores_unknown_fields() -> None:
    body = b'{"type": "result", "result": 1, "added_in_v2": true}'
    assert wire.decode_envelope(JSON, body) == wire.Result(1)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
def test_unknown_reply_kind_is_a_decode_error(codec: wire.Codec) -> None:
    body = codec.encode({"type": "surprise", "result": 1})  # "progress" is a kind now
    with pytest.raises(DecodeError, match="surprise"):
        wire.decode_envelope(codec, body)


@pytest.mark.parametrize(
    "body",
    [b'{"result": 1}', b'{"type": "error"}', b"[1, 2]", b'"result"'],
    ids=["no kind", "error without error", "array", "string"],
)
def test_malformed_reply_envelope_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError, match="cannot decode application/json body"):
        wire.decode_envelope(JSON, body)


# -- decode errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
@pytest.mark.parametrize("body", [b"", b"\xff\x00\xc1", b"{not json", b"[1,"], ids=_ids)
def test_garbage_body_is_a_decode_error_with_the_reason(codec: wire.Codec, body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(body)
    message = str(info.value)
    assert message.startswith(f"cannot decode {codec.content_type} body: ")
    assert len(message) > len(f"cannot decode {codec.content_type} body: ")
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


@pytest.mark.parametrize("content_type", [None, "", "application/x-python-serialize", "text/plain"])
def test_unsupported_content_type_is_a_decode_error(content_type: str | None) -> None:
    with pytest.raises(DecodeError, match="unsupported content type") as info:
        wire.codec_of(content_type)
    assert repr(content_type) in str(info.value)


# -- encode errors and size limits --------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
@pytest.mark.parametrize("value", [object(), {"a": 1j}, {"k": {1, object()}}], ids=_ids)
def test_encoding_an_unencodable_object_is_an_encode_error(codec: wire.Codec, value: Any) -> None:
    with pytest.raises(EncodeError, match=f"as {codec.content_type}") as info:
        wire.encode(codec, value, LIMIT)
    assert info.value.__cause__ is not None


def test_encode_error_names_the_offending_type() -> None:
    class Opaque:
        pass

    with pytest.raises(EncodeError, match="Opaque"):
        wire.encode(JSON, {"x": [Opaque()]}, LIMIT)


def test_encoding_a_cyclic_value_is_an_encode_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(EncodeError):
        wire.encode(JSON, cyclic, LIMIT)


def test_check_size_allows_exactly_the_limit() -> None:
    wire.check_size(100, 100)


def test_check_size_raises_message_too_large_over_the_limit() -> None:
    with pytest.raises(MessageTooLarge, match="101 bytes exceeds the limit of 100 bytes"):
        wire.check_size(101, 100)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
def test_encode_raises_message_too_large_over_the_limit(codec: wire.Codec) -> None:
    value = "x" * 200
    size = len(codec.encode(value))
    assert wire.encode(codec, value, size) == codec.encode(value)
    with pytest.raises(MessageTooLarge):
        wire.encode(codec, value, size - 1)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
def test_encode_reply_turns_an_unencodable_result_into_a_failure(codec: wire.Codec) -> None:
    body = wire.encode_reply(codec, wire.Result({"when": object()}), LIMIT)
    reply = wire.decode_envelope(codec, body)
    assert isinstance(reply, wire.Failure)
    assert reply.error.type == "EncodeError"
    assert "the handler's result" in reply.error.message


def test_encode_reply_turns_an_oversized_result_into_a_failure() -> None:
    body = wire.encode_reply(JSON, wire.Result("x" * 10_000), 1_000)
    reply = wire.decode_envelope(JSON, body)
    assert isinstance(reply, wire.Failure)
    assert reply.error.type == "MessageTooLarge"


def test_encode_reply_turns_a_cyclic_result_into_a_failure() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    reply = wire.decode_envelope(JSON, wire.encode_reply(JSON, wire.Result(cyclic), LIMIT))
    assert isinstance(reply, wire.Failure)


# -- errors as data -----------------------------------------------------------------------------


def test_error_info_of_rpc_error_keeps_code_and_details() -> None:
    info = wire.error_info(RpcError("no user 9", code="not_found", details={"id": 9}))
    assert info == wire.ErrorInfo("RpcError", "no user 9", code="not_found", details={"id": 9})


def test_error_info_of_value_error_gives_type_and_message() -> None:
    info = wire.error_info(ValueError("bad value"))
    assert info == wire.ErrorInfo("ValueError", "bad value", code=None, details=None)


def test_error_info_turns_a_non_string_code_into_a_string() -> None:
    exc = RuntimeError("teapot")
    exc.code = 418  # type: ignore[attr-defined]
    assert wire.error_info(exc).code == "418"


def test_error_info_of_an_exception_without_message_has_an_empty_message() -> None:
    assert wire.error_info(KeyboardInterrupt()) == wire.ErrorInfo("KeyboardInterrupt", "")


# -- typed decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.content_type)
def test_typed_decode_builds_the_struct(codec: wire.Codec) -> None:
    body = wire.encode(codec, {"id": 1, "name": "Ada", "unknown": "ignored"}, LIMIT)
    assert codec.decode(body, User) == User(id=1, name="Ada")


def test_typed_decode_of_a_wrong_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"\$\.id"):
        JSON.decode(b'{"id": "one", "name": "Ada"}', User)


def test_typed_decode_of_a_missing_field_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="name"):
        JSON.decode(b'{"id": 1}', User)


def test_decoders_are_built_once_per_type() -> None:
    built: list[Any] = []

    def factory(target: Any) -> msgspec.json.Decoder[Any]:
        built.append(target)
        return msgspec.json.Decoder(target)

    codec = wire.Codec(wire.JSON, "utf-8", msgspec.json.encode, factory)
    for _ in range(3):
        assert codec.decode(b'{"id": 1, "name": "Ada"}', User) == User(1, "Ada")
        assert codec.decode(b"[1]") == [1]
    assert built == [User, Any]


def test_shared_codec_caches_its_decoder() -> None:
    JSON.decode(b'{"id": 1, "name": "Ada"}', User)
    first = JSON._decoders[User]
    JSON.decode(b'{"id": 2, "name": "Grace"}', User)
    assert JSON._decoders[User] is first


def test_codec_for_returns_the_same_codec_every_time() -> None:
    assert wire.codec_for("json") is wire.codec_for("json")
    assert wire.codec_for("msgpack") is wire.codec_for("msgpack")
