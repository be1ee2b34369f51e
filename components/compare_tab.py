"""Compare tab: the original and a collapsed model answer the same prompt side by side."""

from __future__ import annotations

import html
from functools import partial

import gradio as gr

from laco_core.engine import Engine
from laco_core.generate import DecodeSettings, first_divergence, stream_pair

from .common import SHORT_GROUP, build_choices, gpu, model_of
from .state import Session

EXAMPLES = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "List three uses of a paperclip.",
    "What is 12 times 7?",
]


def panel_html(text: str, diverge_at: int | None = None, prefix: str | None = None) -> str:
    """Escaped answer; from the first diverging token on, highlighted."""
    if diverge_at is None or prefix is None or not text.startswith(prefix):
        return f"<div class='laco-answer'>{html.escape(text) or '&nbsp;'}</div>"
    same, rest = text[: len(prefix)], text[len(prefix) :]
    return (
        f"<div class='laco-answer'>{html.escape(same)}<mark class='laco-diverge' "
        f"title='first token that differs from the original'>{html.escape(rest)}</mark></div>"
    )


def stats_md(st, label: str) -> str:
    ttft = f"{st.first_token_latency_s * 1000:.0f} ms" if st.first_token_latency_s else "–"
    status = "done" if st.done else "streaming…"
    return (
        f"<small>**{label}** · {len(st.token_ids)} tokens · **{st.tokens_per_s:.1f} tok/s** · "
        f"first token {ttft} · {status}</small>"
    )


@gpu
def compare(
    engine: Engine,
    session: Session,
    did: str,
    prompt: str,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int,
    chat: bool,
    repetition_penalty: float,
):
    """Stream both models token by token into two panels; mark the first divergence.

    The build's own base model and tokenizer are used; no lock is held while streaming, so
    an abandoned stream (a cancel, a closed tab) leaves nothing behind.
    """
    did, model, base = model_of(engine, session, did)
    settings = DecodeSettings(
        int(max_new_tokens),
        bool(do_sample),
        float(temperature),
        float(top_p),
        int(top_k),
        int(seed),
        bool(chat),
        float(repetition_penalty),
    )
    tok = base.tokenizer
    engine.limits.check("new_tokens", settings.max_new_tokens, "Max new tokens")
    engine.limits.check_prompts(tok, [prompt or ""], "Compare")
    for a, b in stream_pair(base.model, model, tok, prompt or "", settings):
        k = first_divergence(a.token_ids, b.token_ids)
        prefix = tok.decode(b.token_ids[:k], skip_special_tokens=True) if k is not None else None
        note = (
            "Identical so far."
            if k is None
            else f"The collapsed model first diverges at generated token **{k}** (highlighted)."
        )
        yield (
            panel_html(a.text),
            panel_html(b.text, k, prefix),
            stats_md(a, "original"),
            stats_md(b, did),
            note,
        )


def build(engine: Engine, session: gr.State, collapse: dict) -> dict:
    """Build the Compare tab; its model picker follows every new build."""
    gr.Markdown(
        "Same prompt, same decoding, two models at once: the original on the left, the "
        "collapsed one on the right. Greedy decoding makes differences easy to spot."
    )
    with gr.Row():
        prompt = gr.Textbox(EXAMPLES[0], label="Prompt", lines=2, scale=3, elem_id="cmp-prompt")
        with gr.Column(scale=2, min_width=240):
            pick = gr.Dropdown(
                [], allow_custom_value=True, label="Collapsed model", elem_id="cmp-model"
            )
            run_btn = gr.Button("▸ Generate both", variant="primary", elem_id="cmp-run")
    gr.Examples([[e] for e in EXAMPLES], inputs=prompt, label="Examples")
    with gr.Accordion("Decoding settings", open=False):
        with gr.Row():
            max_new = gr.Slider(1, 512, 64, step=1, label="Max new tokens")
            sample = gr.Checkbox(False, label="Sample (off = greedy)")
            chat = gr.Checkbox(True, label="Use chat template")
            seed = gr.Number(0, label="Seed", precision=0)
        with gr.Row():
            temp = gr.Slider(0.05, 2.0, 0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, 0.9, step=0.05, label="Top-p")
            top_k = gr.Slider(0, 200, 50, step=1, label="Top-k (0 = off)")
            rep = gr.Slider(1.0, 2.0, 1.0, step=0.05, label="Repetition penalty")
    with gr.Row(equal_height=True):
        with gr.Column(elem_classes=["laco-panel"]):
            gr.Markdown("#### Original")
            out_a = gr.HTML("<div class='laco-answer'>&nbsp;</div>", elem_id="cmp-a")
            stats_a = gr.Markdown("", elem_id="cmp-a-stats")
        with gr.Column(elem_classes=["laco-panel"]):
            gr.Markdown("#### Collapsed")
            out_b = gr.HTML("<div class='laco-answer'>&nbsp;</div>", elem_id="cmp-b")
            stats_b = gr.Markdown("", elem_id="cmp-b-stats")
    divergence = gr.Markdown("", elem_id="cmp-divergence")

    for ev in collapse["built"]:
        ev.then(build_choices, session, pick, api_visibility="private")
    gr.on(
        [run_btn.click, prompt.submit],
        partial(compare, engine),
        [session, pick, prompt, max_new, sample, temp, top_p, top_k, seed, chat, rep],
        [out_a, out_b, stats_a, stats_b, divergence],
        api_name="compare",
        concurrency_id=SHORT_GROUP,
    )
    return {"pick": pick}
