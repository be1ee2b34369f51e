"""The one exception family for errors a user can cause (bad spec, bad range, bad file…)."""


class LacoError(Exception):
    """A user-facing error: the message says what was wrong and what to do instead."""


class Cancelled(LacoError):
    """A long job stopped because its user cancelled it."""


class LimitExceeded(LacoError):
    """An input over one of the declared limits (prompt length, text size, builds…)."""
