"""Publish and call through a real tchu-tchu (run only by the interop tests, inside a test venv).

    python tchu_tchu_script.py '{"broker": URL, "exchange": NAME, "prefix": P, "ops": [[op, topic, data]]}'

`op` is `publish` or `call` (`TchuClient` on a Celery app with the rpc:// result backend) or
`serverless` (3.x `ServerlessProducer`, Celery's protocol v1). Prints one JSON line per op:
`{"ok": result}` or `{"error": type name, "message": str}`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from tchu_tchu import TchuClient


def main() -> int:
    spec = json.loads(sys.argv[1])
    broker, exchange, prefix = spec["broker"], spec["exchange"], spec["prefix"]
    app = Celery(prefix, broker=broker, backend="rpc://")
    # Celery declares its default queue on every send: a private one that expires unused.
    own = Exchange(f"{prefix}.celery", "direct", durable=False, auto_delete=True)
    default = Queue(f"{prefix}.celery", own, routing_key="none", durable=False, expires=30)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_queues=[default],
        task_default_queue=default.name,
        # What `setup_celery_queue` arranges on a tchu-tchu service: the dispatcher task goes to the
        # events exchange, with the topic as routing key.
        task_routes={"tchu_tchu.dispatch_event": {"exchange": exchange, "exchange_type": "topic"}},
    )
    client = TchuClient(celery_app=app)
    for op, topic, data in spec["ops"]:
        out: dict[str, Any]
        try:
            if op == "call":
                out = {"ok": client.call(topic, data, timeout=10)}
            elif op == "publish":
                out = {"ok": client.publish(topic, data)}
            else:
                from tchu_tchu.serverless_producer import ServerlessProducer

                out = {"ok": ServerlessProducer(broker, exchange_name=exchange).publish(topic, data)}
        except Exception as exc:
            out = {"error": type(exc).__name__, "message": str(exc)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
