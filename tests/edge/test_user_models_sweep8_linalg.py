"""Small batched linear algebra a user exports (``torch.linalg.inv``, ``det``, ``slogdet``,
``solve``, ``cholesky``, ``solve_triangular``, ``cholesky_solve``): a Glow-style normalising
flow, a Kalman filter step and a Gaussian process, exported with dynamic batches and run by the
numpy runtime against eager torch in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.edge.test_ops import Fn
from tests.edge.test_user_models_vision import check_model
from torchship.edge import ExportError, export

BATCH = Dim("batch", min=1, max=8)


class InvertibleFlow(nn.Module):
    """Glow's invertible 1x1 convolution and an affine coupling: the log-determinant of the
    channel mixing (``slogdet``) and the inverse pass (``inv``)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(c, c))
        self.w = nn.Parameter(q + 0.3 * torch.randn(c, c))
        self.net = nn.Sequential(nn.Linear(c // 2, 8), nn.Tanh(), nn.Linear(8, c))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = x @ self.w.T
        a, b = z.chunk(2, dim=-1)
        log_s, t = self.net(a).chunk(2, dim=-1)
        y = torch.cat([a, b * log_s.exp() + t], dim=-1)
        logdet = torch.linalg.slogdet(self.w).logabsdet + log_s.sum(-1)
        back = z @ torch.linalg.inv(self.w).T  # the inverse of the mixing recovers x
        return y, logdet, back


class KalmanStep(nn.Module):
    """One predict + update step of a linear Kalman filter over a batch of tracks: the gain
    from ``solve`` (S K^T = H P^T), the innovation's Gaussian log-likelihood from ``det``."""

    def __init__(self, n: int = 4, m: int = 2) -> None:
        super().__init__()
        self.register_buffer("F", torch.eye(n) + 0.1 * torch.randn(n, n))
        self.register_buffer("H", torch.randn(m, n))
        self.register_buffer("Q", 0.05 * torch.eye(n))
        self.register_buffer("R", 0.2 * torch.eye(m))

    def forward(self, x: torch.Tensor, P: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x @ self.F.T
        P = self.F @ P @ self.F.T + self.Q
        S = self.H @ P @ self.H.T + self.R
        K = torch.linalg.solve(S, self.H @ P).mT
        r = z - x @ self.H.T
        x = x + (K @ r.unsqueeze(-1)).squeeze(-1)
        P = P - K @ self.H @ P
        nll = 0.5 * (r * torch.linalg.solve(S, r)).sum(-1) + 0.5 * torch.log(torch.linalg.det(S))
        return x, P, nll


def test_glow_flow_with_slogdet_and_inverse() -> None:
    torch.manual_seed(80)
    check_model(InvertibleFlow(), (torch.randn(3, 4),), ({0: BATCH},), others=((torch.randn(5, 4),),))


def test_kalman_filter_step_with_solve_and_det() -> None:
    torch.manual_seed(81)
    def inputs(b: int) -> tuple[torch.Tensor, ...]:
        root = torch.randn(b, 4, 4)
        return torch.randn(b, 4), root @ root.mT / 4 + torch.eye(4), torch.randn(b, 2)
    check_model(KalmanStep(), inputs(3), ({0: BATCH}, {0: BATCH}, {0: BATCH}), others=(inputs(6),))


@pytest.mark.parametrize("n", [1, 4])
def test_inv_det_slogdet_solve_match_float64(n: int) -> None:
    torch.manual_seed(n)
    a = torch.randn(2, 3, n, n) + n * torch.eye(n)
    a[0, 0] = a[0, 0].flip(0)  # needs a row swap: a zero-free but badly ordered diagonal
    b = torch.randn(2, 3, n, 2)
    fns = [lambda m, r: torch.linalg.inv(m), lambda m, r: torch.linalg.det(m),
           lambda m, r: tuple(torch.linalg.slogdet(m)), lambda m, r: torch.linalg.solve(m, r),
           lambda m, r: torch.linalg.solve(m, r[..., 0]), lambda m, r: torch.linalg.solve(m, r.mT, left=False),
           lambda m, r: torch.linalg.solve(m[0, 0], r), lambda m, r: torch.inverse(m) @ r]
    for fn in fns:
        got = export(Fn(fn).eval(), (a, b)).run(a.numpy(), b.numpy())
        ref = fn(a.double(), b.double())
        for g, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
            assert g.dtype == np.float32 and g.shape == r.shape
            assert np.abs(g - r.numpy()).max() / np.abs(r.numpy()).max() <= 1e-6


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log")
def test_singular_matrices_det_zero_and_float64_program() -> None:
    sing = torch.tensor([[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]], [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    det = export(Fn(torch.linalg.det).eval(), (sing,)).run(sing.numpy())
    np.testing.assert_allclose(det, torch.linalg.det(sing.double()).numpy(), atol=1e-7)
    sign, logabs = export(Fn(lambda m: tuple(torch.linalg.slogdet(m))).eval(), (sing,)).run(sing.numpy())
    ref_sign, ref_logabs = torch.linalg.slogdet(sing.double())
    np.testing.assert_array_equal(sign, ref_sign.numpy())
    assert logabs[0] == -np.inf and abs(logabs[1] - ref_logabs[1].item()) < 1e-7
    a = torch.randn(3, 3, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    got = export(Fn(torch.linalg.inv).eval(), (a,)).run(a.numpy())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, torch.linalg.inv(a).numpy(), rtol=1e-12, atol=1e-13)


class GaussianProcess(nn.Module):
    """Exact GP regression at fixed training points: the posterior mean and variance at a dynamic
    number of query points (``cholesky``, ``cholesky_solve``, ``solve_triangular``), and the
    log-likelihood of observations under a ``MultivariateNormal`` (validation off: its argument
    checks are data-dependent)."""

    def __init__(self, n: int = 6) -> None:
        super().__init__()
        self.register_buffer("x", torch.randn(n, 2))
        self.register_buffer("y", torch.randn(n, 1))
        self.log_scale = nn.Parameter(torch.tensor(0.3))

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * torch.cdist(a, b) ** 2 / self.log_scale.exp() ** 2)

    def forward(self, q: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.kernel(self.x, self.x) + 0.1 * torch.eye(self.x.shape[0])
        chol = torch.linalg.cholesky(k)
        ks = self.kernel(q, self.x)
        mean = ks @ torch.cholesky_solve(self.y, chol)
        v = torch.linalg.solve_triangular(chol, ks.T, upper=False)
        var = 1.0 - (v * v).sum(0)
        dist = torch.distributions.MultivariateNormal(torch.zeros(self.x.shape[0]), scale_tril=chol, validate_args=False)
        return mean.squeeze(-1), var, dist.log_prob(obs)


def test_gaussian_process_posterior_with_cholesky() -> None:
    torch.manual_seed(82)
    queries, batch = Dim("queries", min=2, max=24), Dim("batch", min=1, max=8)  # (cdist switches method at 25)
    check_model(GaussianProcess(), (torch.randn(5, 2), torch.randn(3, 6)), ({0: queries}, {0: batch}),
                others=((torch.randn(11, 2), torch.randn(1, 6)),))


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_and_triangular_solves_match_float64(upper: bool) -> None:
    torch.manual_seed(83)
    root = torch.randn(2, 4, 4)
    spd = root @ root.mT + torch.eye(4)
    b = torch.randn(2, 4, 3)
    fns = [lambda a, r: torch.linalg.cholesky(a, upper=upper),
           lambda a, r: torch.linalg.solve_triangular(torch.linalg.cholesky(a, upper=upper), r, upper=upper),
           lambda a, r: torch.linalg.solve_triangular(a.tril() if not upper else a.triu(), r.mT, upper=upper,
                                                      left=False, unitriangular=True),
           lambda a, r: torch.cholesky_solve(r, torch.linalg.cholesky(a, upper=upper), upper=upper),
           lambda a, r: torch.cholesky_inverse(torch.linalg.cholesky(a[0], upper=upper), upper=upper)]
    for fn in fns:
        got = export(Fn(fn).eval(), (spd, b)).run(spd.numpy(), b.numpy())
        ref = fn(spd.double(), b.double()).numpy()
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-6


class OrthogonalMixer(nn.Module):
    """Orthogonal weights from ``nn.utils.parametrizations.orthogonal`` (``matrix_exp`` for the
    square one, ``householder_product`` for the tall one: ops with no lowering, computed from
    the parameters only, so evaluated by torch at export) and a ``matrix_exp`` of an input,
    which stays refused."""

    def __init__(self) -> None:
        super().__init__()
        self.square = nn.utils.parametrizations.orthogonal(nn.Linear(6, 6))
        self.tall = nn.utils.parametrizations.orthogonal(nn.Linear(6, 9, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tall(torch.tanh(self.square(x)))


def test_orthogonal_parametrizations_are_evaluated_at_export() -> None:
    torch.manual_seed(84)
    check_model(OrthogonalMixer(), (torch.randn(3, 6),), ({0: BATCH},), others=((torch.randn(5, 6),),))
    with pytest.raises(ExportError, match="linalg_matrix_exp.default is not supported"):
        export(Fn(torch.linalg.matrix_exp).eval(), (torch.randn(3, 3),))


class Inverse(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(a)


def test_a_dynamic_matrix_size_is_refused() -> None:
    n = Dim("n", min=2, max=8)
    with pytest.raises(ExportError, match="must be static"):
        export(Inverse(), (torch.eye(3),), dynamic_shapes=({0: n, 1: n},))
