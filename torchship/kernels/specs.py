"""What the compiler derives from a kernel's IR to build its :class:`~torchship.kernels.config.ConfigSpace`:
the tunable block sizes, the full (``:``) dimensions that may become looped reductions, and
per device launch the shapes of its values (for the register and shared-memory budgets).

Example:
    >>> LaunchSpec(1, [0], [(("B", 0), ("R", 0))]).has_full_dim
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BlockParamSpec:
    """One tunable block size: bounds, the largest extent it tiles, and whether a ``tl.dot``
    uses it (then it must be >= 16)."""

    name: str
    lo: int
    hi: int
    extent: int
    in_dot: bool = False
    grid: bool = True  # tiles a launch grid dimension (else an inner device loop)
    dot_batch: bool = False  # the batch dim of a 3-D dot: one batch element per program


@dataclass
class ReductionSpec:
    """A full (``:``) dimension: its size when bound and whether it can be a looped reduction."""

    name: str
    size: int
    rollable: bool
    in_dot: bool = False


@dataclass
class LaunchSpec:
    """One device launch: its grid dims, the block params and full dims its values combine."""

    grid_dims: int
    block_params: list[int] = field(default_factory=list)  # per grid dim (-1 = fixed)
    value_shapes: list[tuple[tuple[str, int], ...]] = field(default_factory=list)
    has_dot: bool = False
    dot_itemsize: int = 2
    # loads as (shape keys, itemsize, inside an inner loop): for the shared-memory estimate
    loads: list[tuple[tuple[tuple[str, int], ...], int, bool]] = field(default_factory=list)
    inner_loops: bool = False
    fixed_programs: int = 1  # programs along grid dims with a fixed block (a bmm's batch)
    rereads: bool = False  # a tensor is loaded at more than one place (two-pass kernels)
    byte_dots: bool = False  # a dot of 1-byte operands (int8, fp8): its blocks are >= 32

    @property
    def has_full_dim(self) -> bool:
        """Whether a value of this launch holds a whole (``:``) dimension."""
        return any(k == "R" for shape in self.value_shapes for k, _ in shape)


@dataclass
class BlockRegistry:
    """Block-size parameters of a bound kernel, in order of first appearance.

    Keys: ``("sym", i)`` for ``register_block_size`` symbols, ``(site, n)`` for the n-th
    anonymous tile dimension of a site.

    Example:
        >>> r = BlockRegistry(); r.get(("sym", 0), "tm", 1, 4096, 100, True)
        0
        >>> r.params[0].extent
        100
    """

    params: list[BlockParamSpec] = field(default_factory=list)
    keys: dict[Any, int] = field(default_factory=dict)

    def get(self, key: Any, name: str, lo: int, hi: int, extent: int, grid: bool) -> int:
        if key not in self.keys:
            self.keys[key] = len(self.params)
            self.params.append(BlockParamSpec(name, lo, hi, max(extent, 1), False, grid))
        idx = self.keys[key]
        p = self.params[idx]
        p.extent = max(p.extent, extent)
        return idx
