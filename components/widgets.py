"""Custom widgets Gradio 6 lacks: a two-handle layer-range slider and a Plotly click bridge.

Both are ``gr.HTML`` subclasses whose ``js_on_load`` talks to the page (Gradio 6 has no range
slider, and ``gr.Plot`` exposes no click event; see shared/NOTES.md).
"""

from __future__ import annotations

import gradio as gr

_RANGE_TEMPLATE = """
<div class="laco-range">
  <div class="laco-range-head">
    <span class="laco-range-label">${label}</span>
    <span class="laco-range-value">layers <b>${value[0]}</b> – <b>${value[1]}</b></span>
  </div>
  <div class="laco-range-track">
    <input type="range" class="laco-lo" min="0" max="${maximum}" step="1" value="${value[0]}">
    <input type="range" class="laco-hi" min="0" max="${maximum}" step="1" value="${value[1]}">
  </div>
</div>
"""

_RANGE_CSS = """
.laco-range { padding: 6px 4px; }
.laco-range-head { display: flex; justify-content: space-between; font-size: 0.9em; margin-bottom: 4px; }
.laco-range-label { font-weight: 600; }
.laco-range-track { position: relative; height: 26px; }
.laco-range-track input[type=range] { position: absolute; left: 0; top: 4px; width: 100%;
  pointer-events: none; background: none; -webkit-appearance: none; appearance: none; margin: 0; }
.laco-range-track input[type=range]::-webkit-slider-thumb { pointer-events: auto; cursor: pointer; }
.laco-range-track input[type=range]::-moz-range-thumb { pointer-events: auto; cursor: pointer; }
.laco-range-track input.laco-lo { z-index: 2; }
.laco-range-track::before { content: ""; position: absolute; left: 0; right: 0; top: 12px; height: 4px;
  border-radius: 2px; background: var(--neutral-300, #ccc); }
"""

# On release of either handle: order the pair, publish it as the value and fire `change`.
_RANGE_JS = """
const read = () => {
  const lo = element.querySelector('.laco-lo'), hi = element.querySelector('.laco-hi');
  let a = parseInt(lo.value), b = parseInt(hi.value);
  if (a > b) { [a, b] = [b, a]; }
  props.value = [a, b];
  trigger('change');
};
element.addEventListener('change', (e) => {
  if (e.target && e.target.matches('input[type=range]')) read();
});
element.addEventListener('input', (e) => {
  if (!e.target || !e.target.matches('input[type=range]')) return;
  const lo = element.querySelector('.laco-lo'), hi = element.querySelector('.laco-hi');
  let a = parseInt(lo.value), b = parseInt(hi.value);
  if (a > b) { [a, b] = [b, a]; }
  const out = element.querySelector('.laco-range-value');
  if (out) out.innerHTML = `layers <b>${a}</b> – <b>${b}</b>`;
});
"""


class RangeSlider(gr.HTML):
    """Two handles on one track; the value is ``[lo, hi]`` (inclusive layer indices)."""

    def __init__(
        self,
        value: tuple[int, int] | list[int] = (0, 1),
        maximum: int = 29,
        label: str = "Layer range",
        **kwargs,
    ):
        super().__init__(
            value=list(value),
            html_template=_RANGE_TEMPLATE,
            css_template=_RANGE_CSS,
            js_on_load=_RANGE_JS,
            maximum=maximum,
            label=label,
            **kwargs,
        )

    def api_info(self) -> dict:
        return {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}


# Hooks `plotly_click` on every Plotly div inside the listed containers. Gradio rebuilds the div
# on every figure update, so a MutationObserver re-hooks new ones; `_lacoHooked` prevents doubles.
_BRIDGE_JS = """
const targets = JSON.parse(element.querySelector('.laco-bridge').dataset.targets);
const hook = () => {
  for (const id of targets) {
    const host = document.getElementById(id);
    if (!host) continue;
    host.querySelectorAll('.js-plotly-plot').forEach((div) => {
      if (div._lacoHooked || !div.on) return;
      div._lacoHooked = true;
      div.on('plotly_click', (ev) => {
        const p = ev && ev.points && ev.points[0];
        if (!p) return;
        trigger('select', {index: [p.x, p.y], value: p.z === undefined ? p.y : p.z, plot: id});
      });
    });
  }
};
new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
setInterval(hook, 1000);
hook();
"""


def _invisible(html_template: str, js: str) -> dict:
    """``gr.HTML`` settings of an element that only runs ``js`` (``laco-hidden`` hides it)."""
    return dict(value="", html_template=html_template, js_on_load=js, elem_classes=["laco-hidden"])


