"""Step kinds, one per file; ``laco_core.registry`` lists them."""

from .base import StepContext

__all__ = ["StepContext"]
