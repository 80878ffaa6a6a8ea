"""The connection's I/O thread and what works below kombu (private)."""
