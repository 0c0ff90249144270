"""ATen -> core op handlers, part 7: real-input FFTs as DFT matrix products.

``torch.fft.rfft`` / ``fft`` of a real tensor and ``torch.stft`` (frames, window, then
``aten._fft_r2c``) export as two ``matmul``s of the signal with constant cosine and sine
matrices ``[n, bins]`` along the transformed axis, giving the complex result as a (real,
imaginary) pair (see :mod:`torchship.edge.lower_complex`). The length must be static. This
is O(n · bins) per transform instead of O(n log n), which for spectrogram front ends (n of a
few hundred, many frames) is a single well-shaped BLAS call per part.

Example:
    >>> from torchship.edge.lower import COMPLEX_HANDLERS
    >>> import torchship.edge.lower_fft  # registers
    >>> torch.ops.aten._fft_r2c.default in COMPLEX_HANDLERS
    True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from torchship.edge.lower import Lowering, handles
from torchship.edge.lower_complex import _Parts

aten = torch.ops.aten
Node = torch.fx.Node


@handles(aten._fft_r2c.default, complex_values=True)
def _fft_r2c(lw: Lowering, node: Node) -> int:
    """``X[k] = Σ_t x[t] e^{-2πi kt/n}`` along one static axis (``onesided``: the first
    ``n // 2 + 1`` bins), scaled by ``1``, ``1/√n`` or ``1/n`` (torch's norm codes 0, 1, 2)."""
    dims, norm, onesided = node.args[1], int(node.args[2]), bool(node.args[3])
    if len(dims) != 1:
        raise lw.fail(f"an FFT over {len(dims)} dims is not supported (one dim is)")
    pp = _Parts(lw, node)
    e = pp.e
    x = lw.tensor(node.args[0], e.dt)
    xs = lw.shape_of(x)
    axis = int(dims[0]) % len(xs)
    n = xs[axis]
    if not isinstance(n, int):
        raise lw.fail("an FFT along a dynamic dimension is not supported (the length must be "
                      "static)")
    bins = n // 2 + 1 if onesided else n
    scale = {0: 1.0, 1: 1.0 / math.sqrt(n), 2: 1.0 / n}[norm]
    last = len(xs) - 1
    perm = [d for d in range(len(xs)) if d != axis] + [axis]
    if axis != last:
        x = e("permute", [x], [xs[p] for p in perm], {"perm": perm})
    cos, sin = _dft_matrices(n, bins)
    np_dt = np.float32 if e.dt == "F32" else np.float64
    rows = lw.shape_of(x)[:-1] + [bins]
    back = [perm.index(d) for d in range(len(xs))]  # the bins back on the transformed axis
    parts = []
    for k, mat in enumerate((cos * scale, (0.0 - sin) * scale)):  # 0 - sin: no -0.0
        w = lw.g.add_const(f"{lw.g.name}.dft{k}", mat.astype(np_dt))
        part = e("matmul", [x, w], rows)
        if axis != last:
            part = e("permute", [part], [rows[p] for p in back], {"perm": back})
        shape = lw.shape_of(part) + [1]
        parts.append(e("reshape", [part], shape, {"shape": shape}))
    return pp.join(*parts)


def _dft_matrices(n: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of ``2π t k / n`` for ``t < n``, ``k < bins``, from ``t k mod n``
    (accurate for long signals) with quarter turns exact, so the imaginary parts of the DC and
    Nyquist bins come out exactly zero as in torch (their phase is then 0 or π, not ±π noise).

    Example:
        >>> c, s = _dft_matrices(4, 3)
        >>> s[:, 2].tolist(), c[:, 2].tolist()
        ([0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0])
    """
    turns = np.outer(np.arange(n), np.arange(bins)) % n
    angle = 2.0 * np.pi * turns / n
    cos, sin = np.cos(angle), np.sin(angle)
    quarter = (turns * 4) % n == 0
    q = (turns * 4 // n) % 4
    cos[quarter] = np.array([1.0, 0.0, -1.0, 0.0])[q[quarter]]
    sin[quarter] = np.array([0.0, 1.0, 0.0, -1.0])[q[quarter]]
    return cos, sin
