"""Core engine benchmarks (issue 2 §9): similarity cost, collapse memory, collapsed speed-up.

Every figure is a ratio against a floor measured in the same run on the same machine:
    adjacent param similarity   ÷ one pass reading every layer weight         ≤ 3
    all-pairs param similarity  ÷ one fp32 (L×N)@(N×L) product, N = per layer ≤ 1.5
    representation similarity   ÷ one plain forward on the same batch        ≤ 1.15
    memory(original + collapse) ÷ memory(original)                           ≤ 1 + merged share + 5 %
    collapsed tokens/s          ÷ original tokens/s                          ≥ 0.9 × L/L′
First on the embedded default model (CPU, fp32), then, when CUDA is present, on a
Llama-2-7B-shaped model with random bf16 weights.
"""

from __future__ import annotations

import gc
import itertools
import os

import torch
import torch.nn.functional as F

from laco_core.analysis.similarity import (
    _pad_batch,
    adjacent_param_similarity,
    param_similarity,
    representation_similarity,
)
from laco_core.arch.adapters import decoder, get_layers
from laco_core.arch.plan import parse_ranges
from laco_core.arch.sharing import model_bytes, shared_fraction
from laco_core.assets import read_prompts
from laco_core.ops import build_collapsed

from .common import at_least, at_most, report, section, skipped, timeit

PLAN = "10-13,16-18"  # two merges: 30 -> 25 layers on the default model
GEN_TOKENS = 32
NAIVE_BUDGET_S = 15.0  # run the pair loop in full only when its estimate fits this


def _layer_params(model) -> list[torch.Tensor]:
    return [p.detach() for layer in get_layers(model) for p in layer.parameters()]


def _read_pass(params: list[torch.Tensor]) -> None:
    for p in params:
        p.sum(dtype=torch.float32)


def _naive_pair_loop(model, pairs) -> None:
    """The pattern the engine avoids: flatten copies of two layers per pair, one cosine each."""
    layers = get_layers(model)
    for i, j in pairs:
        a = torch.cat([p.detach().reshape(-1).float() for p in layers[i].parameters()])
        b = torch.cat([p.detach().reshape(-1).float() for p in layers[j].parameters()])
        F.cosine_similarity(a, b, dim=0)


def _gram_floor(num: int, per_layer: int, device: torch.device) -> float:
    """Time of one fp32 (L, N) @ (N, L) product: the arithmetic floor of an L×L Gram."""
    x = torch.randn(num, per_layer, device=device, dtype=torch.float32)  # (L, N)
    return timeit(lambda: x @ x.T, repeat=5, device=device)  # x is freed on return


def bench_param_similarity(model, device: torch.device, label: str) -> None:
    params = _layer_params(model)
    num = len(get_layers(model))
    per_layer = sum(p.numel() for p in get_layers(model)[0].parameters())

    t_read = timeit(lambda: _read_pass(params), repeat=5, device=device)
    t_adj = timeit(lambda: adjacent_param_similarity(model), repeat=5, device=device)
    report(f"{label} one read of every layer weight", t_read * 1e3, unit=" ms")
    report(f"{label} adjacent param similarity", t_adj * 1e3, unit=" ms")
    at_most(f"{label} adjacent param similarity ÷ one read", t_adj / t_read, 3.0)

    t_floor = _gram_floor(num, per_layer, device)
    t_all = timeit(lambda: param_similarity(model), repeat=5, device=device)
    report(f"{label} fp32 ({num}×{per_layer:,})@(N×{num}) product", t_floor * 1e3, unit=" ms")
    if device.type == "cuda":
        report(
            f"{label} all-pairs param similarity",
            t_all,
            "≤ 0.1 s on an H100",
            t_all <= 0.1,
            unit=" s",
        )
    else:
        report(f"{label} all-pairs param similarity", t_all * 1e3, unit=" ms")
    at_most(f"{label} all-pairs param similarity ÷ one fp32 Gram product", t_all / t_floor, 1.5)

    pairs = list(itertools.combinations(range(num), 2))
    sample = pairs[:6]
    t_sample = timeit(lambda: _naive_pair_loop(model, sample), repeat=1, warmup=0, device=device)
    estimate = t_sample / len(sample) * len(pairs)
    if estimate <= NAIVE_BUDGET_S:
        t_naive = timeit(lambda: _naive_pair_loop(model, pairs), repeat=1, warmup=0, device=device)
        report(f"{label} naive loop over {len(pairs)} pairs", t_naive, unit=" s")
    else:
        t_naive = estimate
        report(
            f"{label} naive loop over {len(pairs)} pairs",
            t_naive,
            unit=" s",
            note="estimated from 6 pairs",
        )
    report(f"{label} naive pair loop ÷ batched Gram", t_naive / t_all, note="for scale")


