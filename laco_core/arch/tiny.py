"""Tiny randomly initialised models of every supported architecture, built from the adapter table.

Used by the tests and benchmarks: real transformers modules, seconds to build, no download.
"""

from __future__ import annotations

import torch
import transformers as tf

from .adapters import ADAPTERS, tiny_config

ARCHITECTURES = tuple(ADAPTERS)


def tiny_model(arch: str = "llama", layers: int = 6, seed: int = 0, **overrides):
    """A randomly initialised causal LM in eval mode with a deterministic seed."""
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(tiny_config(arch, layers, **overrides))
    model.eval()
    return model


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (Radford et al. 2019)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tiny_tokenizer():
    """A byte-level tokenizer whose ids fit the tiny models' 256-token vocabulary.

    Ids 0/1/2 are ``<pad>``/``<s>``/``</s>`` (matching ``tiny_config``); bytes 3..255 map to
    their own id, so any text without bytes 0x00-0x02 round-trips. It has a small chat
    template, so chat-template code paths run on tiny models too.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = _bytes_to_unicode()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {table[b]: b for b in range(3, 256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<pad>",
    )
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    return fast


class ByteTokenizer:
    """The smallest tokenizer with a BOS: id 1, then each byte of the text (the first 30)
    shifted past the special ids, so it fits the tiny models' 256-token vocabulary."""

    def __call__(self, text: str, return_tensors=None, add_special_tokens: bool = True):
        ids = [1] * add_special_tokens + [3 + b % 250 for b in text.encode()][:30]
        if return_tensors == "pt":
            return {
                "input_ids": torch.tensor([ids]),
                "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            }
        return {"input_ids": ids}
