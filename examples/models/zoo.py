"""Small models covering the edge core op set: MLP, CNN, inverted residual, tiny transformer.

Each factory returns ``(model, example_inputs)`` with the model in eval mode and fixed random
weights (seeded), so tests, the demo and the benchmark see the same thing.

Example:
    >>> model, inputs = mlp()
    >>> model(*inputs).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Three linear layers with ReLU/GELU in between.

    Example:
        >>> MLP()(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(self, d_in: int = 64, hidden: int = 256, d_out: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(nn.functional.gelu(self.fc2(torch.relu(self.fc1(x)))))


class SmallCNN(nn.Module):
    """Conv + batch-norm + relu, max pool, avg pool, adaptive pool and a linear head.

    Example:
        >>> SmallCNN()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1)
        self.adapt = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(64 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.avg(torch.relu(self.bn2(self.conv2(x))))
        x = self.adapt(torch.relu(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual; BN + ReLU6.

    Example:
        >>> InvertedResidual()(torch.zeros(1, 32, 28, 28)).shape
        torch.Size([1, 32, 28, 28])
    """

    def __init__(self, channels: int = 32, expand: int = 6) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.depthwise(self.expand(x)))


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer with masked multi-head self-attention and GELU."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(b, s, self.heads, hd).transpose(1, 2)
        k = k.reshape(b, s, self.heads, hd).transpose(1, 2)
        v = v.reshape(b, s, self.heads, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.out(ctx))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class TinyTransformer(nn.Module):
    """Token + position embedding, two encoder layers, masked mean pooling.

    ``forward(ids, mask)`` returns the hidden states; ``encode(ids, mask)`` the pooled,
    L2-normalised sentence vector.

    Example:
        >>> m = TinyTransformer()
        >>> m(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)).shape
        torch.Size([2, 8, 64])
    """

    def __init__(self, vocab: int = 500, d: int = 64, heads: int = 4, layers: int = 2, max_len: int = 128) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, 4 * d) for _ in range(layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        pos = torch.arange(s, device=ids.device)
        x = self.ln(self.tok(ids) + self.pos(pos)[None])
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -1e9
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.forward(ids, mask)
        m = mask[:, :, None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def _init(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):  # non-trivial running stats so folding is tested
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The MLP and a ``[4, 64]`` input.

    Example:
        >>> mlp()[1][0].shape
        torch.Size([4, 64])
    """
    torch.manual_seed(0)
    model = _init(MLP(), 0)
    return model, (torch.randn(4, 64),)


def small_cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The CNN and a ``[1, 3, 32, 32]`` image.

    Example:
        >>> small_cnn()[1][0].shape
        torch.Size([1, 3, 32, 32])
    """
    torch.manual_seed(1)
    model = _init(SmallCNN(), 1)
    return model, (torch.randn(1, 3, 32, 32),)


def inverted_residual() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The MobileNetV2 block and a ``[1, 32, 56, 56]`` feature map.

    Example:
        >>> inverted_residual()[1][0].shape
        torch.Size([1, 32, 56, 56])
    """
    torch.manual_seed(2)
    model = _init(InvertedResidual(), 2)
    return model, (torch.randn(1, 32, 56, 56),)


def tiny_transformer() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The tiny transformer, token ids ``[2, 16]`` and a mask with padding in row 1.

    Example:
        >>> tiny_transformer()[1][0].shape
        torch.Size([2, 16])
    """
    torch.manual_seed(3)
    model = _init(TinyTransformer(), 3)
    ids = torch.randint(0, 500, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 11:] = 0
    return model, (ids, mask)


ZOO = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "inverted_residual": inverted_residual,
    "tiny_transformer": tiny_transformer,
}