class ClickBridge(gr.HTML):
    """Invisible element that turns clicks on Plotly figures into its ``select`` event.

    Args:
        targets: ``elem_id``s of the ``gr.Plot`` components to listen to. In the handler,
            ``evt: gr.SelectData`` carries ``evt.index == [x, y]`` of the clicked point and
            ``evt.value`` its z (or y); ``evt._data["plot"]`` names the plot clicked.
    """

    def __init__(self, targets: list[str], **kwargs):
        import json

        template = f"<div class='laco-bridge' data-targets='{json.dumps(targets)}'></div>"
        super().__init__(**_invisible(template, _BRIDGE_JS), **kwargs)


# Clicks and drags on one Plotly heatmap, in data coordinates: a press and a release each give
# the cell under the pointer (axes' own pixel-to-data maps, so it works whatever the size);
# the pair goes to Python as ``evt.index == [x0, y0, x1, y1]``. While dragging, a rubber band
# shows the square the release will add, with its range; it follows the pointer on ``window``
# (Plotly covers the page with its own drag layer once a press starts) and lives in the
# figure's positioned ``.svg-container``. Plotly's own drag (zoom) is off (``dragmode=False``).
_PLAN_JS = """
const id = element.querySelector('.laco-plan-bridge').dataset.target;
let start = null;
const cell = (gd, ev, clamp) => {
  const fl = gd._fullLayout; if (!fl || !fl.xaxis || !fl.yaxis) return null;
  const r = gd.getBoundingClientRect(), xa = fl.xaxis, ya = fl.yaxis;
  let px = ev.clientX - r.left - xa._offset, py = ev.clientY - r.top - ya._offset;
  const inside = px >= 0 && py >= 0 && px <= xa._length && py <= ya._length;
  if (!inside && !clamp) return null;
  px = Math.max(0, Math.min(xa._length, px)); py = Math.max(0, Math.min(ya._length, py));
  return [Math.round(xa.p2c(px)), Math.round(ya.p2c(py))];
};
const box = (gd, a, b) => {
  const host = gd.querySelector('.svg-container') || gd;
  let el = host.querySelector('.laco-drag-box');
  if (!a) { if (el) el.remove(); return; }
  if (!el) { el = document.createElement('div'); el.className = 'laco-drag-box'; host.appendChild(el); }
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const lo = Math.min(a[0], a[1], b[0], b[1]), hi = Math.max(a[0], a[1], b[0], b[1]);
  const x0 = xa.c2p(lo - 0.5) + xa._offset, x1 = xa.c2p(hi + 0.5) + xa._offset;
  const y0 = ya.c2p(lo - 0.5) + ya._offset, y1 = ya.c2p(hi + 0.5) + ya._offset;
  Object.assign(el.style, {position: 'absolute', pointerEvents: 'none', zIndex: 10,
    border: '2px dashed #fff', outline: '1px solid #111', background: 'rgba(255,255,255,0.18)',
    left: Math.min(x0, x1) + 'px', top: Math.min(y0, y1) + 'px',
    width: Math.abs(x1 - x0) + 'px', height: Math.abs(y1 - y0) + 'px',
    color: '#111', font: '600 12px sans-serif'});
  el.innerHTML = `<span style="position:absolute;bottom:100%;left:-2px;white-space:nowrap;
    background:#fff;border:1px solid #111;padding:0 4px;border-radius:3px">${lo}–${hi}</span>`;
  if (window.Plotly && window.Plotly.Fx) window.Plotly.Fx.unhover(gd);  // the band, not a tooltip
};
const hook = () => {
  const host = document.getElementById(id);
  const gd = host && host.querySelector('.js-plotly-plot');
  if (!gd || gd._lacoPlan) return;
  gd._lacoPlan = true;
  gd.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0 || ev.target.closest('.modebar')) return;
    const c = cell(gd, ev, false);
    if (c) start = {gd, c, t: performance.now()};
  }, true);
};
window.addEventListener('pointermove', (ev) => {
  if (!start) return;
  const c = cell(start.gd, ev, true);
  if (c && (c[0] !== start.c[0] || c[1] !== start.c[1])) box(start.gd, start.c, c);
}, true);
window.addEventListener('pointerup', (ev) => {
  if (!start) return;
  const s = start; start = null;
  box(s.gd, null);
  const c = cell(s.gd, ev, true) || s.c;
  window._lacoPlanClickAt = performance.now();
  trigger('select', {index: [s.c[0], s.c[1], c[0], c[1]], value: 0, plot: id});
});
new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
hook();
"""


