"""The test project's manage.py (tests run `manage.py tchu_rpc_worker` as a subprocess)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tchu_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
