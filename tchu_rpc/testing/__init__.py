"""Test your services: `TestBroker` runs workers and clients in this process, no RabbitMQ needed.

```python
from tchu_rpc.testing import TestBroker

with TestBroker() as broker:          # memory://; TestBroker("amqp://...") for RabbitMQ
    broker.worker(registry, "users")
    assert broker.client().call("rpc.users.get", {"id": 1}) == {...}
```

With pytest, the fixture `tchu_test_broker` (from the plugin `tchu_rpc.testing.plugin`, loaded
when tchu_rpc is installed) yields one and cleans up. `capture_logs()` collects tchu_rpc's log
events (dicts) while it is open, to assert on them. See docs/testing.md.
"""

from tchu_rpc.log import capture_logs
from tchu_rpc.testing.broker import TestBroker

#: The name this project's own suite knows the `tchu` fixture's factory by.
TchuFactory = TestBroker

__all__ = ["TchuFactory", "TestBroker", "capture_logs"]
