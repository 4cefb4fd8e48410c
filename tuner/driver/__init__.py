"""The Ray Tune driver: a sweep of trials, its search, scheduler, confirmation and fault handling (docs/architecture.md)."""
