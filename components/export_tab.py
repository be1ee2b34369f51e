"""Export tab: save a collapsed model (verified by a plain reload), download it, push it."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from laco_core import schema
from laco_core.errors import LacoError
from laco_core.exchange.export import push_to_hub
from laco_core.exchange.lmeval_table import questions
from laco_core.runtime.engine import Engine

from .common import LONG_GROUP, PROGRESS, build_choices, gpu, model_of, pick_build
from .handoff import Event
from .state import Session


def _export(engine: Engine, session: Session, did: str) -> tuple[Path, object, Path]:
    """Export with the build's own base tokenizer and recipe into the engine's export store
    (bounded by age and size), verified by a plain reload, and zipped; what the session
    measured on the build goes into its card and recipe (``Entry.findings``)."""
    did, _, _ = model_of(engine, session, did)
    res, archive = engine.download(did, session.token(), session.get(did).findings())
    session.exports[did] = str(res.path)
    return Path(res.path), res, archive


@gpu
def export(engine: Engine, session: Session, did: str, progress: gr.Progress = PROGRESS):
    """Save, reload-verify and zip the collapsed model; also offer its recipe alone."""
    did = pick_build(session, did)
    progress(0.2, desc="Saving, reloading and zipping…")
    path, res, zipped = _export(engine, session, did)
    recipe_file = path / "laco_recipe.json"
    ok = "✓ Reload-verified" if res.verified else "✗ NOT reload-verified"
    loader = (
        "`laco_core.load_pruned` (per-layer shapes)"
        if (path / "laco_shapes.json").exists()
        else "plain `AutoModelForCausalLM.from_pretrained`"
    )
    extras = [n for n in ("laco_recipe.safetensors", "mergekit_config.yml") if (path / n).exists()]
    md = (
        f"### {ok}: reloaded with {loader}\n"
        f"max |logit difference| vs the in-memory model: **{res.max_abs_logit_diff:.2e}**"
        + (f"  \nThe zip also holds {', '.join(f'`{n}`' for n in extras)}." if extras else "")
        + f"  \n{carried_md(session.get(did).findings())}"
    )
    return session, md, str(zipped), str(recipe_file)


SECTION_NAMES = {
    "heldout": "held-out perplexity",
    "calibration": "calibration-prompt metrics",
    "validation": "validation perplexity",
}


def carried_md(found: dict) -> str:
    """One line on what the export's card and recipe say about the model's quality."""
    parts = [
        f"{name} ({schema.md_escape(found[k]['text'])})"
        for k, name in SECTION_NAMES.items()
        if found.get(k)
    ]
    if found.get("lmeval"):
        parts.append(f"lm-eval ({schema.md_escape(questions(found['lmeval']['model']))})")
    hint = "" if found.get("heldout") else " Score it on **Evaluate** for held-out perplexity."
    if not parts:
        return "Nothing was measured on this model yet: its card says so." + hint
    return (
        "The model card (`README.md`) and `laco_recipe.json` carry what this session measured: "
        + "; ".join(parts)
        + "."
        + hint
    )


@gpu
def push(engine: Engine, session: Session, did: str, repo_id: str, token: str, private: bool):
    """Push to the Hub. The token is used for this call only: never logged, stored or written."""
    did = pick_build(session, did)
    if not (repo_id or "").strip() or "/" not in repo_id:
        raise LacoError("Give a Hub repo id like your-name/smollm2-collapsed.")
    if not (token or "").strip():
        raise LacoError("Paste a Hugging Face write token (it is used once and not kept).")
    path = session.exports.get(did)
    if not path or not Path(path).exists():
        path, _, _ = _export(engine, session, did)
    url = push_to_hub(path, repo_id.strip(), token.strip(), private=bool(private))
    return f"✓ Pushed to [{url}]({url})", ""  # the second output clears the token box


def build(engine: Engine, session: gr.State, listed: list[Event]) -> None:
    """Build the Export tab; its model picker follows ``listed``, the events after which the
    session lists new models."""
    gr.Markdown(
        "The export holds safetensors weights, config, tokenizer and `laco_recipe.json`; "
        "it loads with `AutoModelForCausalLM.from_pretrained` alone. Before you download, "
        "it is reloaded and its logits are compared with the model you evaluated."
    )
    with gr.Row():
        pick = gr.Dropdown(
            [], allow_custom_value=True, label="Collapsed model", scale=3, elem_id="export-model"
        )
        run_btn = gr.Button("Export", variant="primary", scale=1, elem_id="export-run")
    verify = gr.Markdown("", elem_id="export-verify")
    with gr.Row():
        zip_file = gr.File(label="Model (zip)", interactive=False)
        recipe_file = gr.File(label="Recipe (JSON)", interactive=False)
    with gr.Accordion("Push to the Hugging Face Hub", open=False):
        gr.Markdown(
            "Your token is sent with this one request and used for the upload only; the "
            "app does not log it, keep it in the session or write it anywhere."
        )
        with gr.Row():
            repo = gr.Textbox(label="Repo id", placeholder="your-name/smollm2-laco")
            token = gr.Textbox(label="Write token", type="password", placeholder="hf_…")
            private = gr.Checkbox(True, label="Private")
        push_btn = gr.Button("Push")
        pushed = gr.Markdown("")

    for ev in listed:
        ev.then(build_choices, session, pick, api_visibility="private")
    run_btn.click(
        partial(export, engine),
        [session, pick],
        [session, verify, zip_file, recipe_file],
        api_name="export",
        concurrency_id=LONG_GROUP,
    )
    push_btn.click(
        partial(push, engine),
        [session, pick, repo, token, private],
        [pushed, token],
        api_name="push_to_hub",
        api_visibility="undocumented",
        concurrency_id=LONG_GROUP,
    )
