"""Search strategies, one per file; ``laco_core.registry`` lists them."""
