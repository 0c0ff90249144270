"""Memory planning on random graphs: the plan is always valid (the loader re-checks it), reuses
memory, and the program computes the same as a straightforward numpy evaluation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from torchship.edge.graph import Graph
from torchship.edge.passes import run_passes
from torchship.edge.program import Program
from torchship.edge.runtime import loads


@st.composite
def graphs(draw):
    n_ops = draw(st.integers(2, 25))
    sizes = [draw(st.sampled_from([1, 3, 16, 64, 257, 1024])) for _ in range(3)]
    g = Graph("forward")
    inputs = [g.add_input(f"x{i}", "F32", [s]) for i, s in enumerate(sizes)]
    pool = list(inputs)
    exprs = []
    for _ in range(n_ops):
        op = draw(st.sampled_from(["add", "mul", "neg", "relu", "tanh", "reshape"]))
        a = draw(st.sampled_from(pool))
        size = g.values[a].shape[0]
        if op in ("add", "mul"):
            same = [v for v in pool if g.values[v].shape == [size]]
            b = draw(st.sampled_from(same))
            out = g.emit(op, [a, b], "F32", [size])
            exprs.append((out, op, (a, b)))
        elif op == "reshape":
            mid = g.emit("reshape", [a], "F32", [1, size], {"shape": [1, size]})
            out = g.emit("reshape", [mid], "F32", [size], {"shape": [size]})
            exprs.append((mid, "reshape1", (a,)))
            exprs.append((out, "reshape0", (mid,)))
        else:
            out = g.emit(op, [a], "F32", [size])
            exprs.append((out, op, (a,)))
        pool.append(out)
    g.outputs = draw(st.lists(st.sampled_from(pool[len(inputs):]), min_size=1, max_size=3, unique=True))
    g.output_tuple = True
    return g, inputs, exprs


_NP = {"add": np.add, "mul": np.multiply, "neg": np.negative, "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh,
       "reshape1": lambda x: x.reshape(1, -1), "reshape0": lambda x: x.reshape(-1)}


@settings(max_examples=60, deadline=None)
@given(graphs(), st.integers(0, 2**31))
def test_random_plans_are_valid_and_correct(case, seed) -> None:
    g, inputs, exprs = case
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(g.values[v].shape[0]).astype(np.float32) for v in inputs]
    env = dict(zip(inputs, xs))
    for out, op, args in exprs:
        env[out] = _NP[op](*(env[a] for a in args)).astype(np.float32)
    want = [env[o] for o in g.outputs]
    plan = run_passes(g)
    prog = loads(Program({"forward": g}, {"forward": plan}).to_bytes())  # loader checks no live overlap
    got = prog.run(*xs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert plan.arena_size <= plan.tensor_bytes
    # twice in a row through the same arena
    for a, b in zip(prog.run(*xs), want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_weights_are_zero_copy_views_of_the_file(tmp_path) -> None:
    g = Graph("forward")
    x = g.add_input("x", "F32", [4])
    w = g.add_const("w", np.arange(4, dtype=np.float32))
    g.outputs = [g.emit("add", [x, w], "F32", [4])]
    path = tmp_path / "p.tsp"
    Program({"forward": g}, {"forward": run_passes(g)}).save(path)
    from torchship.edge.runtime import load

    prog = load(path)
    arr = prog.weights["w"]
    assert not arr.flags.owndata and not arr.flags.writeable
    assert arr.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(prog.run(np.ones(4, np.float32)), [1, 2, 3, 4])


def test_scratch_outside_the_arena_is_reported_and_temporaries_shared() -> None:
    """Two 3x3 padded convs (2 -> 3 -> 2 channels): each step's padded input copy and im2col
    columns (2x7x7 + 18x25, then 3x7x7 + 27x25, each 64-byte aligned) live in one temp region
    sized for the larger step (plus 64 bytes of alignment slack), not the sum of all buffers;
    results equal a float64 direct convolution, also on a second call."""
    rng = np.random.default_rng(0)
    g = Graph("forward")
    x = g.add_input("x", "F32", [1, 2, 5, 5])
    w1 = g.add_const("w1", rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    w2 = g.add_const("w2", rng.standard_normal((2, 3, 3, 3)).astype(np.float32))
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    h = g.emit("conv2d", [x, w1], "F32", [1, 3, 5, 5], attrs)
    g.outputs = [g.emit("conv2d", [h, w2], "F32", [1, 2, 5, 5], attrs)]
    ws = [g.values[w1].const.astype(np.float64), g.values[w2].const.astype(np.float64)]
    method = loads(Program({"forward": g}, {"forward": run_passes(g)}).to_bytes()).method("forward")
    assert method.scratch_bytes() == 0  # nothing bound before the first call
    xin = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    got = method(xin)
    aligned = lambda nbytes: -(-nbytes // 64) * 64  # noqa: E731
    assert method.scratch_bytes() == aligned(3 * 7 * 7 * 4) + aligned(27 * 25 * 4) + 64
    np.testing.assert_array_equal(method(xin), got)  # the second call refills the shared temps

    def conv(v: np.ndarray, k: np.ndarray) -> np.ndarray:  # direct sum over the 9 taps
        p = np.pad(v, ((0, 0), (0, 0), (1, 1), (1, 1)))
        return sum(np.einsum("nchw,oc->nohw", p[:, :, i : i + 5, j : j + 5], k[:, :, i, j]) for i in range(3) for j in range(3))

    ref = conv(conv(xin.astype(np.float64), ws[0]), ws[1])
    assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()
