"""``torchship.edge.export``: nn.Module + example inputs -> torch.export -> core ops -> Program.

Example:
    >>> import torch
    >>> from torchship.edge import export
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    >>> prog = export(model, (torch.randn(2, 8),))
    >>> prog.run(torch.ones(2, 8).numpy()).shape
    (2, 4)
"""

from __future__ import annotations

import inspect
import math
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from torchship.edge import (  # noqa: F401  (register the ATen handlers)
    lower_bits,
    lower_complex,
    lower_conv,
    lower_fft,
    lower_index,
    lower_linalg,
    lower_masked,
    lower_moe,
    lower_nn,
    lower_ops,
    lower_refusals,
    lower_select,
    lower_shapes,
    lower_special,
)
from torchship.edge.graph import Graph
from torchship.edge.lower import ExportError, Lowering, source_of, sym_to_dim
from torchship.edge.passes import run_passes
from torchship.edge.program import Program
from torchship.edge.runtime.dims import ProgramError, linear_form

aten = torch.ops.aten
# CompositeImplicit ops we lower ourselves rather than let torch decompose them
_PRESERVE = (
    aten.linear.default,
    aten.matmul.default,
    aten.layer_norm.default,
    aten.scaled_dot_product_attention.default,
    aten.hardswish.default,
    aten.hardsigmoid.default,
    aten.softplus.default,  # torch's decompositions of these use log1p/expm1/fmod
    aten.mish.default,
    aten.celu.default,
    aten.roll.default,
    aten._pad_circular.default,  # (its decomposition writes into an empty tensor)
)


