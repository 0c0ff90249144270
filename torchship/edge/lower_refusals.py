"""Ops a program cannot have, refused with what to write instead (rather than the generic
"not in the core op set"): random sampling (a program is deterministic: pass the noise in),
``.item()`` (a tensor value read into Python: keep it a tensor) and ops whose result length depends
on the data (``masked_select``, ``nonzero``, ``unique``, ``bincount``: keep the shape with ``where``),
and sparse tensors (a graph network's sparse adjacency: ``index_add`` over the edges instead).

Example:
    >>> import torchship.edge.lower_refusals  # registers the handlers
    >>> from torchship.edge.lower import HANDLERS
    >>> torch.ops.aten.randn_like.default in HANDLERS
    True
"""

from __future__ import annotations

import torch

from torchship.edge.lower import Lowering, handles

aten = torch.ops.aten
Node = torch.fx.Node

_RANDOM = [getattr(aten, name).default for name in (
    "rand", "randn", "rand_like", "randn_like", "randint_like", "bernoulli", "multinomial",
    "native_dropout", "normal_functional", "uniform", "exponential", "randperm",
) if hasattr(aten, name) and hasattr(getattr(aten, name), "default")]
_RANDOM += [op for op in (getattr(aten.randint, "default", None), getattr(aten.randint, "low", None),
                          getattr(aten.bernoulli, "p", None)) if op is not None]


@handles(*_RANDOM)
def _random(lw: Lowering, node: Node) -> int:
    raise lw.fail(f"random sampling ({node.target}) is not supported: a program is deterministic. Pass the "
                  "noise as an input (eps = torch.randn_like(mu) outside the model), and export in eval mode "
                  "so dropout is off")


@handles(aten._local_scalar_dense.default)
def _item(lw: Lowering, node: Node) -> int:
    raise lw.fail(".item() / float(t) / int(t) reads a tensor value into Python, which the program cannot; "
                  "keep the value a tensor (x * t.max() instead of x * t.max().item())")


_DATA_SIZED = [op for op in (aten.masked_select.default, aten.nonzero.default, aten._unique2.default,
                             getattr(aten, "unique_dim", None) and aten.unique_dim.default,
                             getattr(aten, "unique_consecutive", None) and aten.unique_consecutive.default,
                             aten.bincount.default)
               if op]


@handles(*_DATA_SIZED)
def _data_sized(lw: Lowering, node: Node) -> int:
    raise lw.fail(f"{node.target} gives a result whose length depends on the tensor's values, which a program "
                  "with planned memory cannot have. Keep the shape: torch.where(mask, x, fill) or x * mask "
                  "instead of x[mask] / masked_select, a fixed count of positions with "
                  "torch.topk(mask.float(), k) instead of nonzero, or "
                  "torch.zeros(n).scatter_add(0, x, torch.ones_like(x, dtype=torch.float)) for a bincount of n bins")


_SPARSE = [getattr(getattr(aten, name), overload) for name, overload in (
    ("_sparse_coo_tensor_with_dims_and_tensors", "default"), ("_sparse_csr_tensor_unsafe", "default"),
    ("_sparse_compressed_tensor_unsafe", "default"), ("to_sparse", "default"), ("to_sparse", "sparse_dim"),
    ("_to_sparse", "default"), ("_to_sparse", "sparse_dim"),
) if hasattr(getattr(aten, name, None), overload)]


@handles(*_SPARSE)
def _sparse(lw: Lowering, node: Node) -> int:
    raise lw.fail(f"sparse tensors ({node.target}) are not supported: a program holds dense tensors. For the "
                  "product of a sparse adjacency A (indices edge_index = (row, col), values w) with node "
                  "features h, sum the messages per row: torch.zeros_like(h).index_add_(0, row, w[:, None] * h[col]); "
                  "a small dense A also works: torch.zeros(n, n).index_put_((row, col), w, accumulate=True) @ h")
