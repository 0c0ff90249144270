"""Vision models a new user writes in plain torch.nn (random weights, small sizes), exported
with dynamic batch and run by the numpy runtime, against eager torch in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from torchship.edge import export
from torchship.edge.runtime import ProgramError

BATCH = Dim("batch", min=1, max=8)


def _double(x: Any) -> Any:
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def check_model(model: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_shapes: Any = None,
                others: tuple[tuple[torch.Tensor, ...], ...] = (), tol: float = 1e-5,
                method: str = "forward", methods: dict[str, Any] | None = None, prog: Any = None) -> Any:
    """Export ``model`` (float32; or take its already exported ``prog``), run ``method`` on
    ``inputs`` and each of ``others`` with the numpy runtime, and compare every output with the
    model in float64: max |got - ref| / max |ref| <= ``tol`` for floats, equality for integers
    and bools. Returns the program."""
    model = model.eval()
    if prog is None and methods is None:
        prog = export(model, inputs, dynamic_shapes=dynamic_shapes)
    elif prog is None:
        prog = export(model, None, methods=methods)
    ref_model = model.double()  # in place (old-style weight_norm modules cannot be deep-copied)
    for xs in (inputs, *others):
        got = prog.method(method)(*(x.numpy() for x in xs))
        with torch.no_grad():
            ref = getattr(ref_model, method)(*(_double(x) for x in xs))
        gots = got if isinstance(got, tuple) else (got,)
        refs = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
        assert len(gots) == len(refs)
        for g, r in zip(gots, refs):
            r = r.numpy()
            assert g.shape == r.shape, (g.shape, r.shape)
            if r.dtype == np.float64:
                assert g.dtype == np.float32
                err = float(np.abs(g.astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-30))
                assert err <= tol, err
            else:
                np.testing.assert_array_equal(g, r)
    model.float()
    return prog


class ViT(nn.Module):
    def __init__(self, img: int = 16, patch: int = 4, dim: int = 32, depth: int = 1, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


def test_vit() -> None:
    torch.manual_seed(0)
    check_model(ViT(), (torch.randn(2, 3, 16, 16),), ({0: BATCH},), others=((torch.randn(5, 3, 16, 16),),))


class UNet(nn.Module):
    def __init__(self, c: int = 8, upsample: str = "transposed") -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1), nn.ReLU(inplace=True))

        self.down1, self.down2, self.mid = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.upsample = upsample
        if upsample == "transposed":
            self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
            self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        else:
            self.up2 = nn.Conv2d(4 * c, 2 * c, 1)
            self.up1 = nn.Conv2d(2 * c, c, 1)
        self.dec2, self.dec1 = block(4 * c, 2 * c), block(2 * c, c)
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(F.max_pool2d(d1, 2))
        m = self.mid(F.max_pool2d(d2, 2))
        if self.upsample == "transposed":  # and bilinear with aligned corners at the top level
            u2 = self.up2(m)
            u2 = self.dec2(torch.cat([u2, d2], dim=1))
            u1 = self.up1(F.interpolate(u2, scale_factor=2, mode="bilinear", align_corners=True)[..., ::2, ::2])
        else:  # bilinear (half-pixel centres), then nearest, each followed by a 1x1 conv
            u2 = self.up2(F.interpolate(m, scale_factor=2, mode="bilinear"))
            u2 = self.dec2(torch.cat([u2, d2], dim=1))
            u1 = self.up1(F.interpolate(u2, size=d1.shape[2:], mode="nearest"))
        return self.out(self.dec1(torch.cat([u1, d1], dim=1)))


@pytest.mark.parametrize("upsample", ["transposed", "interpolate"])
def test_unet(upsample: str) -> None:
    torch.manual_seed(1)
    model = UNet(upsample=upsample)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    # any height and width that two 2x2 max-pools divide: 4 * a dynamic dim each
    h, w = Dim("h", min=2, max=6), Dim("w", min=2, max=6)
    check_model(model, (torch.randn(2, 3, 16, 12),), ({0: BATCH, 2: 4 * h, 3: 4 * w},),
                others=((torch.randn(3, 3, 8, 24),), (torch.randn(1, 3, 8, 8),)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c, r, 1)
        self.expand = nn.Conv2d(r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int, act: type[nn.Module]) -> None:
        super().__init__()
        hid = cin * expand
        self.residual = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), act())
        self.dw = nn.Sequential(nn.Conv2d(hid, hid, k, stride, k // 2, groups=hid, bias=False), nn.BatchNorm2d(hid), act())
        self.se = SqueezeExcite(hid, max(1, cin // 4))
        self.project = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class EfficientNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 16, 1, 3, 1, nn.SiLU), MBConv(16, 24, 4, 5, 2, nn.Hardswish),
                                    MBConv(24, 24, 4, 3, 1, nn.Hardswish))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_efficientnet_mbconv_squeeze_excitation() -> None:
    torch.manual_seed(2)
    model = EfficientNetish()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    check_model(model, (torch.randn(2, 3, 16, 16),), ({0: BATCH},), others=((torch.randn(1, 3, 16, 16),),))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


def test_resnet_blocks_with_downsample() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(3, 2, 1), BasicBlock(8, 8, 1), BasicBlock(8, 16, 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    check_model(model, (torch.randn(2, 3, 16, 16),), ({0: BATCH},), others=((torch.randn(4, 3, 16, 16),),))


class YoloHead(nn.Module):
    def __init__(self, c: int = 16, anchors: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.a, self.nc = anchors, classes
        self.backbone = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.SiLU(), nn.Conv2d(c, c, 3, 2, 1), nn.SiLU())
        self.lateral = nn.Conv2d(c, c, 1)
        self.pred = nn.Conv2d(2 * c, anchors * (5 + classes), 1)
        self.register_buffer("anchor_wh", torch.tensor([[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        p = self.pred(torch.cat([f, self.lateral(f)], 1))
        b, _, h, w = p.shape
        p = p.view(b, self.a, 5 + self.nc, h, w).permute(0, 1, 3, 4, 2).contiguous()
        xy, wh, rest = p.split([2, 2, 1 + self.nc], dim=-1)
        obj, cls = rest.sigmoid().chunk(2, dim=-1)[0], rest[..., 1:].sigmoid()
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2).to(p.dtype)
        xy = (xy.sigmoid() * 2 - 0.5 + grid) * 4.0
        wh = (wh.sigmoid() * 2) ** 2 * self.anchor_wh.view(1, self.a, 1, 1, 2)
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(b, -1, 4)
        return boxes, obj.reshape(b, -1), cls.reshape(b, -1, self.nc)


def test_yolo_head() -> None:
    torch.manual_seed(4)
    check_model(YoloHead(), (torch.randn(2, 3, 32, 32),), ({0: BATCH},), others=((torch.randn(1, 3, 32, 32),),))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-1, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.rand(dim) + 0.05)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        if self.training and self.drop_path > 0:  # stochastic depth: off in eval
            keep = torch.rand(x.shape[0], 1, 1, 1) >= self.drop_path
            y = y * keep / (1 - self.drop_path)
        return x + y.permute(0, 3, 1, 2)


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.rand(dim) + 0.5), nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def test_convnext() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 16, 4, 4), ChannelsFirstLayerNorm(16), ConvNeXtBlock(16, drop_path=0.1),
                          ChannelsFirstLayerNorm(16), nn.Conv2d(16, 32, 2, 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(32), nn.Linear(32, 10))
    side = Dim("side", min=2, max=8)  # the image side a multiple of 8 (patchify 4, downsample 2)
    prog = check_model(model, (torch.randn(2, 3, 16, 16),), ({0: BATCH, 2: 8 * side, 3: 8 * side},),
                       others=((torch.randn(1, 3, 24, 24),),))
    assert prog.summary()["methods"]["forward"]["symbols"] == {"batch": (1, 8), "side": (2, 8)}
    with pytest.raises(ProgramError, match=r"dim 2 = 44 is not of the exported form \['\*', 8, 'side'\]"):
        prog.run(np.zeros((1, 3, 44, 44), np.float32))
    with pytest.raises(ProgramError, match=r"dim 2 = 72 is outside the planned range \[2, 8\] of 'side'"):
        prog.run(np.zeros((1, 3, 72, 72), np.float32))


def test_int8_weights_within_the_zoo_bound() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(BasicBlock(3, 8, 1), BasicBlock(8, 16, 2), nn.Flatten(), nn.Linear(16 * 8 * 8, 5)).eval()
    x = torch.randn(2, 3, 16, 16)
    q = export(model, (x,), dynamic_shapes=({0: BATCH},), quantize="int8")
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    got = q.run(x.numpy())
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert 1e-6 < err <= 2e-2, err  # really quantised, within the bound the zoo tests hold
    assert float(q.metadata["int8_max_rel_err.forward"]) == pytest.approx(err, rel=0.05, abs=1e-6)
    assert "dequantize" in q.summary()["methods"]["forward"]["ops"]
