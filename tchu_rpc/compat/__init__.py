"""tchu-tchu's API on tchu_rpc's engine: a service migrates by changing its imports.

```python
from tchu_rpc.compat import TchuClient, TchuEvent, TchuRPCException, subscribe   # was: tchu_tchu
```

Where tchu-tchu was wrong this is right, and `docs/migrating-from-tchu-tchu.md` says where:
RabbitMQ's topic matching (`*` one word, `#` zero or more), `NoRoute` at once for a call nobody
serves, a timeout that is the builtin `TimeoutError`, and context that follows the request.
Celery's parts (`create_topic_dispatcher`, `setup_celery_queue`) raise `ConfigError` naming what
replaces them.
"""

from tchu_rpc.compat.client import TchuClient, default_client, set_client_factory, set_default_client
from tchu_rpc.compat.errors import (
    ConnectionError,
    PublishError,
    SerializationError,
    SubscriptionError,
    TchuError,
    TchuRPCException,
    TimeoutError,
)
from tchu_rpc.compat.events import TchuEvent
from tchu_rpc.compat.subscriber import (
    create_topic_dispatcher,
    get_subscribed_routing_keys,
    registering_on,
    setup_celery_queue,
    subscribe,
)

__all__ = [
    "ConnectionError",
    "PublishError",
    "SerializationError",
    "SubscriptionError",
    "TchuClient",
    "TchuError",
    "TchuEvent",
    "TchuRPCException",
    "TimeoutError",
    "create_topic_dispatcher",
    "default_client",
    "get_subscribed_routing_keys",
    "registering_on",
    "set_client_factory",
    "set_default_client",
    "setup_celery_queue",
    "subscribe",
]
