"""Long jobs in the app: a worker thread, a live progress bar (elapsed, ETA), streamed log rows
and a Stop button that stops the engine's work.

A handler starts a :class:`Job` with the work as a function of the job (which it reports to)
and iterates :meth:`Job.ticks`. Every job holds one of its session's long-job slots from
``start`` to its end (``Engine.job``, keyed by the job's stop Event: a second long job of the
session is refused before it starts, and the engine's work inside the job nests in its slot): it wakes at least every ``TICK`` seconds, so the elapsed time
stays live and a closed generator (Stop, a closed tab) is noticed at once; Gradio can only
close a generator between two yields. Closing the handler's generator, or a Stop click
(:func:`stop`), sets the job's stop Event, which the engine checks (``engine.run(stop=…)``).

The only state kept here is which jobs are running, by (session token, panel), so that a
Stop button reaches them: no models, no results.
"""

from __future__ import annotations

import html
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gradio as gr

from laco_core.errors import Cancelled
from laco_core.runtime.engine import Engine

from .common import LONG_GROUP

TICK = 0.5  # seconds between two updates of a job that reports nothing
_RUNNING: dict[tuple[str, str], set[Job]] = {}
_LOCK = threading.Lock()


@dataclass(eq=False)
class Job:
    """One long piece of work running on its own thread.

    Attributes:
        owner: The session token that started it.
        panel: Which panel it belongs to (one Stop button per panel).
        stop: Set to cancel; handed to the engine.
        fraction: Share done in [0, 1] as last reported (None: unknown).
        desc: What it is doing, as last reported.
        events: Log rows reported so far (dicts), oldest first.
    """

    owner: str
    panel: str
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    fraction: float | None = None
    desc: str = "Starting…"
    events: list[dict] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    ended: float | None = None
    counter: Units | None = None  # the units of work of the current phase, when counted
    # (stage, units done, total, ETA) at each count: what the bar said, for tests and logs
    history: list[tuple[str, int, int | None, float | None]] = field(default_factory=list)
    _rows: dict = field(default_factory=dict, repr=False)  # row key -> index in events
    _last: float = field(default_factory=time.monotonic, repr=False)  # the latest report
    _wake: queue.Queue = field(default_factory=queue.Queue, repr=False)

    # ---- called by the work (any thread) -----------------------------------------------------
    def event(self, row: dict, key: Any = None) -> None:
        """A log row (e.g. a search candidate); a row with the ``key`` of an earlier one
        replaces it in place (a candidate shown as scored, then decided)."""
        if key is not None and key in self._rows:
            self.events[self._rows[key]] = dict(row)
        else:
            if key is not None:
                self._rows[key] = len(self.events)
            self.events.append(dict(row))
        self._wake.put(1)

    def progress(self, fraction: float | None, desc: str | None = None) -> None:
        """Share done and what is being done; raises ``Cancelled`` once stopped, so work that
        reports progress but checks no stop Event still ends at its next report. A share
        ends the counting of units (:meth:`count`)."""
        if fraction is not None:
            self.fraction = max(0.0, min(1.0, float(fraction)))
            self.counter = None
        if desc:
            self.desc = desc
        self._wake.put(1)
        if self.stop.is_set():
            raise Cancelled("Stopped.")

    def count(
        self,
        done: int,
        total: int | None,
        unit: str,
        desc: str | None = None,
        stage: str = "",
        bound: bool = False,
    ) -> None:
        """Units of work done of ``total`` (None: not known yet). A new ``unit`` starts a new
        phase, whose ETA comes from its own measured rate; a total that grows within a phase
        is said on the bar. ``bound``: the total is an upper bound (work may end sooner).
        Raises ``Cancelled`` once stopped, as :meth:`progress` does."""
        now = time.monotonic()
        c = self.counter
        if c is None or c.unit != unit or done < c.done:
            c = self.counter = Units(unit, now if done == 0 else self._last)
        elif total is not None and c.total is not None and total > c.total:
            c.grew_from = c.grew_from or c.total
        if done > c.done:
            c.last = now
        c.done, c.total, c.bound = done, total, bound
        self.fraction = min(1.0, done / total) if total else None
        self._last = now
        if desc:
            self.desc = desc
        self.history.append((stage, done, total, self.eta()))
        self.progress(None)

    # ---- called by the handler ----------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def eta(self) -> float | None:
        """Seconds left: while units are counted, the phase's measured seconds per unit times
        the units left, counting down until the next unit re-estimates it; otherwise
        extrapolated from the share done. None while too early to tell."""
        if self.done:
            return None
        c = self.counter
        if c is not None:
            return c.eta(time.monotonic())
        f = self.fraction
        if f is None or f < 0.03 or self.elapsed < 1.0:
            return None
        return self.elapsed * (1 - f) / f

    def ticks(self, every: float = TICK) -> Iterator[None]:
        """Wake on every report and at least every ``every`` seconds until the work ends."""
        while not self.done:
            try:
                self._wake.get(timeout=every)
                while not self._wake.empty():  # coalesce a burst of reports into one update
                    self._wake.get_nowait()
            except queue.Empty:
                pass
            yield

    def close(self) -> None:
        """Stop the work if it is still running, and forget the job."""
        if not self.done:
            self.stop.set()
        with _LOCK:
            jobs = _RUNNING.get((self.owner, self.panel))
            if jobs is not None:
                jobs.discard(self)
                if not jobs:
                    _RUNNING.pop((self.owner, self.panel), None)

    def outcome(self) -> Any:
        """The work's return value, or its exception raised here."""
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class Units:
    """The counted units of one phase of a job (chunks recorded, candidates scored…)."""

    unit: str
    since: float  # when the phase began
    done: int = 0
    total: int | None = None
    last: float | None = None  # when the latest unit was done
    bound: bool = False
    grew_from: int | None = None  # the first total of the phase, once it grew past it

    def eta(self, now: float) -> float | None:
        """Seconds per unit so far × units left, less the time since the latest unit."""
        if self.total is None or self.done <= 0 or self.last is None:
            return None
        rate = (self.last - self.since) / self.done
        return max(0.0, rate * (self.total - self.done) - (now - self.last))

    def text(self) -> str:
        """``12 of ≤ 56 candidates (the total grew from 28)``."""
        if self.total is None:
            return f"{self.done} {self.unit}" if self.done else ""
        of = f"≤ {self.total}" if self.bound else str(self.total)
        grew = f" (the total grew from {self.grew_from})" if self.grew_from else ""
        return f"{self.done} of {of} {self.unit}{grew}"


