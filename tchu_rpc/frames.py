"""Read what the broker sent with one system call and hand py-amqp its whole frames.

py-amqp reads each frame with two or more `recv` calls (the header, then the payload and frame
end) and switches the socket's timeout before and after each frame (`having_timeout`: a context
manager and two `ioctl`s); a worker at 8 calls in flight made 13 `recv` and 10 timeout switches per
call that way. Here one non-blocking `recv` takes all that is waiting, each whole frame goes to
py-amqp's frame handler (`on_inbound_frame`, as its own `blocking_read` does), and a partial frame
stays in the transport's read buffer (`_read_buffer`), where py-amqp's own reads look first: a
callback that waits for an answer (`basic.cancel` waiting for its cancel-ok) reads through py-amqp
while frames of this read are still undispatched, so the rest is put there before each frame is.

Plain TCP only (`can_read`): a TLS socket decrypts in records and takes no `recv` flags, and
Windows has no `MSG_DONTWAIT`; the loop reads those through py-amqp.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from tchu_rpc.errors import ConnectionLost

#: At most this much per read: a 1 MB message takes several turns of the loop, and a read of many
#: small frames copies what follows each frame once (see `read_frames`).
_READ_SIZE = 64 * 1024
_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_FRAME_END = 0xCE
_DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)


def can_read(sock: Any) -> bool:
    """Tell whether `read_frames` can read `sock` (plain TCP where `recv` takes MSG_DONTWAIT)."""
    return _DONTWAIT is not None and not isinstance(sock, ssl.SSLSocket)


def read_frames(conn: Any, sock: socket.socket) -> bool:
    """Dispatch the whole frames waiting on `sock` to py-amqp connection `conn`.

    Returns False if nothing was waiting (another thread read it first). Raises `ConnectionLost`
    when the broker closed the connection or sent a malformed frame.
    """
    try:
        data = sock.recv(_READ_SIZE, _DONTWAIT or 0)
    except BlockingIOError:
        return False
    if not data:
        raise ConnectionLost("the broker closed the connection")
    transport = conn.transport
    buffer: bytes = transport._read_buffer + data if transport._read_buffer else data
    on_frame = conn.on_inbound_frame
    while len(buffer) > 7:
        frame_type, channel, size = _HEADER.unpack_from(buffer)
        end = 7 + size
        if len(buffer) <= end:
            break  # the rest of this frame is still on its way
        if buffer[end] != _FRAME_END:
            raise ConnectionLost(f"malformed frame from the broker: frame end {buffer[end]:#04x}")
        transport._read_buffer = buffer[end + 1 :]
        on_frame((frame_type, channel, buffer[7:end]))
        buffer = transport._read_buffer  # a callback may have read on through py-amqp
    transport._read_buffer = buffer
    return True
