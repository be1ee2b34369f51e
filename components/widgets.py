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


class ClickBridge(gr.HTML):
    """Invisible element that turns clicks on Plotly figures into its ``select`` event.

    Args:
        targets: ``elem_id``s of the ``gr.Plot`` components to listen to. In the handler,
            ``evt: gr.SelectData`` carries ``evt.index == [x, y]`` of the clicked point and
            ``evt.value`` its z (or y); ``evt._data["plot"]`` names the plot clicked.
    """

    def __init__(self, targets: list[str], **kwargs):
        import json

        super().__init__(
            value="",
            html_template=f"<div class='laco-bridge' data-targets='{json.dumps(targets)}'></div>",
            js_on_load=_BRIDGE_JS,
            elem_classes=["laco-hidden"],
            **kwargs,
        )
