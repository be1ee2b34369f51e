"""Compare tab: the original and up to three built models answer the same prompt side by side,
streaming together with identical decoding; and one fixed text read by the original and a
build, each token coloured by how much the build's prediction of it departs from the
original's (KL), with both models' top-3 guesses on hover."""

from __future__ import annotations

import html
from functools import partial

import gradio as gr

from laco_core.analysis.evaluate import TokenDivergence, token_divergence
from laco_core.analysis.generate import DecodeSettings, StreamState, first_divergence, stream_many
from laco_core.assets import read_text
from laco_core.errors import LacoError
from laco_core.runtime.engine import Engine

from . import api, lens_panel
from .common import SHORT_GROUP, gpu, model_of
from .handoff import Event
from .state import Session

MAX_BUILDS = 3  # beside the original
EXAMPLES = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "List three uses of a paperclip.",
    "What is 12 times 7?",
]
KL_RED = 2.0  # nats: a token at or above this is drawn in full red
TOKENS_READ = 200


def panel_html(text: str, diverge_at: int | None = None, prefix: str | None = None) -> str:
    """Escaped answer; from the first diverging token on, highlighted."""
    if diverge_at is None or prefix is None or not text.startswith(prefix):
        return f"<div class='laco-answer'>{html.escape(text) or '&nbsp;'}</div>"
    same, rest = text[: len(prefix)], text[len(prefix) :]
    return (
        f"<div class='laco-answer'>{html.escape(same)}<mark class='laco-diverge' "
        f"title='first token that differs from the original'>{html.escape(rest)}</mark></div>"
    )


def stats_md(st: StreamState, diverged: int | None = None, reference: bool = False) -> str:
    """Under an answer: tokens, decoding speed, first-token latency, where it first diverged.

    The speed counts the tokens after the first over the time after the first: the first
    token's time (the prompt's forward pass) is shown apart, so a short answer is not judged
    by its prompt."""
    ttft = f"{st.first_token_latency_s * 1000:.0f} ms" if st.first_token_latency_s else "–"
    n = len(st.token_ids)
    rest = st.elapsed_s - (st.first_token_latency_s or 0.0)
    speed = (n - 1) / rest if n > 1 and rest > 0 else st.tokens_per_s
    status = "done" if st.done else "streaming…"
    where = ""
    if not reference:
        where = (
            " · **identical so far**"
            if diverged is None
            else f" · **first diverged at token {diverged}**"
        )
    return (
        f"<small>{n} tokens · **{speed:.1f} tok/s** · first token {ttft} · {status}{where}</small>"
    )


def _picked(session: Session, picks) -> list[str]:
    picks = [p for p in (picks if isinstance(picks, list) else [picks]) if p]
    if not picks and session.current:
        picks = [session.current]
    if not picks:
        raise LacoError("No collapsed model yet: build one in the Collapse tab first.")
    if len(picks) > MAX_BUILDS:
        raise LacoError(f"Pick at most {MAX_BUILDS} models to compare with the original.")
    return list(dict.fromkeys(picks))


