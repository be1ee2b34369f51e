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
# the pair goes to Python as ``evt.index == [x0, y0, x1, y1]``. A box follows a drag. Plotly's
# own drag (zoom) is off in the figure (``dragmode=False``).
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
  let el = gd.querySelector('.laco-drag-box');
  if (!a) { if (el) el.remove(); return; }
  if (!el) { el = document.createElement('div'); el.className = 'laco-drag-box'; gd.appendChild(el); }
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const xs = [a[0], b[0]].map((v) => xa.c2p(v) + xa._offset), ys = [a[1], b[1]].map((v) => ya.c2p(v) + ya._offset);
  const cw = Math.abs(xa.c2p(1) - xa.c2p(0)), ch = Math.abs(ya.c2p(1) - ya.c2p(0));
  Object.assign(el.style, {position: 'absolute', pointerEvents: 'none', border: '2px dashed #111',
    left: (Math.min(...xs) - cw / 2) + 'px', top: (Math.min(...ys) - ch / 2) + 'px',
    width: (Math.abs(xs[0] - xs[1]) + cw) + 'px', height: (Math.abs(ys[0] - ys[1]) + ch) + 'px'});
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
  gd.addEventListener('pointermove', (ev) => {
    if (!start || start.gd !== gd) return;
    const c = cell(gd, ev, true);
    if (c && (c[0] !== start.c[0] || c[1] !== start.c[1])) box(gd, start.c, c);
  });
};
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
