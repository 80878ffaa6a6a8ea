"""Optional faces of tchu_rpc: each is imported only by whoever uses it."""
