"""More checkpoint layouts as users write them: DeepSpeed ``mp_rank_00_model_states.pt``, nested
lists/tuples of tensors, views sharing storage (offsets, strides), big-endian and legacy
(pre-1.6, non-zip) files, numpy arrays inside a torch pickle, a Lightning ``AttributeDict``,
HF ``training_args.bin`` and TorchScript archives. Every file is written here with torch.save,
loaded by ``torch.load(weights_only=False)`` in one subprocess (never unpickled in the test
process), and our conversion must give the same tensors bit for bit."""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.weights.test_parity11_objects import check_lenient, reference, same
from torchship.weights import torch as ours
from torchship.weights.pickle import convert, scan
from torchship.weights.pickle.convert import ConvertError

picklescan = pytest.importorskip("picklescan.scanner", reason="picklescan is a peer oracle (pip install '.[dev]')")


def _deepspeed(model: torch.nn.Module) -> dict:
    """The layout of DeepSpeed's ``engine.save_checkpoint`` model-states file (ZeRO 1/2)."""
    sd = model.state_dict()
    return {"module": sd, "buffer_names": [], "optimizer": None,
            "param_shapes": [collections.OrderedDict((k, v.shape) for k, v in sd.items())],
            "frozen_param_shapes": None, "shared_params": {}, "frozen_param_fragments": None,
            "lr_scheduler": None, "data_sampler": None, "random_ltd": None,
            "sparse_tensor_module_names": set(), "skipped_steps": 0, "global_steps": 10,
            "global_samples": 80, "dp_world_size": 1, "mp_world_size": 1,
            "ds_config": {"train_batch_size": 8, "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}},
            "ds_version": "0.14.0"}


def _views() -> dict:
    base = torch.arange(60, dtype=torch.float32)
    grid = base.view(6, 10)
    return {"nested": [base[:4], (base[4:8], [grid[1:3, 2:6], base[::3]]), ()],
            "pair": (grid.t(), grid[:, 7]), "window": grid[2:5, 1:9:2], "whole": base,
            "half": torch.arange(12, dtype=torch.float16).view(3, 4)[:, 1:3],
            "ids": torch.arange(10, dtype=torch.int64)[3:]}


def big_endian_copy(src: Path, dst: Path, sizes: list[int]) -> Path:
    """Rewrite a torch zip as a big-endian machine writes it: byteorder 'big', every storage
    record byte-swapped per element (``sizes``: element size of storage record 0, 1, ...)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out := io.BytesIO(), "w", zipfile.ZIP_STORED) as w:
        root = z.namelist()[0].split("/")[0]
        for name in z.namelist():
            data = z.read(name)
            if name == f"{root}/byteorder":
                data = b"big"
            elif name.startswith(f"{root}/data/") and sizes[int(name.rsplit("/", 1)[1])] > 1:
                size = sizes[int(name.rsplit("/", 1)[1])]
                data = np.frombuffer(data, dtype=f"<u{size}").byteswap().tobytes()
            w.writestr(name, data)
    dst.write_bytes(out.getvalue())
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """Each checkpoint written once, with the tensors torch's full loader returns for it."""
    tmp = tmp_path_factory.mktemp("layouts")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    paths = {"deepspeed": tmp / "mp_rank_00_model_states.pt", "views": tmp / "views.pt",
             "views_legacy": tmp / "views_legacy.pt", "numpy": tmp / "numpy.pt",
             "numpy_legacy": tmp / "numpy_legacy.pt"}
    torch.save(_deepspeed(model), paths["deepspeed"])
    torch.save(_views(), paths["views"])
    torch.save(_views(), paths["views_legacy"], _use_new_zipfile_serialization=False)
    arrays = {"w": torch.ones(2, 3), "emb": np.arange(12, dtype=np.float32).reshape(3, 4),
              "ids": np.arange(5, dtype=">i4"), "mask": np.array([True, False, True]),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
              "stats": [np.float64(0.25), np.zeros(2, dtype=np.float16)]}
    torch.save(arrays, paths["numpy"])
    torch.save(arrays, paths["numpy_legacy"], _use_new_zipfile_serialization=False)
    # big-endian: storages are record 0, 1, ... in the order torch.save meets them
    seen: dict[int, int] = {}
    for t in (t for t in ours_flat(_views()).values()):
        seen.setdefault(t.untyped_storage().data_ptr(), t.element_size())
    paths["big_endian"] = big_endian_copy(paths["views"], tmp / "big_endian.pt", list(seen.values()))
    expected = reference(list(paths.values()))
    return {k: (p, e) for (k, p), e in zip(paths.items(), expected, strict=True)}


def ours_flat(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Dotted names as the converter writes them (dict keys, list/tuple indices)."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(ours_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _converted(path: Path, expected: dict[str, torch.Tensor]):
    report = convert(path, path.with_suffix(".safetensors"))
    got = ours.load_file(report.outputs[0])
    assert set(got) == set(expected) - set(report.tied)
    for name, t in expected.items():
        assert same(got[report.tied.get(name, name)], t), name
    return report, got


@pytest.mark.parametrize("name", ["deepspeed", "views", "views_legacy", "big_endian", "numpy", "numpy_legacy"])
def test_layout_converts_bit_for_bit_and_scans_safe(files, name) -> None:
    path, expected = files[name]
    report, got = _converted(path, expected)
    assert scan([path])[0].verdict == "safe"
    if name == "deepspeed":
        assert {"module.0.weight", "module.1.bias"} <= set(got)
        assert report.values["ds_version"] == '"0.14.0"' and "ds_config" in report.values
        assert report.values["param_shapes"] == '[{"0.weight": [3, 4], "0.bias": [3], "1.weight": [3], "1.bias": [3]}]'
    if name.startswith("views") or name == "big_endian":
        assert {"nested.1.1.0", "pair.0", "window"} <= set(got) and report.views_copied >= 4
        little = files["views"][1]  # byte-swapped back: the values torch.save started from
        assert all(same(got[k], little[k]) for k in little)
    if name.startswith("numpy"):
        assert got["ids"].dtype == torch.int32 and got["mask"].dtype == torch.bool
        assert json.loads(report.values["stats.0"]) == 0.25 and "stats.1" in got


def test_lightning_attribute_dict_hyper_parameters(tmp_path, monkeypatch) -> None:
    """Lightning's AttributeDict (a dict subclass) under its real module name, importable by
    the reference subprocess from a package written here."""
    pkg = tmp_path / "pkgs" / "lightning" / "fabric" / "utilities"
    pkg.mkdir(parents=True)
    for d in (pkg.parent.parent, pkg.parent, pkg):
        (d / "__init__.py").write_text("")
    (pkg / "data.py").write_text("class AttributeDict(dict):\n    def __getattr__(self, k):\n        return self[k]\n")
    spec = importlib.util.spec_from_file_location("lightning.fabric.utilities.data", pkg / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for parent in ("lightning", "lightning.fabric", "lightning.fabric.utilities"):  # for the pickler
        monkeypatch.setitem(sys.modules, parent, type(sys)(parent))
    monkeypatch.setitem(sys.modules, "lightning.fabric.utilities.data", module)
    torch.save({"state_dict": {"w": torch.randn(3)}, "hyper_parameters": module.AttributeDict(lr=0.1, n=[1, 2])},
               tmp_path / "last.ckpt")
    expected = reference([tmp_path / "last.ckpt"], str(tmp_path / "pkgs"))[0]
    report, got = check_lenient(tmp_path / "last.ckpt", tmp_path,
                                {"hyper_parameters": "lightning.fabric.utilities.data.AttributeDict"}, expected)
    assert set(got) == {"state_dict.w"}


def test_hf_training_args_bin_has_no_tensors(tmp_path) -> None:
    """Trainer writes ``torch.save(self.args, 'training_args.bin')``: a TrainingArguments
    dataclass (built here without its __post_init__, which needs accelerate)."""
    transformers = pytest.importorskip("transformers")
    cls = transformers.TrainingArguments
    args = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(args, f.name, None if default is dataclasses.MISSING else default)
    args.output_dir, args.learning_rate = "out", 3e-5
    path = tmp_path / "training_args.bin"
    torch.save(args, path)
    name = "transformers.training_args.TrainingArguments"
    report = scan([path])[0]
    assert report.verdict == "suspicious" and name in {g.qualname for g in report.globals if g.verdict == "suspicious"}
    picklescan_globals = {f"{g.module}.{g.name}" for g in picklescan.scan_file_path(str(path)).globals}
    assert name in picklescan_globals
    for strict in (True, False):
        with pytest.raises(ConvertError, match=rf"training_args\.bin.*no tensors.*class {name} at 'value'"):
            convert(path, tmp_path / "t.safetensors", strict=strict)
    assert not (tmp_path / "t.safetensors").exists()


def test_torchscript_archive_is_refused_with_what_to_do(tmp_path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, tmp_path / "model.pt")
    for strict in (True, False):
        with pytest.raises(ConvertError, match=r"model\.pt: this is a TorchScript archive \(torch\.jit\.save.*"
                                               r"torch\.jit\.load.*state_dict"):
            convert(tmp_path / "model.pt", tmp_path / "model.safetensors", strict=strict)
    report = scan([tmp_path / "model.pt"])[0]
    assert report.verdict != "safe" and any("TorchScript" in p for p in report.problems)
