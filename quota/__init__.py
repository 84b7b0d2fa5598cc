"""Per-tenant rate limits, concurrent-stream limits and daily budgets, in one process or Redis."""
