"""Hugging Face decoder LMs as a new user exports them first: ``transformers`` models built from
tiny random-init configs (no downloads), exported with a dynamic batch and sequence, saved, run
by the numpy runtime and compared with the model in float64 — the logits of a padded prompt
(sdpa attention, and eager where its code differs), and a KV-cache decode step whose past
keys/values grow over a dynamic past length (an empty past included), driven token by token."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_vision import check_model
from torchship.edge import ExportError, export

transformers = pytest.importorskip("transformers")

BATCH, SEQ = Dim("batch", min=1, max=4), Dim("seq", min=2, max=32)
TINY = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
        "intermediate_size": 37, "max_position_embeddings": 64}


class HF(nn.Module):
    """``model(**{names[i]: inputs[i]}).<output>``: a transformers model with plain tensor inputs
    and one tensor output, as torch.export needs."""

    def __init__(self, model: nn.Module, output: str, names: tuple[str, ...] = ("input_ids", "attention_mask")) -> None:
        super().__init__()
        self.model, self.output, self.names = model.eval(), output, names

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.names, (a, b, c)))), self.output)


def token_batches(seed: int = 0, vocab: int = 99) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Two (ids, attention mask) batches of different sizes, each with a right-padded row."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, s, real in ((2, 7, 5), (3, 11, 3)):
        mask = torch.ones(b, s, dtype=torch.long)
        mask[-1, real:] = 0
        out.append((torch.randint(3, vocab, (b, s), generator=g), mask))
    return out[0], out[1]


def check_hf(model: nn.Module, output: str, inputs: tuple[torch.Tensor, ...], others: tuple[torch.Tensor, ...],
             dynamic_shapes: Any = None, names: tuple[str, ...] = ("input_ids", "attention_mask")) -> Any:
    """Export ``HF(model, output, names)``, run it on ``inputs`` and ``others`` with the numpy
    runtime of the saved program and compare with the model in float64 (rel err <= 1e-5)."""
    if dynamic_shapes is None:
        dynamic_shapes = tuple({0: BATCH, 1: SEQ} for _ in inputs)
    return check_model(HF(model, output, names), inputs, dynamic_shapes, others=(others,))


def _lm(kind: str, attn: str) -> tuple[nn.Module, int]:
    """(a tiny random-init ``kind`` LM, its key/value head count)."""
    t = transformers
    if kind == "gpt2":
        cfg = t.GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4, n_positions=64, attn_implementation=attn)
        return t.GPT2LMHeadModel(cfg), 4
    model, config, gqa = {"llama": (t.LlamaForCausalLM, t.LlamaConfig, True), "gpt_neox": (t.GPTNeoXForCausalLM, t.GPTNeoXConfig, False)}[kind]
    extra = {"num_key_value_heads": 2} if gqa else {}
    return model(config(**TINY, **extra, attn_implementation=attn)), 2 if gqa else 4


# sdpa is transformers' default; llama's eager path (its own softmax attention) is checked too.
# Mistral and Qwen2 (llama's layers; sliding window off by default, q/k/v biases), Phi (partial
# rotary like GPT-NeoX) and llama-sdpa passed the same check when swept; left out to keep this fast
LMS = [("gpt2", "sdpa"), ("llama", "eager"), ("gpt_neox", "sdpa")]


@pytest.mark.parametrize(("kind", "attn"), LMS)
def test_causal_lm_logits_of_a_padded_prompt(kind: str, attn: str) -> None:
    torch.manual_seed(1100)
    model, _ = _lm(kind, attn)
    check_hf(model, "logits", *token_batches())


class DecodeStep(nn.Module):
    """One decode step: new token ids and the past ``[2, layers, batch, kv_heads, past, head_dim]``
    keys/values -> (logits, the grown past), through transformers' own ``DynamicCache``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, ids: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = [(past[0, i], past[1, i]) for i in range(past.shape[1])]
        cache = transformers.DynamicCache(ddp_cache_data=layers, config=self.model.config)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        grown = out.past_key_values.layers
        return out.logits, torch.stack([torch.stack([c.keys for c in grown]), torch.stack([c.values for c in grown])])


def test_kv_cache_decode_steps_match_the_full_prompt() -> None:
    """Llama: RoPE at the past length's offset and GQA over the cached keys."""
    torch.manual_seed(1101)
    model, kv_heads = _lm("llama", "sdpa")
    past = Dim("past", min=0, max=31)
    example = (torch.tensor([[5, 7]]), torch.zeros(2, 1, 1, kv_heads, 3, 8))
    step = export(DecodeStep(model), example, dynamic_shapes=({1: Dim("new", min=1, max=16)}, {4: past})).method("forward")
    prompt = [5, 17, 3, 44, 9, 60, 2]
    with torch.no_grad():
        ref = model.double()(torch.tensor([prompt])).logits[0].numpy()
    logits, cache = step(np.array([prompt[:4]]), np.zeros((2, 1, 1, kv_heads, 0, 8), np.float32))
    got = [logits[0]]
    for token in prompt[4:]:  # one token at a time, the cache growing by one each step
        logits, cache = step(np.array([[token]]), cache)
        got.append(logits[0])
    assert cache.shape == (2, 1, 1, kv_heads, len(prompt), 8)
    got = np.concatenate(got)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-5


def test_static_cache_recipe_is_refused_with_the_form_that_exports() -> None:
    """transformers' ExecuTorch recipe writes a StaticCache in place; torch.export traces it but
    its decomposition fails ("expected compiled_fn to be GraphModule"): the error names the
    in-place ops and their model lines, and says to pass the cache in and out (as above)."""
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    model, _ = _lm("llama", "sdpa")
    model.generation_config.cache_implementation = "static"
    recipe = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=16).model

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.recipe = recipe

        def forward(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
            return self.recipe(input_ids=ids, cache_position=position)

    with pytest.raises(ExportError, match=r"(?s)index_copy_ at .*modeling_llama.py:\d+.*DynamicCache\(ddp_cache_data"):
        export(Step(), (torch.tensor([[5]]), torch.tensor([0])))
