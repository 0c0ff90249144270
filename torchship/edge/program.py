"""The export-side program: lowered methods + weights -> one program file.

File layout (docs/edge-format.md): ``b"TSHPPROG"``, u64 weights_offset, u32 version, u32 flags,
u64 header_len, the JSON header, zero padding, then a safetensors blob with every weight
(written by ``torchship.weights.writer``) from weights_offset to the end of the file.

Example:
    >>> prog = torchship.edge.export(model, (x,))  # doctest: +SKIP
    >>> prog.save("model.tsp")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from torchship.edge.graph import Graph
from torchship.edge.passes.memory import MemoryPlan
from torchship.edge.runtime import loads
from torchship.edge.runtime import program as rt
from torchship.edge.runtime.format import ALIGN, MAGIC, PREAMBLE, VERSION
from torchship.edge.runtime.registry import OPS
from torchship.weights.writer import Entry, write_entries

WEIGHTS_ALIGN = 4096  # page aligned, so the weights blob can be mapped on its own


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return [_json_float(x) for x in v]
    return v


class Program:
    """Exported methods, their memory plans and the shared weights.

    Example:
        >>> prog = export(MLP(), (torch.randn(4, 64),))  # doctest: +SKIP
        >>> prog.run(np.zeros((4, 64), np.float32)).shape  # doctest: +SKIP
        (4, 10)
    """

    def __init__(self, graphs: dict[str, Graph], plans: dict[str, MemoryPlan], metadata: dict[str, str] | None = None) -> None:
        self.graphs = graphs
        self.plans = plans
        self._metadata = dict(metadata or {})
        self.weights: dict[str, np.ndarray] = {}
        self._weight_of: dict[tuple[str, int], str] = {}
        self._assign_weights()
        self._runtime: rt.Program | None = None

    @property
    def metadata(self) -> dict[str, str]:
        """Free-form string metadata written into the header (producer, quantisation error...).

        Example:
            >>> prog.metadata["producer"]  # doctest: +SKIP
            'torchship.edge (torch 2.13.0)'
        """
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict[str, str]) -> None:
        self._metadata = dict(value)
        self._runtime = None

    def _assign_weights(self) -> None:
        by_hash: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        for mname, g in self.graphs.items():
            used = set(g.outputs) | {x for ins in g.instrs for x in ins.inputs}
            for vid in sorted(used):
                v = g.values[vid]
                if v.const is None:
                    continue
                arr = v.const
                key = (arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).digest())
                name = by_hash.get(key)
                if name is None:
                    name = v.name
                    n = 1
                    while name in self.weights:
                        n += 1
                        name = f"{v.name}#{n}"
                    by_hash[key] = name
                    self.weights[name] = arr
                self._weight_of[(mname, vid)] = name

    # ------------------------------------------------------------------ header
    def _method_header(self, mname: str) -> dict[str, Any]:
        g, p = self.graphs[mname], self.plans[mname]
        order: list[int] = []
        index: dict[int, int] = {}

        def ref(vid: int) -> int:
            if vid not in index:
                index[vid] = len(order)
                order.append(vid)
            return index[vid]

        inputs = [ref(v) for v in g.inputs]
        instrs = []
        for ins in g.instrs:
            item: dict[str, Any] = {"op": ins.op, "inputs": [ref(x) for x in ins.inputs], "outputs": [ref(o) for o in ins.outputs]}
            if ins.attrs:
                item["attrs"] = {k: _json_float(v) for k, v in ins.attrs.items()}
            if ins.source:
                item["source"] = ins.source
            instrs.append(item)
        outputs = [ref(v) for v in g.outputs]
        alias_out = {o for ins in g.instrs if OPS[ins.op].alias for o in ins.outputs}
        values = []
        for vid in order:
            v = g.values[vid]
            entry: dict[str, Any] = {"name": v.name, "dtype": v.dtype, "shape": v.shape}
            if v.const is not None:
                entry.update(kind="weight", weight=self._weight_of[(mname, vid)])
            elif vid in alias_out:
                entry["kind"] = "view"
            else:
                entry.update(kind="input" if v.is_input else "arena", offset=p.offsets[vid], nbytes=p.sizes[vid])
            values.append(entry)
        return {
            "symbols": {s: {"min": lo, "max": hi} for s, (lo, hi) in g.symbols.items()},
            "values": values,
            "inputs": inputs,
            "outputs": outputs,
            "output_tuple": g.output_tuple,
            "instructions": instrs,
            "arena_size": p.arena_size,
        }

    def header(self) -> dict[str, Any]:
        """The JSON program header (see docs/edge-format.md).

        Example:
            >>> sorted(prog.header()["methods"])  # doctest: +SKIP
            ['encode', 'forward']
        """
        return {
            "format": "torchship.edge.program",
            "version": VERSION,
            "metadata": self.metadata,
            "methods": {m: self._method_header(m) for m in self.graphs},
        }

    # ------------------------------------------------------------------ writing
    def write(self, f: Any) -> int:
        """Write the program file to a binary file object; return the bytes written.

        Example:
            >>> prog.write(io.BytesIO())  # doctest: +SKIP
        """
        head = json.dumps(self.header(), separators=(",", ":"), allow_nan=False).encode("utf-8")
        offset = -(-(PREAMBLE + len(head)) // WEIGHTS_ALIGN) * WEIGHTS_ALIGN
        assert offset % ALIGN == 0
        f.write(MAGIC + struct.pack("<QIIQ", offset, VERSION, 0, len(head)))
        f.write(head)
        f.write(bytes(offset - PREAMBLE - len(head)))
        entries = {k: Entry(_st_dtype(a), tuple(a.shape), a) for k, a in self.weights.items()}
        return offset + write_entries(f, entries, {"format": "torchship.edge.program"})

    def to_bytes(self) -> bytes:
        """The whole program file as bytes.

        Example:
            >>> prog.to_bytes()[:8]  # doctest: +SKIP
            b'TSHPPROG'
        """
        buf = io.BytesIO()
        self.write(buf)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the program file atomically (temp file in the same directory + rename).

        Example:
            >>> prog.save("model.tsp")  # doctest: +SKIP
        """
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as f:
                self.write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # ------------------------------------------------------------------ running & reporting
    def runtime(self) -> rt.Program:
        """The numpy runtime program for this export (built from the serialized bytes).

        Example:
            >>> prog.runtime().method("forward")  # doctest: +SKIP
        """
        if self._runtime is None:
            self._runtime = loads(self.to_bytes(), name="<exported program>")
        return self._runtime

    def run(self, *inputs: Any) -> Any:
        """Run ``forward`` with the numpy runtime (torch tensors are converted).

        Example:
            >>> prog.run(np.zeros((4, 64), np.float32))  # doctest: +SKIP
        """
        return self.runtime().run(*(_np(x) for x in inputs))

    def method(self, name: str) -> Any:
        """A runnable method of the runtime program.

        Example:
            >>> prog.method("encode")(ids, mask)  # doctest: +SKIP
        """
        m = self.runtime().method(name)
        return lambda *xs: m(*(_np(x) for x in xs))

    def summary(self) -> dict[str, Any]:
        """Per-method op counts, arena bytes vs sum of tensor bytes; total weight bytes.

        Example:
            >>> prog.summary()["methods"]["forward"]["arena_bytes"]  # doctest: +SKIP
        """
        methods = {}
        for m, g in self.graphs.items():
            methods[m] = {
                "instructions": len(g.instrs),
                "ops": dict(Counter(ins.op for ins in g.instrs)),
                "arena_bytes": self.plans[m].arena_size,
                "tensor_bytes": self.plans[m].tensor_bytes,
                "symbols": dict(g.symbols),
            }
        return {"methods": methods, "weight_bytes": sum(a.nbytes for a in self.weights.values()), "weights": len(self.weights)}

    def __str__(self) -> str:
        return "\n\n".join(str(g) for g in self.graphs.values())


def _st_dtype(a: np.ndarray) -> str:
    from torchship.edge.runtime.dims import dtype_name

    return dtype_name(a.dtype)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
