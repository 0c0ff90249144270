"""Hugging Face text encoders and encoder-decoders as a new user exports them: tiny random-init
``transformers`` configs (no downloads), a dynamic batch and sequence (and target length),
padded batches, saved, run by the numpy runtime and compared with the model in float64."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from tests.edge.test_user_models_sweep11_decoders import BATCH, SEQ, check_hf, token_batches

transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 37}


def _encoder(kind: str) -> torch.nn.Module:
    t = transformers
    if kind == "distilbert":
        return t.DistilBertModel(t.DistilBertConfig(vocab_size=99, dim=32, n_layers=1, n_heads=4, hidden_dim=37))
    if kind == "roberta":  # position ids from the padding mask (padding_idx 1)
        return t.RobertaModel(t.RobertaConfig(**TINY, max_position_embeddings=64))
    # DeBERTa-v2: disentangled attention over log-bucketed relative positions (eager only in transformers)
    cfg = t.DebertaV2Config(**TINY, relative_attention=True, position_buckets=8, max_relative_positions=16,
                            pos_att_type=["p2c", "c2p"])
    return t.DebertaV2Model(cfg)


@pytest.mark.parametrize("kind", ["distilbert", "roberta", "deberta_v2"])
def test_text_encoder_hidden_states(kind: str) -> None:
    """(Albert, Electra and CLIPTextModel passed the same check when swept; left out to keep this fast.)"""
    torch.manual_seed(1120)
    check_hf(_encoder(kind), "last_hidden_state", *token_batches(1120))


def _seq2seq(kind: str) -> torch.nn.Module:
    t = transformers
    if kind == "t5":  # relative position buckets, RMS layer norm, shared decoder start
        return t.T5ForConditionalGeneration(t.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                                       relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                                       decoder_start_token_id=0))
    return t.BartForConditionalGeneration(t.BartConfig(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1,
                                                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                                                       decoder_ffn_dim=37, max_position_embeddings=64))


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_logits(kind: str) -> None:
    """One forward with ``decoder_input_ids`` over a dynamic target length (one token included).
    T5's relative position buckets take ``log(0)`` in a branch ``torch.where`` drops: the runtime
    gives torch's IEEE -inf without numpy's RuntimeWarning."""
    torch.manual_seed(1121)
    (ids, mask), (ids2, mask2) = token_batches(1121)
    dec, dec2 = torch.randint(3, 99, (2, 4)), torch.randint(3, 99, (3, 1))
    dyn = ({0: BATCH, 1: SEQ}, {0: BATCH, 1: SEQ}, {0: BATCH, 1: Dim("target", min=1, max=16)})
    check_hf(_seq2seq(kind), "logits", (ids, mask, dec), (ids2, mask2, dec2), dyn,
             names=("input_ids", "attention_mask", "decoder_input_ids"))