def _streams(
    engine: Engine,
    session: Session,
    picks,
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
    """The original and up to three builds streaming in one loop with the same decoding.

    Yields:
        ``(labels, states, divergences, prefixes)`` after every step: the first state is the
        original's; for each build, the generated token where it first left the original
        (None while identical) and its text up to there.
    """
    picked = [model_of(engine, session, d) for d in _picked(session, picks)]
    base = picked[0][2]
    for did, _, b in picked[1:]:
        if b is not base:
            raise LacoError(
                f"'{did}' was built on `{b.spec}`, '{picked[0][0]}' on `{base.spec}`: compare "
                "models of one base model at a time."
            )
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
    labels = ["Original", *(f"`{did}`" for did, _, _ in picked)]
    models = [base.model, *(m for _, m, _ in picked)]
    # a long job: in the session's slot while streaming; closing the stream ends it (and the
    # slot) before the next token
    with engine.job(session.token()):
        for states in stream_many(models, tok, prompt or "", settings):
            ks = [first_divergence(states[0].token_ids, st.token_ids) for st in states[1:]]
            prefixes = [
                tok.decode(st.token_ids[:k], skip_special_tokens=True) if k is not None else None
                for st, k in zip(states[1:], ks, strict=True)
            ]
            yield labels, states, ks, prefixes


@gpu
def compare(engine: Engine, session: Session, picks: list[str], prompt: str, *decoding):
    """Stream the original and up to three builds token by token, one loop, same decoding.

    Every build uses its own base model and tokenizer; builds of different bases cannot share
    one original and are refused. No lock is held while streaming. ``decoding``: max new
    tokens, sample, temperature, top-p, top-k, seed, chat template, repetition penalty.
    """
    first = True
    for labels, states, ks, prefixes in _streams(engine, session, picks, prompt, *decoding):
        n = len(labels)
        answers = [panel_html(states[0].text)]
        stats = [stats_md(states[0], reference=True)]
        for st, k, same in zip(states[1:], ks, prefixes, strict=True):
            answers.append(panel_html(st.text, k, same))
            stats.append(stats_md(st, k))
        pad = MAX_BUILDS + 1 - n
        answers += ["<div class='laco-answer'>&nbsp;</div>"] * pad
        stats += [""] * pad
        if first:
            shown = [gr.Column(visible=i < n) for i in range(MAX_BUILDS + 1)]
            heads = [f"#### {labels[i]}" if i < n else "" for i in range(MAX_BUILDS + 1)]
        else:
            shown = heads = [gr.skip()] * (MAX_BUILDS + 1)
        yield (*shown, *heads, *answers, *stats)
        first = False


@gpu
def api_compare(engine: Engine, session: Session, did: str, prompt: str, *decoding):
    """``/compare`` for scripts: the original and one build, ``(answer, answer, stats, stats,
    note)`` after every token; cancelling the call ends the stream."""

    def convert(update):
        labels, (a, b), (k,), (same,) = update
        note = (
            "Identical so far."
            if k is None
            else f"The collapsed model first diverges at generated token **{k}** (highlighted)."
        )
        return (
            panel_html(a.text),
            panel_html(b.text, k, same),
            stats_md(a, reference=True),
            stats_md(b, k),
            note,
        )

    yield from api.relay(_streams(engine, session, [did], prompt, *decoding), convert)


def _colour(kl: float | None) -> str:
    """White at 0 through orange to red at ``KL_RED`` nats."""
    if kl is None:
        return "transparent"
    t = max(0.0, min(1.0, kl / KL_RED))
    stops = [(255, 255, 255), (255, 200, 120), (230, 60, 60)]
    a, b, u = (stops[0], stops[1], t * 2) if t < 0.5 else (stops[1], stops[2], t * 2 - 1)
    r, g, bl = (round(x + (y - x) * u) for x, y in zip(a, b, strict=True))
    return f"rgb({r},{g},{bl})"


def _guesses(top: list[tuple[str, float]]) -> str:
    return ", ".join(f"{t!r} {100 * p:.0f} %" for t, p in top)


def tokens_html(rows: list[TokenDivergence], did: str) -> str:
    """Every token coloured by KL(original ‖ build); hover: both models' top-3 guesses."""
    spans = []
    for r in rows:
        if r.kl is None:
            tip = "first token: nothing predicts it"
        else:
            tip = (
                f"KL {r.kl:.3f} nats\n"
                f"original gave it {100 * r.ref_prob:.1f} % — top 3: {_guesses(r.ref_top)}\n"
                f"{did} gave it {100 * r.model_prob:.1f} % — top 3: {_guesses(r.model_top)}"
            )
        spans.append(
            f"<span class='laco-tok' style='background:{_colour(r.kl)}' "
            f"title='{html.escape(tip, quote=True)}'>{html.escape(r.token)}</span>"
        )
    scored = [r for r in rows if r.kl is not None]
    mean = sum(r.kl for r in scored) / max(len(scored), 1)
    worst = sorted(scored, key=lambda r: -r.kl)[:3]
    worst_s = ", ".join(f"{r.token!r} ({r.kl:.2f})" for r in worst)
    return (
        f"<div class='laco-tokens'>{''.join(spans)}</div>"
        "<div class='laco-legend'><span>KL(original ‖ model) per token: 0 <span class='sw'>"
        f"</span> ≥ {KL_RED:g} nats</span><span>mean <b>{mean:.3f}</b> nats over {len(scored)} "
        f"tokens</span><span>worst: {html.escape(worst_s)}</span></div>"
    )


@gpu
def token_view(engine: Engine, session: Session, did: str, text: str) -> str:
    """Where the collapse hurts: one text, each token coloured by the KL of its prediction."""
    did, model, base = model_of(engine, session, did)
    engine.limits.check("text_chars", len(text or ""), "The text")
    rows = token_divergence(model, base.model, base.tokenizer, text or "", 3, TOKENS_READ)
    return tokens_html(rows, did)


def default_text(words: int = 110) -> str:
    """The held-out text's first paragraph (its title line left out), cut to ``words``."""
    paragraphs = [p for p in read_text().split("\n\n") if len(p.split()) > 20]
    text = paragraphs[0] if paragraphs else read_text()
    return " ".join(text.split()[:words])


def picks_update(session: Session) -> gr.Dropdown:
    """After a build: the newest model joins the picks (at most three)."""
    choices = session.choices()
    ids = [c[1] for c in choices]
    return gr.Dropdown(
        choices=choices, value=ids[:1] if session.current is None else [session.current]
    )


def build(engine: Engine, session: gr.State, listed: list[Event]) -> gr.Textbox:
    """Build the Compare tab; its model pickers follow ``listed``, the events after which
    the session lists new models. Returns its prompt box (the page keeps it)."""
    gr.Markdown(
        "Same prompt, same decoding, several models at once: the original beside up to three "
        "of your models, streaming together. Greedy decoding makes differences easy to spot."
    )
    with gr.Row(elem_classes=["laco-row"]):
        prompt = gr.Textbox(EXAMPLES[0], label="Prompt", lines=2, scale=3, elem_id="cmp-prompt")
        with gr.Column(scale=2, min_width=240):
            picks = gr.Dropdown(
                [],
                multiselect=True,
                max_choices=MAX_BUILDS,
                allow_custom_value=True,  # API callers pass ids of their session's builds
                label=f"Models beside the original (up to {MAX_BUILDS})",
                elem_id="cmp-model",
            )
            run_btn = gr.Button("▸ Generate", variant="primary", elem_id="cmp-run")
    gr.Examples([[e] for e in EXAMPLES], inputs=prompt, label="Examples")
    with gr.Accordion("Decoding settings (the same for every model)", open=False):
        with gr.Row(elem_classes=["laco-row"]):
            max_new = gr.Slider(1, 512, 64, step=1, label="Max new tokens")
            sample = gr.Checkbox(False, label="Sample (off = greedy)")
            chat = gr.Checkbox(True, label="Use chat template")
            seed = gr.Number(0, label="Seed", precision=0)
        with gr.Row(elem_classes=["laco-row"]):
            temp = gr.Slider(0.05, 2.0, 0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, 0.9, step=0.05, label="Top-p")
            top_k = gr.Slider(0, 200, 50, step=1, label="Top-k (0 = off)")
            rep = gr.Slider(1.0, 2.0, 1.0, step=0.05, label="Repetition penalty")
    cols, heads, answers, stats = [], [], [], []
    with gr.Row(equal_height=True, elem_classes=["laco-row"]):
        for i in range(MAX_BUILDS + 1):
            with gr.Column(elem_classes=["laco-panel"], visible=i < 2, min_width=200) as col:
                heads.append(gr.Markdown("#### Original" if i == 0 else "#### Collapsed"))
                name = "a" if i == 0 else "b" if i == 1 else str(i)
                answers.append(
                    gr.HTML("<div class='laco-answer'>&nbsp;</div>", elem_id=f"cmp-{name}")
                )
                stats.append(
                    gr.Markdown("", elem_id=f"cmp-{name}-stats", elem_classes=["laco-answer-stats"])
                )
            cols.append(col)

    gr.Markdown("### Where does it hurt?")
    gr.Markdown(
        "One text read by the original and one of your models. Each token is coloured by the "
        "KL divergence between the two models' predictions of it (white: the same, red: far "
        "apart); hover a token for both models' top-3 guesses."
    )
    with gr.Row(elem_classes=["laco-row"]):
        text = gr.Textbox(default_text(), label="Text", lines=4, scale=3, elem_id="kl-text")
        with gr.Column(scale=2, min_width=240):
            kl_pick = gr.Dropdown([], allow_custom_value=True, label="Model", elem_id="kl-model")
            kl_btn = gr.Button("Colour the tokens", elem_id="kl-run")
    kl_view = gr.HTML("", elem_id="kl-view")

    for ev in listed:
        ev.then(picks_update, session, picks, api_visibility="private").then(
            lambda s: gr.Dropdown(choices=s.choices(), value=s.current),
            session,
            kl_pick,
            api_visibility="private",
        )
    decoding = [max_new, sample, temp, top_p, top_k, seed, chat, rep]
    gr.on(
        [run_btn.click, prompt.submit],
        partial(compare, engine),
        [session, picks, prompt, *decoding],
        [*cols, *heads, *answers, *stats],
        api_visibility="private",
        concurrency_id=SHORT_GROUP,
        show_progress="hidden",
    )
    one = api.hidden(gr.Dropdown, choices=[], allow_custom_value=True)
    api.endpoint(
        partial(api_compare, engine),
        [session, one, prompt, *decoding],
        [api.hidden(gr.HTML) for _ in range(2)] + [api.hidden(gr.Markdown) for _ in range(3)],
        "compare",
        concurrency_id=SHORT_GROUP,
    )
    kl_btn.click(
        partial(token_view, engine),
        [session, kl_pick, text],
        kl_view,
        api_name="token_kl",
        concurrency_id=SHORT_GROUP,
    )
    lens_panel.build(engine, session, listed)
    return prompt
