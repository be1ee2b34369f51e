"""The logit lens, dense beside collapsed: what each layer's output would predict.

For a prompt, each decoder layer's output (the residual stream after it) goes through the
model's final norm and LM head, as if the model ended there (the logit lens, nostalgebraist
2020). A collapsed model's layer stands for a range of original layers (``laco_layer_map``):
its output is set beside the dense model's output after the LAST layer of that range, so both
are read at the same original depth, and the layers a merge took away have no row of their
own. Where the two predictions part (KL of the dense layer's distribution to the collapsed
one's, top-1 agreement) is where the collapse changed what the network computes.

Sequences start as the tokenizer starts them (``arch.tokens.encode``: BOS where it adds one).
The last layer's lens is the model's own next-token distribution: the tests check it equals
the model's logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from ..arch.adapters import final_norm, get_layers
from ..arch.plan import layer_map
from ..arch.tokens import encode, start_ids
from ..errors import LacoError
from .activations import logits_of

MAX_TOKENS = 64  # positions read; the lens keeps (layers × positions) distributions in memory


@dataclass
class LensRow:
    """One layer of one model under the lens.

    Attributes:
        layers: The original layers this layer stands for (``lo``, ``hi``), inclusive.
        top1: Per position, the most likely next token and its probability.
        last: The ``top_k`` most likely next tokens after the whole prompt, with probabilities.
    """

    layers: tuple[int, int]
    top1: list[tuple[str, float]]
    last: list[tuple[str, float]]


@dataclass
class LensView:
    """The lens of a dense model and, optionally, of a model collapsed from it.

    Attributes:
        tokens: The prompt's tokens as read (start tokens included), one per position.
        dense: One row per dense layer.
        collapsed: One row per collapsed layer (empty without a collapsed model).
        kl: Per original layer index, KL(dense lens ‖ collapsed lens) in nats, mean over
            positions, where the collapsed model has a layer ending there (None otherwise).
        agree: Likewise, the share of positions whose top-1 tokens agree.
        merged: The collapsed model's merged ranges, in original indices.
    """

    tokens: list[str]
    dense: list[LensRow]
    collapsed: list[LensRow] = field(default_factory=list)
    kl: list[float | None] = field(default_factory=list)
    agree: list[float | None] = field(default_factory=list)
    merged: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        def rows(rs: list[LensRow]) -> list[dict]:
            return [
                {"layers": list(r.layers), "top1": [list(t) for t in r.top1], "last": r.last}
                for r in rs
            ]

        return {
            "tokens": self.tokens,
            "dense": rows(self.dense),
            "collapsed": rows(self.collapsed),
            "kl": self.kl,
            "agree": self.agree,
            "merged": [list(r) for r in self.merged],
        }


def prompt_ids(tokenizer, prompt: str, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """The prompt as the model reads it, (1, T); refused when empty."""
    ids = encode(tokenizer, prompt, max_tokens)
    if not (prompt or "").strip() or len(ids) <= len(start_ids(tokenizer)):
        raise LacoError("Give a prompt with at least one word for the lens.")
    return torch.tensor([ids])


@torch.inference_mode()
def layer_logprobs(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next token read off every layer's output: (L, T, V) float32.

    Each decoder layer's output is captured by a forward hook and put through the final norm
    and the LM head (with the architecture's logit soft-capping, if any).
    """
    outputs: list[torch.Tensor] = []

    def keep(_module, _args, out) -> None:
        outputs.append(out[0] if isinstance(out, tuple) else out)

    hooks = [layer.register_forward_hook(keep) for layer in get_layers(model)]
    try:
        model(input_ids=ids.to(model.device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    norm = final_norm(model)
    return torch.stack([torch.log_softmax(logits_of(model, norm(h))[0], -1) for h in outputs])


def _rows(logp: torch.Tensor, spans: list[tuple[int, int]], tokenizer, top_k: int):
    rows = []
    for span, lp in zip(spans, logp, strict=True):
        p, idx = lp.exp().max(-1)
        top1 = [
            (tokenizer.decode([int(i)]), round(float(q), 4)) for i, q in zip(idx, p, strict=True)
        ]
        lp_last, i_last = lp[-1].topk(top_k)
        last = [
            (tokenizer.decode([int(i)]), round(float(q.exp()), 4))
            for i, q in zip(i_last, lp_last, strict=True)
        ]
        rows.append(LensRow(tuple(span), top1, last))
    return rows


def logit_lens(
    dense: PreTrainedModel,
    tokenizer,
    prompt: str,
    collapsed: PreTrainedModel | None = None,
    top_k: int = 5,
    max_tokens: int = MAX_TOKENS,
) -> LensView:
    """The lens of ``dense`` and, with ``collapsed`` (a model built from it), both side by
    side at equal original depth with their divergence per layer.

    Args:
        dense: The original model.
        tokenizer: Its tokenizer (the collapsed model shares it).
        prompt: The text read; at most ``max_tokens`` tokens, start tokens included.
        collapsed: A model collapsed from ``dense`` (its ``laco_layer_map`` names the original
            layers each layer stands for), or None for the dense lens alone.
        top_k: Tokens listed after the whole prompt, per layer.
    """
    if not 1 <= int(top_k) <= 50:
        raise LacoError(f"The lens lists 1 to 50 tokens per layer, not {top_k}.")
    ids = prompt_ids(tokenizer, prompt, max_tokens)
    tokens = [tokenizer.decode([int(i)]) for i in ids[0]]
    d_logp = layer_logprobs(dense, ids)
    view = LensView(tokens, _rows(d_logp, layer_map(dense), tokenizer, top_k))
    if collapsed is None:
        return view
    spans = layer_map(collapsed)
    if spans[-1][1] != len(view.dense) - 1 or any(
        b[0] != a[1] + 1 for a, b in zip(spans, spans[1:], strict=False)
    ):
        raise LacoError(
            "The collapsed model does not cover the original layers in order: compare a model "
            "collapsed from this one."
        )
    c_logp = layer_logprobs(collapsed, ids)
    view.collapsed = _rows(c_logp, spans, tokenizer, top_k)
    view.merged = [s for s in spans if s[0] != s[1]]
    at = {hi: k for k, (_, hi) in enumerate(spans)}
    for i, d in enumerate(d_logp):
        k = at.get(i)
        if k is None:
            view.kl.append(None)
            view.agree.append(None)
            continue
        c = c_logp[k]
        kl = (d.exp() * (d - c)).sum(-1).mean()
        view.kl.append(round(float(kl), 5))
        view.agree.append(round(float((d.argmax(-1) == c.argmax(-1)).float().mean()), 4))
    return view