def start(engine: Engine, owner: str, panel: str, work: Callable[[Job], Any]) -> Job:
    """Run ``work(job)`` on a daemon thread in one of ``owner``'s long-job slots of
    ``engine`` (``Engine.job``, held until the work ends); the caller iterates ``job.ticks()``
    and passes ``job.stop`` to the engine's work.

    Raises:
        LimitExceeded: when the session already runs its long jobs (nothing started).
    """
    job = Job(owner, panel)
    slot = engine.job(owner, job.stop)
    with _LOCK:
        _RUNNING.setdefault((owner, panel), set()).add(job)

    def run() -> None:
        try:
            job.result = work(job)
        except BaseException as e:  # handed to the handler thread by ``outcome``
            job.error = e
        finally:
            slot.release()
            job.ended = time.monotonic()
            job.done = True
            job._wake.put(1)

    threading.Thread(target=run, name=f"laco-{panel}", daemon=True).start()
    return job


def stop(owner: str, panel: str) -> list[Job]:
    """Set the stop Event of this session's running jobs in ``panel``; returns them."""
    with _LOCK:
        jobs = list(_RUNNING.get((owner, panel), ()))
    for j in jobs:
        j.stop.set()
    return jobs


STOPPING = "stopping…"
STOP_WAIT = 60.0  # seconds a Stop click waits for its jobs to end before it says so anyway


def stop_panel(panel: str, session) -> str:
    """Stop the panel's running jobs of this session (the engine's stop Event) at once; the
    bar that says so."""
    return stopped_html(stop(session.token(), panel))


