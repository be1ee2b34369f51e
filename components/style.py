"""The workbench's CSS: progress bars, logs, reserved space for messages, responsive layout."""

from __future__ import annotations

CSS = """
/* ---- long jobs: a bar with elapsed time and ETA, and a live log --------------------------- */
.laco-job { min-height: 2.6em; }
.laco-job-track { height: 8px; border-radius: 4px; background: var(--neutral-200, #e5e7eb);
  overflow: hidden; margin: 4px 0; }
.laco-job[data-state='idle'] .laco-job-track { visibility: hidden; }
.laco-job-fill { height: 100%; background: var(--color-accent, #6366f1); transition: width .3s; }
.laco-job[data-state='done'] .laco-job-fill { background: #22a06b; }
.laco-job[data-state='stopped'] .laco-job-fill, .laco-job[data-state='stopping'] .laco-job-fill { background: #b0b7c3; }
.laco-job[data-state='failed'] .laco-job-fill { background: #d1435b; }
.laco-job-indeterminate { background: repeating-linear-gradient(45deg, var(--color-accent, #6366f1) 0 10px,
  #a5b4fc 10px 20px) !important; animation: laco-stripes 1s linear infinite; background-size: 28px 28px; }
@keyframes laco-stripes { from { background-position: 0 0; } to { background-position: 28px 0; } }
.laco-job-text { font-size: 0.88em; color: var(--body-text-color-subdued, #555); }
.laco-log { max-height: 260px; overflow-y: auto; display: flex; flex-direction: column-reverse;
  border: 1px solid var(--border-color-primary); border-radius: 6px; font-size: 0.85em; }
.laco-log-empty { min-height: 2em; border-style: dashed; padding: 4px 8px; }
.laco-log table { width: 100%; border-collapse: collapse; }
.laco-log th { position: sticky; top: 0; background: var(--background-fill-secondary); text-align: left; }
.laco-log th, .laco-log td { padding: 2px 8px; border-bottom: 1px solid var(--border-color-primary);
  font-variant-numeric: tabular-nums; }
.laco-log tr.laco-accepted td { background: #d9f7e5; font-weight: 600; color: #0f5132; }

/* ---- messages take their room before they appear: nothing below them moves ---------------- */
#plan-msg, #sim-hint { min-height: 1.8em; }
#plan-share { min-height: 3.2em; }  /* a long plan's link wraps to two lines */
#plan-msg p, #sim-hint p, #plan-share p { margin: 0; }
#preview { min-height: 17em; }
#t-warning { min-height: 3.2em; }
.laco-msg-error { color: #b42318; font-weight: 600; }
.laco-msg-ok { color: #0f5132; }

/* ---- the plan as chips with a one-click × ---------------------------------------------------- */
.laco-chips { display: flex; flex-wrap: wrap; gap: 6px; min-height: 2.1em; align-items: center; }
.laco-chip { display: inline-flex; align-items: center; gap: 4px; padding: 2px 4px 2px 10px;
  border-radius: 14px; border: 2px solid var(--chip-colour, #e4572e); font-size: 0.9em;
  background: var(--background-fill-secondary); }
.laco-chip small { color: var(--body-text-color-subdued, #555); }
.laco-chip button { border: none; background: none; cursor: pointer; font-size: 1.1em; line-height: 1;
  padding: 0 4px; color: var(--body-text-color-subdued, #555); }
.laco-chip button:hover { color: #b42318; }
.laco-chips-empty { color: var(--body-text-color-subdued, #777); font-size: 0.9em; }

/* ---- per-token KL view ----------------------------------------------------------------------- */
.laco-tokens { line-height: 1.9; white-space: pre-wrap; font-size: 0.95em; padding: 8px 10px;
  border: 1px solid var(--border-color-primary); border-radius: 8px; }
.laco-tok { border-radius: 3px; padding: 1px 0; cursor: help; color: #111; }
.laco-legend { font-size: 0.85em; display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: center;
  margin-top: 4px; }
.laco-legend span.sw { display: inline-block; width: 60px; height: 10px; border-radius: 3px;
  background: linear-gradient(90deg, rgb(255,255,255), rgb(255,200,120), rgb(230,60,60)); }

/* ---- tables: headers break between words only; a wide table scrolls, its edge shaded ------- */
#eval-table th, #eval-table th * { word-break: keep-all !important; overflow-wrap: normal !important;
  hyphens: none !important; }
#eval-table .table-wrap, #eval-table [class*="table-wrap"] { overflow-x: auto !important;
  background: linear-gradient(to left, rgba(0,0,0,.12), rgba(0,0,0,0) 14px) right / 14px 100%
  no-repeat scroll; }

/* ---- the session uploader: its label and drop text both in view ------------------------------ */
#work-files { min-height: 132px; }
#work-files .wrap { padding-top: 1.6em; }

/* ---- compare: the answers of up to four models ----------------------------------------------- */
.laco-answer-stats { min-height: 2.6em; }

/* ---- responsive: one column below ~900 px ---------------------------------------------------- */
@media (max-width: 900px) {
  .laco-row { flex-direction: column !important; flex-wrap: nowrap !important; }
  .laco-row > * { width: 100% !important; max-width: 100% !important; min-width: 0 !important;
    flex: 1 1 auto !important; }
}
"""