class PlanBridge(gr.HTML):
    """Invisible element turning a click or a drag on one heatmap into its ``select`` event.

    Args:
        target: ``elem_id`` of the ``gr.Plot``. In the handler, ``evt.index`` is
            ``[x0, y0, x1, y1]``: the cells where the press and the release happened.
    """

    def __init__(self, target: str, **kwargs):
        template = f"<div class='laco-plan-bridge' data-target='{target}'></div>"
        super().__init__(**_invisible(template, _PLAN_JS), **kwargs)


# A link made in the browser from its own address (right behind any proxy) and the query the
# server sends (``?plan=…``, ``?recipe=…``); any other value is a note shown instead, and an
# empty one shows nothing (a result's link before there is a result).
_SHARE_TEMPLATE = """${value && value.startsWith('?')
  ? `<div class="laco-share"><small>${what}</small>
     <a class="laco-share-url" href="${location.origin}${location.pathname}${value.replaceAll('&', '&amp;')}"
        target="_blank" rel="noopener">${location.origin}${location.pathname}${value.replaceAll('&', '&amp;')}</a>
     <button type="button" class="laco-copy">Copy link</button></div>`
  : value ? `<small class="laco-share-note">${value}</small>` : ''}"""

_SHARE_JS = """
element.addEventListener('click', async (ev) => {
  const b = ev.target.closest('.laco-copy'), a = element.querySelector('.laco-share-url');
  if (!b || !a) return;
  try { await navigator.clipboard.writeText(a.href); } catch (e) {
    const t = document.createElement('textarea'); t.value = a.href; document.body.appendChild(t);
    t.select(); document.execCommand('copy'); t.remove();
  }
  b.textContent = 'Copied ✓';
  setTimeout(() => { b.textContent = 'Copy link'; }, 1500);
});
"""

# the note and the link take the same room (the URL on one line, cut with an ellipsis: the
# link and the copy button hold it whole), so nothing below moves when a link appears
_SHARE_CSS = """
.laco-share { display: grid; grid-template-columns: minmax(0, 1fr) auto; column-gap: 8px;
  align-items: center; min-height: 46px; }
.laco-share > small { grid-column: 1 / -1; white-space: nowrap; }
.laco-share-note { display: flex; align-items: center; min-height: 46px; }
.laco-share-url { font-family: var(--font-mono); font-size: 0.8em; white-space: nowrap; justify-self: start;
  max-width: 100%;
  overflow: hidden; text-overflow: ellipsis; }
.laco-copy { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 1px 10px;
  background: var(--button-secondary-background-fill); font-size: 0.85em; cursor: pointer; }
"""


class ShareLink(gr.HTML):
    """A full link to the app with a query (the value, ``?plan=…``) and a copy button; a value
    not starting with ``?`` is a note shown in its place (no link, no button).

    Args:
        what: The words before the link ("Link to this plan:").
    """

    def __init__(self, value: str = "", what: str = "Link:", **kwargs):
        super().__init__(
            value=value,
            html_template=_SHARE_TEMPLATE,
            css_template=_SHARE_CSS,
            js_on_load=_SHARE_JS,
            what=what,
            **kwargs,
        )


_CHIPS_JS = """
element.addEventListener('click', (ev) => {
  const b = ev.target.closest('button[data-range]');
  if (b) trigger('select', {index: 0, value: b.dataset.range});
});
"""


class PlanChips(gr.HTML):
    """The plan's ranges as chips; a click on a chip's × fires ``select`` with ``evt.value``
    = the range (``"16-18"``). The value is the chips' HTML (``plan_map.chips_html``)."""

    def __init__(self, value: str = "", **kwargs):
        super().__init__(value=value, js_on_load=_CHIPS_JS, **kwargs)


# Plotly sizes a figure drawn in a hidden tab as zero wide; resize every plot whenever its
# container's width changes (tab shown, window resized, one-column layout).
_RESIZE_JS = """
const seen = new WeakSet();
const ro = new ResizeObserver((entries) => {
  for (const e of entries) {
    const gd = e.target._lacoPlot, w = Math.round(e.contentRect.width);
    if (gd && w > 0 && gd._lacoW !== w && window.Plotly && gd._fullLayout) {
      gd._lacoW = w;
      window.Plotly.Plots.resize(gd);
    }
  }
});
const hook = () => document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
  const box = gd.parentElement;
  if (box && !seen.has(gd)) { seen.add(gd); box._lacoPlot = gd; ro.observe(box); }
});
new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
hook();
"""


class PlotResizer(gr.HTML):
    """Invisible element that keeps every Plotly figure sized to its container."""

    def __init__(self, **kwargs):
        super().__init__(**_invisible("<div></div>", _RESIZE_JS), **kwargs)
