"""The one exception type for errors a user can cause (bad spec, bad range, bad file)."""


class LacoError(Exception):
    """A user-facing error: the message says what was wrong and what to do instead."""
