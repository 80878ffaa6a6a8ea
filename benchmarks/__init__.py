"""Benchmark harness: tchu_rpc beside a raw-kombu floor, tchu-tchu on Celery and aio-pika's RPC pattern.

Run as `python -m benchmarks`. Modules that run inside a baseline's venv (`tchu_tchu_app`,
`tchu_tchu_driver` in the tchu-tchu venv, `aio_pika_rpc` in the aio-pika venv) import only the standard
library and `benchmarks.loadgen` and `benchmarks.procs` (both stdlib-only) from here, so this package
must stay import-free.
"""
