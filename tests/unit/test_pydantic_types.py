"""Pydantic v2 models through the codecs: encoded as JSON values, validated on decode; never imported."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from tchu_rpc import wire
from tchu_rpc.errors import DecodeError


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_model_round_trips_through_each_codec(serializer: str) -> None:
    codec = wire.codec_for(serializer)
    body = wire.encode(codec, Point(x=1, y=2), 1024)
    assert codec.decode(body, Point) == Point(x=1, y=2)
    assert codec.decode(body) == {"x": 1, "y": 2}


def test_a_body_that_does_not_fit_the_model_is_a_decode_error_naming_the_field() -> None:
    codec = wire.codec_for("json")
    with pytest.raises(DecodeError, match=r"Point: Input should be a valid integer.* - at `\$\.x`"):
        codec.decode(b'{"x": "one"}', Point)


def test_a_reply_envelope_validates_only_a_result() -> None:
    codec = wire.codec_for("json")
    envelope = wire.envelope_for(Point)
    assert wire.envelope_for(Point) is envelope  # built once per type
    result = codec.decode(codec.encode(wire.Result(result={"x": 3})), envelope)
    assert result == wire.Result(result=Point(x=3))
    failure = wire.Failure(wire.ErrorInfo("RpcError", "no"))
    assert codec.decode(codec.encode(failure), envelope) == failure
    with pytest.raises(DecodeError, match=r"\$\.x"):
        codec.decode(codec.encode(wire.Result(result={"x": "three"})), envelope)


def test_tchu_rpc_never_imports_pydantic() -> None:
    code = "import sys, tchu_rpc, tchu_rpc.wire; assert 'pydantic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
