"""What a client keeps while its calls are in flight (private)."""
