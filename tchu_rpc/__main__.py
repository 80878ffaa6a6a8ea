"""`python -m tchu_rpc` runs the `tchu-rpc` command."""

import sys

from tchu_rpc.cli import main

sys.exit(main())
