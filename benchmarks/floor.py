"""The floor: the least RPC that can be written on kombu, with no framework, to measure others against.

Server: a non-durable queue bound to a topic exchange, prefetch 1, manual ack; each request is answered
on its `reply_to` (default exchange) with its `correlation_id`, then acked; no publisher confirms.
Client: RabbitMQ direct reply-to, consumed no-ack on the channel that publishes the requests.

With `--confirm` ("floor+conf") it gives tchu_rpc's guarantees the usual way and adds nothing else:
requests are published in confirm mode (confirms pipelined, not waited for) and mandatory, and each
reply's confirm arrives before the request is acked. With `--tx` ("floor+tx") it gives the same
guarantees the way tchu_rpc's worker does: requests as with `--confirm`, and each reply, its request's
ack and a `tx.commit` go out together, one AMQP transaction (benchmarks/RESULTS.md).

With `--quorum` its queue is a durable quorum queue instead (a quorum queue cannot be auto-delete);
the harness deletes it after the servers stop (benchmarks/cluster.py).

    python -m benchmarks.floor serve --broker URL --queue Q [--exchange X] [--binding rpc.#] [--confirm|--tx]
        [--quorum]
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from amqp import spec
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from benchmarks.loadgen import Call, RunResult, check_reply, request_body, run_threads
from benchmarks.procs import READY_LINE, ServerGroup

ROUTING_KEY = "rpc.bench.echo"
REPLY_TO = "amq.rabbitmq.reply-to"
_CALL_TIMEOUT = 30.0
_ROOT = Path(__file__).resolve().parent.parent


def topology(
    queue: str, exchange: str, binding: str = "rpc.#", quorum: bool = False
) -> tuple[Exchange, Queue]:
    """Return the floor's exchange and queue; both vanish once the last server stops consuming.

    A quorum queue stays until deleted (its exchange goes with its binding).
    """
    ex = Exchange(exchange, type="topic", durable=False, auto_delete=True)
    if quorum:
        args = {"x-queue-type": "quorum"}
        return ex, Queue(queue, ex, routing_key=binding, durable=True, queue_arguments=args)
    return ex, Queue(queue, ex, routing_key=binding, durable=False, auto_delete=True)


def serve(
    broker_url: str,
    queue: str,
    exchange: str,
    binding: str,
    confirm: bool = False,
    tx: bool = False,
    quorum: bool = False,
) -> int:
    """Answer echo requests until SIGTERM or SIGINT; print the ready line once consuming."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _, q = topology(queue, exchange, binding, quorum)
    with Connection(broker_url) as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_size=0, prefetch_count=1, a_global=False)
        producer = Producer(channel, auto_declare=False)
        unconfirmed: dict[int, Message] = {}  # publish sequence number -> request to ack on its confirm
        sequence = itertools.count(1)
        if confirm:
            channel.confirm_select()
            channel.events["basic_ack"].add(lambda tag, multiple: _ack_confirmed(unconfirmed, tag, multiple))
        if tx:
            channel.tx_select()
            # The commit-ok is not waited for: with prefetch 1 nothing is sent on the channel before
            # the next request, which the broker delivers only once it applied the commit.
            channel._callbacks[spec.Tx.CommitOk] = lambda *args: None

        def on_request(message: Message) -> None:
            props = message.properties
            producer.publish(
                json.dumps(json.loads(message.body)).encode(),
                routing_key=props["reply_to"],
                correlation_id=props.get("correlation_id"),
                content_type="application/json",
                content_encoding="utf-8",
                retry=False,
            )
            if confirm:
                unconfirmed[next(sequence)] = message
            else:
                message.ack()  # after the reply: a crash in between redelivers, never loses
            if tx:
                channel.send_method(spec.Tx.Commit)  # the reply and the ack, together or neither

        consumer = Consumer(channel, [q], on_message=on_request, no_ack=False)
        consumer.consume()
        print(READY_LINE, flush=True)
        while not stopping:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:  # socket.timeout: wake up to look at the stop flag
                continue
        consumer.cancel()
    return 0


def _ack_confirmed(unconfirmed: dict[int, Message], tag: int, multiple: bool) -> None:
    for seq in sorted(t for t in unconfirmed if t <= tag) if multiple else [tag]:
        message = unconfirmed.pop(seq, None)
        if message is not None:
            message.ack()