class _Method(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.m = model
        self.method_name = name

    def forward(self, *args: Any) -> Any:
        return getattr(self.m, self.method_name)(*args)


def _exported(model: torch.nn.Module, name: str, inputs: tuple[Any, ...], dynamic_shapes: Any) -> tuple[torch.export.ExportedProgram, str]:
    mod, prefix = (model, "") if name == "forward" else (_Method(model, name), "m.")
    if prefix and dynamic_shapes is not None:  # the wrapper takes *args: nest the spec
        if isinstance(dynamic_shapes, dict):
            params = list(inspect.signature(getattr(model, name)).parameters)
            dynamic_shapes = tuple(dynamic_shapes.get(p) for p in params[: len(inputs)])
        dynamic_shapes = (tuple(dynamic_shapes),)
    ep = None
    try:
        with warnings.catch_warnings(), _DirectCdist():
            warnings.simplefilter("ignore", FutureWarning)
            ep = torch.export.export(mod, tuple(inputs), dynamic_shapes=dynamic_shapes, strict=False)
            ep = ep.run_decompositions(_table())
    except Exception as exc:  # torch.export's own diagnostics are the most useful here
        hint = _rnn_hint(model, exc) or (_mutation_hint(ep) if ep is not None else "")
        raise ExportError(f"torchship.edge.export: torch.export failed for method {name!r}: {exc}{hint}") from exc
    return ep, prefix


def _mutation_hint(ep: torch.export.ExportedProgram) -> str:
    """Why ``run_decompositions`` failed on a graph torch.export traced but left in-place ops in
    (``index_copy_`` into a tensor that is no registered buffer of the model, as transformers'
    ``StaticCache`` in ``TorchExportableModuleForDecoderOnlyLM`` does): the ops and model lines,
    and the form that exports — the cache as inputs and outputs.

    Example:
        >>> ep = torch.export.export(torch.nn.ReLU(), (torch.randn(2),))
        >>> _mutation_hint(ep)
        ''
    """
    mutating = [n for n in ep.graph.nodes if isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable]
    if not mutating:
        return ""
    lines = sorted({f"{n.target.name()} at {where} `{code}`" for n in mutating for where, code in [source_of(n)]})
    return ("\n\nThe traced graph still writes tensors in place (" + "; ".join(lines[:4])
            + ("; ..." if len(lines) > 4 else "") + "): tensors the model creates or holds outside its registered "
            "buffers (a transformers StaticCache, TorchExportableModuleForDecoderOnlyLM), which torch.export's "
            "decomposition cannot make functional. Pass such state as inputs and return the new state as outputs "
            "instead — for a KV cache: build transformers.DynamicCache(ddp_cache_data=[(k, v), ...]) from input "
            "tensors, and return the grown keys/values (with a dynamic past length, Dim(min=0))")


class _DirectCdist(torch.overrides.TorchFunctionMode):
    """``torch.cdist``'s default ``compute_mode`` picks the ``|a|² + |b|² − 2ab`` matmul form
    when either point count exceeds 25, so a dynamic point count whose range crosses 25 would be
    specialised (torch.export: "Constraints violated"). While exporting, the default becomes
    ``"donot_use_mm_for_euclid_dist"`` — the differences themselves, which ``_cdist_forward``
    lowers to at any size (more accurate than the matmul form, the same within rounding).

    Example:
        >>> a = torch.randn(30, 3)
        >>> with _DirectCdist():
        ...     d = torch.cdist(a, a)
        >>> bool(d.diagonal().eq(0).all())
        True
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.functional.cdist and kwargs.get("compute_mode", "use_mm_for_euclid_dist_if_necessary") == "use_mm_for_euclid_dist_if_necessary":
            kwargs["compute_mode"] = "donot_use_mm_for_euclid_dist"
        return func(*args, **kwargs)


def _rnn_hint(model: torch.nn.Module, exc: Exception) -> str:
    """What to do when a dynamic dim was specialised and the model has an ``nn.GRU``/``LSTM``/
    ``RNN``: torch.export unrolls their recurrence over the example's time steps.

    Example:
        >>> _rnn_hint(torch.nn.Linear(2, 2), RuntimeError("x"))
        ''
    """
    rnns = sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.RNNBase)})
    packed = any(isinstance(v, torch.nn.utils.rnn.PackedSequence)
                 for frame, _ in traceback.walk_tb(exc.__traceback__) for v in frame.f_locals.values())
    if rnns and packed:
        return ("\n\nThe model packs its sequences (nn.utils.rnn.pack_padded_sequence): a packed batch's shape depends "
                "on the lengths' values, which a program cannot have. Run the RNN on the padded batch instead and pick "
                "each sequence's last real step with torch.gather(output, 1, (lengths - 1)...) — the same values for a "
                "unidirectional RNN; a bidirectional one also reads the padding backwards, so export one method per "
                "length instead")
    if not rnns or "specialized" not in str(exc):
        return ""
    return (f"\n\nThe model has {'/'.join(f'nn.{r}' for r in rnns)}: torch.export unrolls the recurrence over the "
            "example's time steps, so the sequence length cannot be a dynamic dim (a dynamic batch can). Export "
            "at a fixed length (pad inputs to it, and mask or pick the last real step), or one method per "
            "length bucket (export(..., methods={'len16': ((x16,), None), ...}))")


# ops torch keeps whole in its core ATen IR that decompose into ones we lower (resizing and
# reflect/replicate padding become tensor indexing, pixel shuffles views, glu a split)
_DECOMPOSE = (
    aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_bilinear2d,
    aten.reflection_pad1d, aten.reflection_pad2d, aten.replication_pad1d,
    aten.replication_pad2d, aten.pixel_shuffle, aten.pixel_unshuffle, aten.glu, aten.logsumexp,
    aten.repeat, aten.hardshrink, aten.threshold, aten.grid_sampler_2d,
)


def _table() -> Any:
    table = torch.export.default_decompositions()
    for op in _PRESERVE:
        table.pop(op, None)
    table.update(torch._decomp.get_decompositions(list(_DECOMPOSE)))
    return table


def lower_method(model: torch.nn.Module, name: str, inputs: tuple[Any, ...], dynamic_shapes: Any = None) -> Graph:
    """Export one method of ``model`` and lower it to a core-op ``Graph`` (no passes yet).

    Example:
        >>> g = lower_method(torch.nn.ReLU(), "forward", (torch.randn(3),))
        >>> [i.op for i in g.instrs]
        ['relu']
    """
    ep, prefix = _exported(model, name, inputs, dynamic_shapes)
    graph = Graph(name)
    input_syms = set()
    for node in ep.graph.nodes:
        if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor):
            input_syms.update(str(s) for d in node.meta["val"].shape if isinstance(d, torch.SymInt) for s in d.node.expr.free_symbols)
    for sym, rng in ep.range_constraints.items():
        if str(sym) not in input_syms:
            continue
        lo, hi = rng.lower, rng.upper
        if not getattr(hi, "is_finite", True) or (isinstance(hi, float) and math.isinf(hi)) or str(hi) in ("oo", "int_oo"):
            raise ExportError(
                f"torchship.edge.export: dynamic dim {sym} of method {name!r} has no maximum; give it one "
                "(torch.export.Dim(name, max=N)) so the arena can be planned for the upper bound"
            )
        graph.symbols[str(sym)] = (int(lo), int(hi))
    names = {}
    for fqn in list(ep.state_dict) + list(ep.constants):
        names[fqn] = fqn[len(prefix):] if prefix and fqn.startswith(prefix) else fqn
    Lowering(graph, ep, names).run()
    out_spec = ep.call_spec.out_spec
    graph.output_tuple = not (out_spec is not None and out_spec.is_leaf()) and len(graph.outputs) >= 1
    if out_spec is not None and out_spec.is_leaf():
        graph.output_tuple = False
    used = set()
    for ins in graph.instrs:
        used.update(ins.inputs)
    _ = used
    for vid in graph.inputs:
        for d in graph.values[vid].shape:
            if not isinstance(d, int) and linear_form(d) is None:
                raise ExportError(f"torchship.edge.export: input {graph.values[vid].name} has a derived dim {d}; "
                                  "only a·dim + c forms of one dynamic dim (torch.export's 2 * Dim(...) + 1) are supported")
    bound = {linear_form(d)[0] for v in graph.inputs for d in graph.values[v].shape if not isinstance(d, int)}
    for sym in list(graph.symbols):
        if sym not in bound:
            del graph.symbols[sym]
    _rename_symbols(graph, model, name, inputs, dynamic_shapes)
    return graph


def _rename_symbols(graph: Graph, model: torch.nn.Module, name: str, inputs: tuple[Any, ...], spec: Any) -> None:
    """Use the user's Dim names (``seq``) instead of torch's (``s27``) where unambiguous."""
    if isinstance(spec, dict):
        params = list(inspect.signature(getattr(model, name)).parameters)
        spec = [spec.get(p) for p in params[: len(inputs)]]
    if not isinstance(spec, (list, tuple)):
        return
    rename: dict[str, str] = {}
    for vid, axes in zip(graph.inputs, spec):
        if not isinstance(axes, dict):
            continue
        for axis, dim in axes.items():
            shape = graph.values[vid].shape
            root = getattr(dim, "root", dim)  # a derived dim (2 * Dim("n")) names its root
            dname = getattr(root, "__name__", None)
            form = linear_form(shape[axis]) if 0 <= axis < len(shape) and not isinstance(shape[axis], int) else None
            if isinstance(dname, str) and form is not None and (form[1:] == (1, 0)) == (root is dim):
                rename.setdefault(form[0], dname)
    if len(set(rename.values())) != len(rename) or set(rename.values()) & (set(graph.symbols) - set(rename)):
        return

    def sub(d: Any) -> Any:
        if isinstance(d, str):
            return rename.get(d, d)
        if isinstance(d, list):
            return [sub(x) for x in d]
        return d

    for v in graph.values:
        v.shape = [sub(d) for d in v.shape]
    for ins in graph.instrs:
        ins.attrs = {k: sub(v) if k in ("shape", "start", "end") else v for k, v in ins.attrs.items()}
    graph.symbols = {rename.get(s, s): r for s, r in graph.symbols.items()}


def export(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...] | None,
    dynamic_shapes: Any = None,
    methods: Mapping[str, Any] | None = None,
    quantize: str | None = None,
) -> Program:
    """Export ``model`` to a program with one or more methods.

    ``example_inputs``/``dynamic_shapes`` define ``forward`` (as for ``torch.export.export``;
    every dynamic dim needs a max). ``methods`` adds more: ``{"encode": (inputs,
    dynamic_shapes)}`` exports ``model.encode``. ``quantize="int8"`` stores linear/conv2d
    weights as per-channel int8. Ops outside the core set fail here, naming the op and the
    model's source line.

    Example:
        >>> m = torch.nn.Linear(3, 2).eval()
        >>> export(m, (torch.randn(1, 3),)).summary()["methods"]["forward"]["ops"]
        {'linear': 1}
    """
    model = model.eval()
    halves = {t.dtype for t in (*model.parameters(), *model.buffers())} & {torch.float16, torch.bfloat16}
    if quantize and halves:
        raise ExportError(f"torchship.edge.export: quantize={quantize!r} applies to float32 weights; this model holds "
                          f"{', '.join(sorted(map(str, halves)))} ones. Quantise the float32 model, or export this one "
                          "without quantize (its weights are stored in 2 bytes already)")
    specs: dict[str, tuple[tuple[Any, ...], Any]] = {}
    if example_inputs is not None:
        specs["forward"] = (tuple(example_inputs), dynamic_shapes)
    for name, spec in (methods or {}).items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], (tuple, list))):
            raise ExportError(f"torchship.edge.export: methods[{name!r}] must be (example_inputs tuple, dynamic_shapes or None)")
        if not callable(getattr(model, name, None)):
            raise ExportError(f"torchship.edge.export: the model has no method {name!r}")
        specs[name] = (tuple(spec[0]), spec[1])
    if not specs:
        raise ExportError("torchship.edge.export: give example_inputs (for forward) or methods")
    graphs, plans = {}, {}
    with torch.no_grad():
        for name, (inputs, dyn) in specs.items():
            g = lower_method(model, name, inputs, dyn)
            plans[name] = run_passes(g, quantize)
            graphs[name] = g
    meta = {"producer": f"torchship.edge (torch {torch.__version__})", "model": type(model).__name__}
    prog = Program(graphs, plans, meta)
    try:  # the runtime's own load-time checks, so a program that would not load is not written
        prog.runtime()
    except ProgramError as exc:
        floats = ("do not broadcast" in str(exc)) * (
            " — or, with dynamic dims, a size torch.export fixed at the example's value without saying so: "
            "one computed through Python floats from a dynamic size (F.interpolate(pos, scale_factor=(h + 0.1) / n), "
            "as DINO's interpolate_pos_encoding writes, is traced as a constant; pass integer sizes, "
            "F.interpolate(pos, size=(h, w))")
        raise ExportError(
            f"the exported program fails the runtime's checks: {exc}. This is usually a model "
            f"torch cannot run eagerly either (e.g. an int64 input into a float layer: cast it){floats}; "
            "otherwise please report it") from None
    if quantize:
        meta["quantize"] = quantize
        for name, (inputs, _) in specs.items():  # the accuracy cost, on the example inputs
            err = quantization_error(model, prog, name, inputs)
            meta[f"{quantize}_max_rel_err.{name}"] = f"{err:.3e}"
        prog.metadata = meta
    return prog


def quantization_error(model: torch.nn.Module, prog: Program, method: str, inputs: tuple[Any, ...]) -> float:
    """max |program - eager| / max |eager| over all outputs of ``method`` on ``inputs``.

    Example:
        >>> # export(..., quantize="int8").metadata["int8_max_rel_err.forward"]  -> '4.975e-03'
    """
    with torch.no_grad():
        ref = getattr(model, method)(*inputs)
    refs = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    got = prog.method(method)(*inputs)
    gots = list(got) if isinstance(got, tuple) else [got]
    err = 0.0
    for g, r in zip(gots, refs):
        if r.dtype.kind == "f" and r.size:
            err = max(err, float(abs(g.astype("float64") - r).max() / max(abs(r).max(), 1e-30)))
    return err


__all__ = ["ExportError", "export", "lower_method", "sym_to_dim"]
