"""Mixture-of-experts LMs from ``transformers`` with their default ``experts_implementation``
("grouped_mm": rows sorted by expert, ``histc`` + ``cumsum(dtype=int32)`` offsets, the
``transformers::grouped_mm_fallback`` custom op torch.export keeps whole, an ``empty_like``
inverse permutation): exported over a dynamic batch and sequence and compared with the float64
model run through transformers' independent "batched_mm" experts (float64 cannot take the
grouped path: ``torch._grouped_mm`` is float32/half only). And the grouped matmul ops themselves
against a float64 loop over the groups, empty groups and rows past the last offset included."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.edge.test_user_models_sweep11_decoders import BATCH, HF, SEQ, token_batches
from torchship.edge import export

transformers = pytest.importorskip("transformers")

# feature sizes multiples of 4: eager float32 calls torch._grouped_mm, which wants 16-byte strides
TINY = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 36, "max_position_embeddings": 64, "num_experts_per_tok": 2}


def test_mixtral_with_the_default_grouped_experts() -> None:
    """(Qwen2-MoE, with its shared expert, and OLMoE passed the same check when swept.)"""
    torch.manual_seed(1130)
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**TINY, num_local_experts=4)).eval()
    assert model.config._experts_implementation == "grouped_mm"
    ref = copy.deepcopy(model).double()
    ref.config._experts_implementation = "batched_mm"
    prog = export(HF(model, "logits"), token_batches(1130)[0], dynamic_shapes=({0: BATCH, 1: SEQ},) * 2)
    for ids, mask in token_batches(1130):
        got = prog.run(ids, mask)
        with torch.no_grad():
            want = ref(input_ids=ids, attention_mask=mask).logits.numpy()
        assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5


class GroupedMM(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.w = nn.Parameter(torch.randn(3, 8, 16))

    def forward(self, x: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        if self.op == "aten":  # torch._grouped_mm (transformers' pick for bfloat16 experts) takes bfloat16 only
            return torch._grouped_mm(x.bfloat16(), self.w.bfloat16(), offs=offs).float()
        return torch.ops.transformers.grouped_mm_fallback(x, self.w, offs)


@pytest.mark.parametrize("op", ["aten", "transformers"])
def test_grouped_mm_ops(op: str) -> None:
    import transformers.integrations.moe  # noqa: F401  (registers transformers::grouped_mm_fallback)

    torch.manual_seed(1131)
    model = GroupedMM(op)
    rows = Dim("rows", min=1, max=64)
    x = torch.randn(10, 8)
    prog = export(model, (x, torch.tensor([3, 7, 10], dtype=torch.int32)), dynamic_shapes=({0: rows}, None))
    half = (lambda t: t.bfloat16().double()) if op == "aten" else (lambda t: t.double())
    w = half(model.w.detach())
    for n, offs in ((10, [3, 7, 10]), (9, [0, 4, 6]), (5, [5, 5, 5]), (12, [2, 2, 12])):  # empty groups, rows past the end
        x = torch.randn(n, 8)
        got = prog.run(x, torch.tensor(offs, dtype=torch.int32))
        want = torch.zeros(n, 16, dtype=torch.float64)
        start = 0
        for g, end in enumerate(offs):
            want[start:end] = half(x[start:end]) @ w[g]
            start = end
        tol = 2.0**-8 if op == "aten" else 1e-5  # one bfloat16 rounding of the float32 product
        assert np.abs(got - want.numpy()).max() / want.abs().max().item() <= tol