def stop_clicked(panel: str, label: str, session) -> Iterator[tuple]:
    """A Stop button's handler: the panel's running jobs of this session stop (the engine's
    stop Event); the button reads "stopping…" until they have ended, then rests disabled.

    Yields ``(bar, button)``.
    """
    jobs = stop(session.token(), panel)
    if not jobs:
        yield bar_html(None), gr.Button(label, interactive=False)
        return
    yield stopping_html(jobs), gr.Button(STOPPING, interactive=False)
    deadline = time.monotonic() + STOP_WAIT
    while not all(j.done for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield stopped_html(jobs), gr.Button(label, interactive=False)


def stop_state(bar: str) -> gr.Button:
    """The Stop button follows its bar: enabled while a job runs there, disabled otherwise."""
    return gr.Button(interactive="data-state='running'" in (bar or ""))


def wire_stop(button, panel: str, session, bar, events: Sequence) -> None:
    """Wire a Stop button: disabled while its bar shows no running job; a click stops the
    panel's jobs and cancels the listeners ``events``, never queued behind them and never
    part of the scripted API, and the button reads "stopping…" until they have ended."""
    label = button.value
    button.interactive = False  # nothing runs when the page opens
    button.click(
        partial(stop_clicked, panel, label),
        session,
        [bar, button],
        cancels=list(events),
        api_visibility="private",
        concurrency_limit=None,
        show_progress="hidden",
    )
    bar.change(stop_state, bar, button, api_visibility="private", queue=False)


def wire_long(
    button,
    fn: Callable,
    inputs: list,
    outputs: list,
    stop_button,
    panel: str,
    session,
    bar,
    api_name: str | None = None,
):
    """Wire a long job's button (run in the long-jobs queue, ``bar`` its only progress, scripted
    only under ``api_name``) and its Stop button (:func:`wire_stop`); the click's event."""
    exposed = {"api_name": api_name} if api_name else {"api_visibility": "private"}
    event = button.click(
        fn,
        inputs,
        outputs,
        **exposed,
        concurrency_id=LONG_GROUP,
        show_progress="hidden",
    )
    wire_stop(stop_button, panel, session, bar, [event])
    return event


def running(owner: str, panel: str) -> bool:
    with _LOCK:
        return bool(_RUNNING.get((owner, panel)))


# ---- what the user sees ----------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``7 s``, ``2 min 05 s``, ``1 h 03 min``."""
    if seconds is None:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def bar_html(job: Job | None = None, state: str | None = None, note: str = "") -> str:
    """The progress bar of ``job``: share done, what it does, elapsed time and ETA.

    Args:
        job: The job (None: an empty, idle bar that still takes its place on the page).
        state: ``running`` (default while the job runs), ``done``, ``stopped`` or ``failed``.
        note: Replaces the job's own description.
    """
    if job is None:
        return (
            "<div class='laco-job' data-state='idle'><div class='laco-job-text'>&nbsp;</div></div>"
        )
    state = state or ("done" if job.done and job.error is None else "running")
    f = 1.0 if state == "done" else job.fraction
    width = "100%" if f is None else f"{100 * f:.1f}%"
    known = "" if f is None else f"<b>{100 * f:.0f} %</b> · "
    eta = job.eta()
    units = job.counter.text() if job.counter is not None and state == "running" else ""
    parts = [html.escape(note or job.desc)]
    parts += [html.escape(units)] if units else []
    parts.append(f"elapsed {duration(job.elapsed)}")
    if state == "running":
        what = f" for the {job.counter.unit}" if job.counter and job.counter.unit else ""
        parts.append(f"ETA {duration(eta)}{what}" if eta is not None else "ETA –")
    fill_class = "laco-job-fill" + (" laco-job-indeterminate" if f is None else "")
    return (
        f"<div class='laco-job' data-state='{state}'>"
        f"<div class='laco-job-track'><div class='{fill_class}' style='width:{width}'></div></div>"
        f"<div class='laco-job-text'>{known}{' · '.join(parts)}</div></div>"
    )


def stopping_html(jobs: Sequence[Job]) -> str:
    """The bar between a Stop click and the end of its jobs."""
    j = max(jobs, key=lambda x: x.started)
    return bar_html(j, "stopping", "Stopping…")


def stopped_html(jobs: Sequence[Job]) -> str:
    """The bar after a Stop click, once its jobs have ended."""
    if not jobs:
        return bar_html(None)
    j = max(jobs, key=lambda x: x.started)
    return bar_html(j, "stopped", "Stopped — nothing was added to your session.")


Column = tuple[str, str, Callable[[Any], str] | None]  # (key, header, format)


def log_html(rows: Sequence[dict], columns: Sequence[Column], empty: str = "") -> str:
    """A log table, newest row last, kept scrolled to the bottom; accepted rows highlighted."""
    if not rows:
        return f"<div class='laco-log laco-log-empty'>{html.escape(empty) or '&nbsp;'}</div>"
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for r in rows:
        cls = " class='laco-accepted'" if r.get("accepted") else ""
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            text = "" if v is None else (fmt(v) if fmt else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        "<div class='laco-log'><div><table><thead><tr>"
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></div>"
    )
