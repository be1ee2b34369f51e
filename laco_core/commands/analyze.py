"""``laco analyze``: layer-by-layer parameter and representation similarity as JSON."""

from __future__ import annotations

import argparse

from ..loading.limits import Limits
from ..loading.models import SPEC_HELP, load_model
from .common import check_output_file, read_prompt_file, write_json

HELP = "Parameter and representation similarity between layers (JSON)."


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help=SPEC_HELP)
    p.add_argument(
        "--prompts", help="UTF-8 file, one prompt per line (default: bundled calibration prompts)"
    )
    p.add_argument("--json", dest="json_out", required=True, help="output JSON file")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


def _list(t) -> list:
    return t.detach().float().cpu().tolist()


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..analysis.similarity import param_similarity, representation_similarity

    hf_logging.disable_progress_bar()
    prompts = read_prompt_file(args.prompts)
    out_file = check_output_file(args.json_out, "--json")
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    Limits.current().check_prompts(lm.tokenizer, prompts)
    ps = param_similarity(lm.model)
    rs = representation_similarity(lm.model, lm.tokenizer, prompts)
    out = {
        "model": args.model,
        "num_layers": lm.num_layers,
        "num_prompts": len(prompts),
        "param_similarity": _list(ps["all"]),
        "param_similarity_by_module": {k: _list(v) for k, v in ps.items() if k != "all"},
        "representation_similarity": _list(rs.cosine),
        "angular_distance": _list(rs.angular),
        "block_influence": _list(rs.block_influence),
    }
    write_json(out_file, out)
    adj = [(out["param_similarity"][i][i + 1], i) for i in range(lm.num_layers - 1)]
    best = ", ".join(f"{i}-{i + 1} ({s:.3f})" for s, i in sorted(adj, reverse=True)[:3])
    bi = out["block_influence"]
    least = sorted(range(len(bi)), key=lambda i: bi[i])[:3]
    print(f"{args.model}: {lm.num_layers} layers, {len(prompts)} prompts -> {args.json_out}")
    print(f"most similar adjacent layers by parameters: {best}")
    print(f"least influential blocks (ShortGPT BI): {', '.join(str(i) for i in least)}")
    return 0
