"""Rate limits and token budgets: admission, the limiter, its Redis and in-process backends."""
