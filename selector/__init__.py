"""Online phase: the router artifact, per-problem decisions and the HTTP service (later issues)."""
