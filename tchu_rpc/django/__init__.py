"""Django: subscribers found in installed apps, a worker command, events published after commit.

Install `tchu-rpc[django]` and add `"tchu_rpc.django"` to `INSTALLED_APPS`. Then:

- each installed app's `subscribers` module (`TCHU_RPC_SUBSCRIBERS_MODULE`) is imported at start-up,
  so its `@subscribe` handlers are registered;
- `python manage.py tchu_rpc_worker --queue NAME` runs the supervised worker, with Django set up in
  every worker process and stale database connections closed around each handler;
- settings come from the `TCHU_RPC` dict in Django's settings, then `TCHU_RPC_*` variables;
- `auto_publish` (a model decorator), `EventPublishingMixin` (`tchu_rpc.django.mixins`) and
  `publish_on_commit` publish once the transaction commits, and never from one that rolls back.

Nothing in the core of tchu_rpc imports this package.
"""

from tchu_rpc.django.conf import settings_from_django
from tchu_rpc.django.payload import model_payload
from tchu_rpc.django.publishing import auto_publish, close_client, get_client, publish_on_commit

__all__ = [
    "auto_publish",
    "close_client",
    "get_client",
    "model_payload",
    "publish_on_commit",
    "settings_from_django",
]
