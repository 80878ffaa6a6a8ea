"""Progress of a running call: a handler's `report_progress()` reaches its caller through the I/O thread."""

from __future__ import annotations

from functools import partial
from typing import Any

from tchu_rpc import wire
from tchu_rpc._amqp.loop import Loop
from tchu_rpc._worker import outgoing
from tchu_rpc._worker.messages import describe
from tchu_rpc._worker.settle import Job, Settler
from tchu_rpc.log import get_logger

logger = get_logger(__name__)


class ProgressSender:
    """Send a call's progress messages to its caller's reply address, on the worker's I/O thread."""

    def __init__(self, service: str, loop: Loop, settler: Settler, limit: int) -> None:
        self._service = service
        self._loop = loop
        self._settler = settler
        self._limit = limit

    def report(self, job: Job, info: Any) -> bool:
        """Queue a progress message with `info` for `job`'s caller; False once the call was answered."""
        if job.timed_out:
            return False
        codec = wire.codec_of(job.message.content_type)
        body = wire.encode(codec, wire.Progress(info), self._limit)
        self._loop.submit(partial(self._send, job, body, codec.content_type))
        return True

    def _send(self, job: Job, body: bytes, content_type: str) -> None:
        publisher = self._settler.publishers.get(job.kind)
        if job.timed_out or job.generation != self._loop.generation or publisher is None:
            return  # answered already, or its reply address died with the old connection
        self._settler.progress(job, outgoing.answer(job.message, body, content_type, self._service))
        if logger.enabled():
            logger.debug("progress_sent", service=self._service, **describe(job.message))
