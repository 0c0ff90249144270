"""Real-input FFTs (``torch.fft.rfft``/``fft``, ``torch.stft``) as DFT matrix products: export +
numpy runtime against torch eager in float64, for odd and even lengths, every norm, a
non-last axis, two-sided spectra, and a log-mel spectrogram front end as audio models write
it; an FFT along a dynamic length is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from torchship.edge import ExportError, export


class Spectrum(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _check(fn, x: torch.Tensor, tol: float = 2e-6) -> None:
    got = export(Spectrum(fn).eval(), (x,)).run(x).astype(np.float64)
    want = fn(x.double()).numpy()
    assert np.abs(got - want).max() <= tol * max(np.abs(want).max(), 1.0)


@pytest.mark.parametrize("n", [16, 17, 50])
@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
def test_rfft_parts(n: int, norm: str) -> None:
    x = torch.randn(3, n)
    _check(lambda x: torch.view_as_real(torch.fft.rfft(x, norm=norm)), x)


def test_two_sided_fft_of_real_input_on_another_axis() -> None:
    x = torch.randn(12, 5)
    _check(lambda x: torch.view_as_real(torch.fft.fft(x, dim=0)), x)
    _check(lambda x: torch.fft.rfft(x, dim=0).abs(), x)


def test_log_mel_spectrogram_front_end() -> None:
    """Whisper-style: stft with a Hann window and centre padding, power, mel projection, log."""
    torch.manual_seed(0)
    mel = torch.rand(20, 65)  # a made-up filterbank: [n_mels, n_fft // 2 + 1]
    window = torch.hann_window(128)

    def front(x: torch.Tensor) -> torch.Tensor:
        s = torch.stft(x, 128, hop_length=32, window=window.to(x.dtype), return_complex=True)
        power = s.real ** 2 + s.imag ** 2
        return torch.log10(torch.clamp(mel.to(x.dtype) @ power, min=1e-10))

    _check(front, torch.randn(2, 800), tol=2e-5)


def test_fft_along_a_dynamic_length_is_refused() -> None:
    model = Spectrum(lambda x: torch.fft.rfft(x).abs()).eval()
    with pytest.raises(ExportError, match="dynamic dimension"):
        export(model, (torch.randn(2, 32),), dynamic_shapes=({1: Dim("n", min=4, max=64)},))


def test_phase_spectrum_and_atan2() -> None:
    """``torch.angle`` of a spectrum (``atan2`` of the parts: the DC and Nyquist bins' zero
    imaginary parts are exact, so their phase is 0 or π as in torch) and ``torch.atan2``."""
    x = torch.randn(3, 16)
    x[0] -= 10.0  # a negative DC bin: phase π
    _check(lambda x: torch.angle(torch.fft.rfft(x)), x)
    y = torch.tensor([[0.0, -0.0, 1.0, -1.0, float("inf"), 2.0, float("nan"), -3.0]])
    model = Spectrum(lambda y: torch.atan2(y, y.flip(-1))).eval()
    got = export(model, (y,)).run(y)
    np.testing.assert_allclose(got, model(y.double()).numpy(), rtol=1e-6, atol=1e-7)
