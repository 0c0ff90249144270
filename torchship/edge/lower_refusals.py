"""Ops a program cannot have, refused with what to write instead (rather than the generic
"not in the core op set"): random sampling (a program is deterministic: pass the noise in) and
``.item()`` (a tensor value read into Python: keep it a tensor).

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
