"""Hugging Face vision and audio encoders as a new user exports them: tiny random-init
``transformers`` configs (no downloads), a dynamic batch (and a dynamic audio length for
wav2vec2, whose first feature-extractor conv is followed by a GroupNorm over that length),
saved, run by the numpy runtime and compared with the model in float64."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from tests.edge.test_user_models_sweep11_decoders import check_hf

transformers = pytest.importorskip("transformers")

BATCH = Dim("batch", min=1, max=4)


def _images() -> tuple[tuple[torch.Tensor], tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(1110)
    return (torch.randn(2, 3, 32, 32, generator=g),), (torch.randn(1, 3, 32, 32, generator=g),)


def _vision(kind: str) -> tuple[torch.nn.Module, str]:
    t = transformers
    if kind == "swin":
        cfg = t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4)
        return t.SwinModel(cfg), "last_hidden_state"
    if kind == "convnext":
        return t.ConvNextModel(t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)), "pooler_output"
    cfg = t.CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                             image_size=32, patch_size=8)
    return t.CLIPVisionModel(cfg), "pooler_output"


@pytest.mark.parametrize("kind", ["swin", "convnext", "clip_vision"])
def test_vision_model(kind: str) -> None:
    """Swin's shifted windows and relative position bias, ConvNeXt's depthwise 7x7 convs and
    channels-last LayerNorm, CLIP's ViT and pooled class token. (ViTModel, ResNetModel and
    MobileNetV2Model passed the same check when swept; left out: slow to trace, nothing new.)"""
    torch.manual_seed(1111)
    model, output = _vision(kind)
    check_hf(model, output, *_images(), dynamic_shapes=({0: BATCH},), names=("pixel_values",))


def test_whisper_encoder() -> None:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(1112)
    cfg = transformers.WhisperConfig(vocab_size=99, d_model=32, encoder_layers=1, encoder_attention_heads=4,
                                     encoder_ffn_dim=37, num_mel_bins=16, max_source_positions=20)
    mels = (torch.randn(2, 16, 40),), (torch.randn(3, 16, 40),)  # 2 * max_source_positions frames
    check_hf(WhisperEncoder(cfg), "last_hidden_state", *mels, dynamic_shapes=({0: BATCH},), names=("input_features",))


def test_wav2vec2_over_a_dynamic_audio_length() -> None:
    """The length is a multiple of the conv strides' product (torch.export's own suggestion:
    a free length gives guards on ``length // 10`` it cannot prove for the range). The
    ``feat_extract_norm="layer"`` variant passed the same check when swept."""
    torch.manual_seed(1113)
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                                      conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), feat_extract_norm="group", num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4)
    audio = (torch.randn(2, 400),), (torch.randn(1, 550),)
    length = 10 * Dim("frames", min=10, max=200)
    check_hf(transformers.Wav2Vec2Model(cfg), "last_hidden_state", *audio, dynamic_shapes=({0: BATCH, 1: length},),
             names=("input_values",))
