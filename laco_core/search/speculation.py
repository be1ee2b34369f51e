"""Speculative scoring: futures that run later, now, or not at all."""

from __future__ import annotations

from collections.abc import Callable


class Speculation(Exception):
    """A speculative evaluation stopped because an earlier candidate was accepted."""


class Lazy:
    """A future that runs its call when asked for the result (one worker: no speculation)."""

    def __init__(self, fn: Callable, *args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


class Done:
    """A future whose result is already known."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value
