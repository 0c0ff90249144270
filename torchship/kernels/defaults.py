"""The default config of a kernel: simple, measured heuristics instead of a search.

:meth:`ConfigSpace.default` is what runs when autotuning is off (effort ``none``), the
baseline every candidate is checked against, and the search's first seed, so it must always
be valid and should be reasonable on the device at hand:

- dot launches: 128-wide output tiles (64 for 4-byte operands) over a 64-deep reduction
  block, 3 stages; a plain bf16/fp16 matmul with at least two waves of wide tiles on an H100
  widens its last output dim to 256 (measured below);
- row-wise work (a full ``:`` dim or an inner loop): one row per program on GPU;
- element-wise grids: 1024 (1-D) or 64 x 64 blocks;
- a tensor read twice without a dot (two-pass softmax): its last read ``evict_first``
  (on an H100, two-pass softmax 8192^2 bf16 107.5 -> 99.4 µs, 4096^2 26.4 -> 25.6 µs);
- warps from the largest block (<= 4096 elements: 4, <= 16384 or a dot: 8, else 16), after
  shrinking blocks and stages until the element and shared-memory budgets hold.

Example:
    >>> from torchship.kernels.config import ConfigSpace
    >>> from torchship.kernels.specs import BlockParamSpec, LaunchSpec
    >>> space = ConfigSpace([BlockParamSpec("t", 1, 4096, 10**6)], [LaunchSpec(1, [0])],
    ...                     device="cuda")
    >>> default_choice(space)["block_sizes[0]"]
    1024
"""

from __future__ import annotations

import math
from typing import Any

from torchship.kernels.config import _next_pow2

# two waves of programs on a 132-SM H100: below this a 128x256 grid leaves SMs idle
_WIDE_TILES_MIN = 264


def default_choice(space: Any) -> dict[str, Any]:
    """The default knob values of ``space`` (a :class:`ConfigSpace`), as its choice dict.

    Example:
        >>> from torchship.kernels.config import ConfigSpace
        >>> from torchship.kernels.specs import LaunchSpec
        >>> default_choice(ConfigSpace([], [LaunchSpec(1)]))["num_warps"]
        4
    """
    gpu = space.device == "cuda"
    choice: dict[str, Any] = {k: v[0] for k, v in space.params.items()}
    for i, red in enumerate(space.reductions):
        opts = space.params[f"reduction_loops[{i}]"]
        limit = 16384 if gpu else 2048
        if _next_pow2(red.size) > limit and len(opts) > 1:
            choice[f"reduction_loops[{i}]"] = max(o for o in opts if o is not None)
    has_red = {li for li, la in enumerate(space.launches) if la.has_full_dim}
    has_dot = {li for li, la in enumerate(space.launches) if la.has_dot}
    for i, bp in enumerate(space.block_params):
        opts = space.params[f"block_sizes[{i}]"]
        users = [li for li, la in enumerate(space.launches) if i in la.block_params]
        if bp.in_dot or any(li in has_dot for li in users):
            want = (128 if bp.grid else 64) if gpu else 32
            if any(space.launches[li].dot_itemsize >= 4 for li in users) and gpu:
                want = 64 if bp.grid else 32
        elif bp.dot_batch:
            want = 1
        elif any(li in has_red or space.launches[li].inner_loops for li in users) and bp.grid:
            want = 1 if gpu else 16
        elif not bp.grid:
            want = 2048 if gpu else 32
        else:
            ndims = max((space.launches[li].grid_dims for li in users), default=1)
            want = (1024 if ndims == 1 else 64) if gpu else 64
        choice[f"block_sizes[{i}]"] = min(opts, key=lambda o: (abs(math.log2(o / want)), o))
    for name in space.params:
        if name.startswith("loop_orders"):
            choice[name] = space.params[name][0]
    choice["l2_grouping"] = 8 if (gpu and 8 in space.params["l2_grouping"]) else 1
    choice["num_stages"] = 3 if gpu and has_dot else 2 if gpu else 1
    if "stream" in space.params["load_eviction"] and not has_dot:
        choice["load_eviction"] = "stream"  # a two-pass kernel's last read is not reused
    if gpu:
        _widen_large_matmul(space, choice)
    while space._smem_problem(choice) and choice["num_stages"] > 1:
        choice["num_stages"] -= 1
    # num_warps is chosen below from the final blocks (<= 128 values per thread), so the
    # per-thread rule is not what shrinks the blocks here
    while space._budget_problem(choice, threads=False):
        # shrink the largest block parameter until the biggest value fits
        sizes = [(choice[f"block_sizes[{i}]"], i) for i in range(len(space.block_params))]
        rolls = [
            i for i in range(len(space.reductions))
            if choice[f"reduction_loops[{i}]"] is None
            and len(space.params[f"reduction_loops[{i}]"]) > 1
        ]
        if rolls:
            opts = [o for o in space.params[f"reduction_loops[{rolls[0]}]"] if o]
            choice[f"reduction_loops[{rolls[0]}]"] = max(opts)
            continue
        big = max(sizes, default=None)
        opts = space.params[f"block_sizes[{big[1]}]"] if big else []
        if big is None or big[0] == opts[0]:
            break
        choice[f"block_sizes[{big[1]}]"] = big[0] // 2
    elems = space._largest_block(choice)
    if gpu:
        # 128x64 flash attention (a dot fused with a whole-row dim) takes 8 warps by this rule
        # too: 323 µs vs 345 at 4 warps, 4x32x2048x64 bf16 on an H100 (2026-11-27)
        choice["num_warps"] = 4 if elems <= 4096 else 8 if elems <= 16384 or has_dot else 16
        streaming = any(la.inner_loops and not la.has_dot for la in space.launches)
        if streaming and 2048 <= elems <= 4096:
            # rows streamed through inner loops in 2048-element chunks (online softmax):
            # 8 warps measured 112 µs vs 4 warps 135 µs on H100 (8192² bf16)
            choice["num_warps"] = 8
    else:
        choice["num_warps"] = 4
    return choice


def _widen_large_matmul(space: Any, choice: dict[str, Any]) -> None:
    """A plain 2-byte matmul (a dot launch with no whole-row dim) whose output still has two
    waves of programs at 128x256 tiles (a bmm's batch counts) gets them: on an H100 (bf16,
    2026-11-27 suite run) 128x256x64 on 8 warps took 215 µs vs 227 for 128x128 at 4096³, 204
    vs 229 with a bias+relu epilogue, 904 vs 1003 for a 32x2048² bmm; timed alternately in a
    later check, 188 vs 224 µs at 4096³ (torch.mm 194). Smaller grids keep 128x128."""
    for launch in space.launches:
        if not launch.has_dot or launch.has_full_dim or launch.dot_itemsize > 2:
            continue
        grid = [i for i in launch.block_params if i >= 0]
        dims = [i for i in grid if space.block_params[i].in_dot]
        if len(dims) < 2 or any(choice[f"block_sizes[{i}]"] != 128 for i in dims[-2:]):
            continue
        last = dims[-1]
        if 256 not in space.params[f"block_sizes[{last}]"]:
            continue
        tiles = launch.fixed_programs
        for i in grid:
            block = 256 if i == last else choice[f"block_sizes[{i}]"]
            tiles *= -(-space.block_params[i].extent // block)
        if tiles >= _WIDE_TILES_MIN:
            choice[f"block_sizes[{last}]"] = 256
