"""Warm-ups: the dense activations a front end is about to ask for, built in the background.

The app's live preview estimates a plan from the base model's activations on the calibration
prompts and the dense next-token statistics its KL reads. Built on first use, they made the
first preview after a load far slower than the rest; a warm-up builds them on a daemon thread
right after the load, through the engine (so they are cached and counted against its memory
budget like any other cache). A preview asked meanwhile waits for them: the engine's gate on
the cache's key, then the cache's ``fill_lock``, serialise the two, so nothing is computed
twice. A warm-up is cancelled through its ``stop`` Event, at the next chunk.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..analysis.activations import reporting
from ..errors import Cancelled, LacoError
from ..loading.models import LoadedModel
from ..search.objectives import KL


@dataclass
class Warmup:
    """One warm-up under way: ``stop`` cancels it, ``ready`` is set once it has ended."""

    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def cancel(self) -> None:
        self.stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)


def warm_preview(engine, base: LoadedModel, prompts: list[str], batch_size: int = 4) -> Warmup:
    """Build, on a daemon thread, what ``engine.preview(base, prompts, …)`` reads: the dense
    activations (``engine.activations``) and the KL's dense statistics on them.

    Returns at once; the returned ``Warmup`` cancels or waits for it. A user error (e.g.
    prompts over the limits) ends it quietly: the preview reports it when asked.
    """
    warmup = Warmup()

    def chunk_done(done: int, of: int) -> None:
        if warmup.stop.is_set():
            raise Cancelled("The warm-up was cancelled.")

    def run() -> None:
        try:
            with reporting(chunk_done):
                if warmup.stop.is_set():
                    return
                cache = engine.activations(base, list(prompts), batch_size)
                KL().prepare(cache, base.model)
        except (Cancelled, LacoError) as e:
            warmup.error = e
        finally:
            warmup.ready.set()

    threading.Thread(target=run, name="laco-warmup", daemon=True).start()
    return warmup


__all__ = ["Warmup", "warm_preview"]