def make_caller(
    broker_url: str, exchange: str, pad: str, confirm: bool = False
) -> tuple[Call, Callable[[], None]]:
    """Return one caller: its own connection, one channel publishing and consuming direct reply-to."""
    conn = Connection(broker_url)
    conn.connect()
    channel = conn.channel()
    if confirm:  # pipelined: the confirms are read with the replies, never waited for
        channel.confirm_select()
        channel.events["basic_ack"].add(lambda tag, multiple: None)
    producer = Producer(channel, exchange=Exchange(exchange, type="topic"), auto_declare=False)
    pending: dict[str, bytes] = {}

    def on_reply(message: Message) -> None:
        pending[message.properties.get("correlation_id", "")] = message.body

    # The pseudo-queue needs no declaration; it must be consumed on the publishing channel.
    replies = Consumer(channel, [Queue(REPLY_TO)], on_message=on_reply, no_ack=True, auto_declare=False)
    replies.consume()

    def call(n: int) -> None:
        correlation_id = uuid.uuid4().hex
        producer.publish(
            json.dumps(request_body(n, pad)).encode(),
            routing_key=ROUTING_KEY,
            reply_to=REPLY_TO,
            correlation_id=correlation_id,
            content_type="application/json",
            content_encoding="utf-8",
            retry=False,
            mandatory=confirm,
        )
        while correlation_id not in pending:
            conn.drain_events(timeout=_CALL_TIMEOUT)
        check_reply(json.loads(pending.pop(correlation_id)), n)

    def close() -> None:
        try:
            conn.release()
        except OSError:
            pass

    return call, close


class FloorContender:
    """The floor as a contender: `processes` floor servers, one connection per caller thread."""

    def __init__(
        self, run_id: str, log_dir: Path, confirm: bool = False, tx: bool = False, quorum: bool = False
    ) -> None:
        self.name = "floor+conf" if confirm else "floor+tx" if tx else "floor"
        self.confirm = confirm
        self.tx = tx
        self.quorum = quorum
        self._broker_url: str | None = None
        self.queue = f"bench.{run_id}.{self.name}"
        self.exchange = f"bench.{run_id}.{self.name}"
        self._servers = ServerGroup(log_dir / self.name)

    @property
    def settings(self) -> str:
        """Describe the setup in one line for the report."""
        confirms = (
            "confirmed requests and replies, ack after the reply's confirm"
            if self.confirm
            else "confirmed requests; reply, ack and tx.commit in one transaction"
            if self.tx
            else "ack after reply; no confirms"
        )
        queue = "durable quorum queue" if self.quorum else "non-durable auto-delete queue"
        return (
            f"raw kombu; {queue} on a topic exchange; prefetch 1; {confirms}; "
            "direct reply-to; one connection per caller thread"
        )

    def start_servers(self, broker_url: str, processes: int) -> None:
        """Start `processes` floor servers and wait until each consumes."""
        argv = [sys.executable, "-m", "benchmarks.floor", "serve", "--broker", broker_url]
        argv += ["--queue", self.queue, "--exchange", self.exchange]
        argv += ["--confirm"] if self.confirm else ["--tx"] if self.tx else []
        argv += ["--quorum"] if self.quorum else []
        self._broker_url = broker_url
        try:
            for _ in range(processes):
                self._servers.spawn(argv, cwd=_ROOT)
            self._servers.wait_ready(timeout=30)
        except BaseException:
            self._servers.stop()
            raise

    def stop_servers(self) -> None:
        """Stop the servers; the auto-delete queue and exchange go with the last one.

        A quorum queue is deleted here (and its auto-delete exchange with its binding).
        """
        self._servers.stop()
        if self.quorum and self._broker_url is not None:
            with Connection(self._broker_url, connect_timeout=5) as conn:
                conn.channel().queue_delete(self.queue)

    def run_calls(self, broker_url: str, n_calls: int, in_flight: int, pad: str, warmup: int) -> RunResult:
        """Make `n_calls` echo calls from `in_flight` threads, each with its own connection."""

        def factory(index: int) -> tuple[Call, Callable[[], None]]:
            return make_caller(broker_url, self.exchange, pad, self.confirm or self.tx)

        return run_threads(factory, n_calls, in_flight, warmup)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python -m benchmarks.floor serve ...`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="run one floor server process")
    srv.add_argument("--broker", required=True)
    srv.add_argument("--queue", required=True)
    srv.add_argument("--exchange", help="topic exchange (default: the queue's name)")
    srv.add_argument("--binding", default="rpc.#")
    mode = srv.add_mutually_exclusive_group()
    mode.add_argument("--confirm", action="store_true", help="confirm replies before acking requests")
    mode.add_argument("--tx", action="store_true", help="commit each reply with its ack (a transaction)")
    srv.add_argument("--quorum", action="store_true", help="a durable quorum queue (the harness deletes it)")
    args = parser.parse_args(argv)
    exchange = args.exchange or args.queue
    return serve(args.broker, args.queue, exchange, args.binding, args.confirm, args.tx, args.quorum)


if __name__ == "__main__":
    sys.exit(main())