def bench_representation(
    model, tokenizer, prompts: list[str], device: torch.device, label: str
) -> None:
    ids, mask = _pad_batch(tokenizer, prompts, 128)
    ids, mask = ids.to(device), mask.to(device)

    @torch.no_grad()
    def plain():
        model(input_ids=ids, attention_mask=mask, use_cache=False)

    @torch.no_grad()
    def trunk():
        decoder(model)(input_ids=ids, attention_mask=mask, use_cache=False)

    t_plain = timeit(plain, repeat=3, device=device)
    t_rep = timeit(
        lambda: representation_similarity(model, tokenizer, prompts), repeat=3, device=device
    )
    t_trunk = timeit(trunk, repeat=3, device=device)
    report(f"{label} plain forward, batch {tuple(ids.shape)}", t_plain * 1e3, unit=" ms")
    report(f"{label} all-pairs representation similarity", t_rep * 1e3, unit=" ms")
    at_most(f"{label} representation similarity ÷ one plain forward", t_rep / t_plain, 1.15)
    # the similarity skips the LM head it does not need; against the decoder alone the ratio
    # shows the true cost of the hidden states and the all-pairs product
    report(
        f"{label} representation similarity ÷ decoder-only forward",
        t_rep / t_trunk,
        note="same forward without the LM head",
    )


def _storages(model) -> set[int]:
    return {
        t.untyped_storage().data_ptr() for t in itertools.chain(model.parameters(), model.buffers())
    }


def bench_memory(model, plan: str, label: str) -> None:
    ranges = parse_ranges(plan)
    base = model_bytes(model)
    layer_bytes = model_bytes(get_layers(model)[0])
    share = len(ranges) * layer_bytes / base  # one new layer per merged range at most
    for method in ("official", "rdsc"):
        collapsed = build_collapsed(model, ranges, method)
        extra = model_bytes(collapsed, exclude=_storages(model))
        at_most(
            f"{label} memory (original + {method} {plan}) ÷ original",
            (base + extra) / base,
            1 + share + 0.05,
            note=f"merged share {share:.3f}, shared fraction {shared_fraction(model, collapsed):.3f}",
        )
        del collapsed


def bench_generation(
    model, tokenizer, prompt: str, plan: str, device: torch.device, label: str
) -> None:
    collapsed = build_collapsed(model, plan, "rdsc")
    ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=device)
    mask = torch.ones_like(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def gen(m):
        @torch.no_grad()
        def run():
            m.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=GEN_TOKENS,
                min_new_tokens=GEN_TOKENS,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad,
            )

        return run

    t_orig = timeit(gen(model), repeat=3, device=device)
    t_coll = timeit(gen(collapsed), repeat=3, device=device)
    n, n2 = len(get_layers(model)), len(get_layers(collapsed))
    report(f"{label} original greedy tokens/s (KV cache, {GEN_TOKENS} new)", GEN_TOKENS / t_orig)
    report(f"{label} collapsed ({n2} layers) greedy tokens/s", GEN_TOKENS / t_coll)
    at_least(f"{label} collapsed tokens/s ÷ original tokens/s", t_orig / t_coll, 0.9 * n / n2)


def run_suite(model, tokenizer, prompts: list[str], plan: str, label: str) -> None:
    """Every core figure for one model."""
    device = model.get_input_embeddings().weight.device
    bench_param_similarity(model, device, label)
    bench_representation(model, tokenizer, prompts, device, label)
    bench_memory(model, plan, label)
    bench_generation(model, tokenizer, prompts[0], plan, device, label)


def llama2_7b_shaped(device: str = "cuda", dtype: torch.dtype = torch.bfloat16, **overrides):
    """Random-weight LlamaForCausalLM with Llama-2-7B's shapes (6.7 B parameters)."""
    import transformers as tf

    shape = dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    shape.update(overrides)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(tf.LlamaConfig(**shape), dtype=dtype)
    model.eval().requires_grad_(False)
    return model


def main() -> None:
    from laco_core.loading.models import load_model

    prompts = read_prompts()
    section("core: embedded default model (CPU, fp32)")
    print(
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    torch.manual_seed(0)
    lm = load_model("default", dtype="float32", device="cpu")
    print(f"{lm.num_layers} layers, {lm.num_params:,} params; plan {PLAN}")
    run_suite(lm.model, lm.tokenizer, prompts, PLAN, "default")
    del lm
    gc.collect()

    section("core: Llama-2-7B-shaped random bf16 model (CUDA)")
    if not torch.cuda.is_available():
        skipped("7B-shaped bf16 suite", "no CUDA")
        return
    from laco_core.arch.tiny import tiny_tokenizer

    model = llama2_7b_shaped("cuda", torch.bfloat16)
    print(
        f"{torch.cuda.get_device_name()}: 32 layers, {sum(p.numel() for p in model.parameters()):,} params"
    )
    run_suite(model, tiny_tokenizer(), prompts, "18-21,24-27", "7B")
