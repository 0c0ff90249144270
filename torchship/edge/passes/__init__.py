"""Graph passes run by ``torchship.edge.export`` in this order (see ``run_passes``):

1. ``cleanup.simplify``: identity views/casts/expands removed, reshape chains collapsed
2. ``fold.constant_fold``: instructions whose inputs are all constants are evaluated once
3. ``fold.fold_affine``: per-channel ``mul``/``add`` after conv2d/linear (batch norm) folded in
4. ``fuse.fuse_activations``: single-use relu/clamp after linear/conv2d/add folded into the
   producer's ``clamp_min``/``clamp_max``
5. ``attention.fuse_attention``: float32 multi-head attention cores (per-head reshape/permute
   views -> q @ k^T * scale [+ bias] -> softmax -> @ v -> permute/reshape back) become one
   ``attention`` op reading the packed q/k/v tensors (no per-head copies)
6. ``mbconv.fuse_mbconv`` (float programs only): float32 1x1 expand -> depthwise -> 1x1 project
   [-> residual add] chains become one ``fused_mbconv`` (no hidden maps in the arena)
7. ``quantize`` (optional): int8 weight-only linear/conv2d; float linear weights stored [K, N]
8. ``cleanup.dce``: unused instructions and constants removed
9. ``memory.plan``: lifetimes and best-fit offsets in one 64-byte aligned arena

Example:
    >>> from torchship.edge.passes import run_passes  # doctest: +SKIP
"""

from __future__ import annotations

from torchship.edge.graph import Graph
from torchship.edge.passes.attention import fuse_attention
from torchship.edge.passes.cleanup import dce, simplify
from torchship.edge.passes.fold import constant_fold, fold_affine
from torchship.edge.passes.fuse import fuse_activations
from torchship.edge.passes.mbconv import fuse_mbconv
from torchship.edge.passes.memory import MemoryPlan, plan
from torchship.edge.passes.quantize import quantize_int8, transpose_linear_weights


def run_passes(graph: Graph, quantize: str | None = None) -> MemoryPlan:
    """Run the whole pipeline on ``graph`` in place and return its memory plan.

    Example:
        >>> # plan = run_passes(graph, quantize="int8")
    """
    simplify(graph)
    constant_fold(graph)
    fold_affine(graph)
    simplify(graph)
    dce(graph)
    fuse_activations(graph)
    fuse_attention(graph)
    if quantize is None:
        fuse_mbconv(graph)
    if quantize == "int8":
        quantize_int8(graph)
    elif quantize is not None:
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    transpose_linear_weights(graph)
    dce(graph)
    return plan(graph)


__all__ = ["MemoryPlan", "constant_fold", "dce", "fold_affine", "fuse_activations", "fuse_attention", "fuse_mbconv", "plan", "quantize_int8", "run_passes", "transpose_linear_weights", "simplify"]
