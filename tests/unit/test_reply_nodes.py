"""Reading the node out of a direct reply-to address (`_amqp.reply_to.node_of`)."""

from __future__ import annotations

import base64
import struct

import pytest

from tchu_rpc._amqp.reply_to import node_of

PREFIX = "amq.rabbitmq.reply-to."
# Seen on RabbitMQ 3.10.8: NEW_PID_EXT with an ATOM_UTF8_EXT node `reply@<hash of the node name>`.
SEEN = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAATRAAAAABrDXvz.zmCMnIROuFXQQPvyBZ3zBA=="


def _address(tag: int, atom_tag: int, node: bytes) -> str:
    size = ">H" if atom_tag in (100, 118) else ">B"
    term = bytes([131, tag, atom_tag]) + struct.pack(size, len(node)) + node + bytes(12)
    return PREFIX + base64.b64encode(term).decode() + ".key"


def test_node_of_reads_the_node_of_an_address_rabbitmq_310_wrote() -> None:
    assert node_of(SEEN) == "reply@9248884"


@pytest.mark.parametrize("tag", [88, 103])  # NEW_PID_EXT, PID_EXT (before OTP 23)
@pytest.mark.parametrize("atom_tag", [118, 100, 119, 115])
def test_node_of_reads_every_atom_encoding_of_a_pid(tag: int, atom_tag: int) -> None:
    assert node_of(_address(tag, atom_tag, b"rabbit@host-1")) == "rabbit@host-1"


@pytest.mark.parametrize(
    "address",
    [
        "tchu.reply.0123abcd",  # a client's own reply queue: no node
        PREFIX + "not base64!.key",
        PREFIX + base64.b64encode(b"\x83h\x02").decode() + ".key",  # a tuple, not a pid
        PREFIX + base64.b64encode(b"\x83Xv\x00\x20short").decode() + ".key",  # a cut atom
        PREFIX,
    ],
)
def test_node_of_is_none_for_what_it_cannot_read(address: str) -> None:
    assert node_of(address) is None
