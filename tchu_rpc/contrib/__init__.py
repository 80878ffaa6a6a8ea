"""Optional integrations, each behind an extra and imported only by those who use it."""
