"""A service's dead-letter queue: read its letters, and move them back once each (private)."""
