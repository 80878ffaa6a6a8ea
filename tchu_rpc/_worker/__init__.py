"""A delivery's way through a worker: dispatch, settle, lanes, time limits (private)."""
