"""Test-wide set-up: the tchu_rpc plugin gives the fixtures; logs go to `logging` (pytest shows them)."""
