"""Benchmark harness: tchu_rpc beside a raw-kombu floor and tchu-tchu on Celery (`python -m benchmarks`).

Modules that run inside the tchu-tchu venv (`tchu_tchu_app`, `tchu_tchu_driver`) import only the
standard library and `benchmarks.loadgen` from here, so this package must stay import-free.
"""
