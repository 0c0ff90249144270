"""What a new user types after reading the README: every ``--help`` says what the command and
each argument are for, and the usual mistakes (a typo in a module path, a bad shape or dtype, a
missing file or directory, no GPU) end in one ``error:`` line naming the argument, not a
traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchship.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
ZOO = f"{ROOT}/examples/models/zoo.py"
SOFTMAX = f"{ROOT}/examples/kernels/softmax.py::softmax"


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "torchship"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def test_every_command_and_argument_has_help() -> None:
    commands = dict(_subcommands(build_parser()))
    assert {"torchship weights convert", "torchship kernels cache", "torchship edge run"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"`{name} --help` has no description"
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"`{name} --help`: {action.dest} has no help text"


def test_version(capsys) -> None:
    import torchship

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"torchship {torchship.__version__}"


def test_bare_command_prints_its_help(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: torchship") and all(p in err for p in ("weights", "kernels", "edge", "demo"))
    assert main(["weights"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: torchship weights") and all(c in err for c in ("inspect", "verify", "convert", "scan"))


def _one_line_error(exc: pytest.ExceptionInfo[SystemExit], *words: str) -> str:
    text = str(exc.value.code)
    assert text.startswith("error: ") and "\n" not in text, text
    for word in words:
        assert word in text, (word, text)
    return text


@pytest.mark.parametrize(("argv", "words"), [
    (["examples.models.zo:mlp"], ["cannot import 'examples.models.zo'", ".py file"]),
    ([f"{ZOO}:mlpp"], ["no attribute 'mlpp'", "tiny_transformer"]),
    ([f"{ZOO}:_init"], ["callable with no arguments"]),
    ([f"{ZOO}:mlp", "--input", "2,a"], ["--input '2,a'", "non-negative integers"]),
    ([f"{ZOO}:mlp", "--input", "2,64:f8"], ["unknown dtype 'f8'", "f32"]),
    ([f"{ZOO}:mlp", "--dynamic", "b=1..4@0:5"], ["input 0 has 2 dims, no axis 5"]),
    ([f"{ZOO}:mlp", "--dynamic", "b=4..1@0:0"], ["MIN 4 is larger than MAX 1"]),
    ([f"{ZOO}:mlp", "--dynamic", "b=1..4@0"], ["must look like seq=1..128@0:1,1:1"]),
])
def test_edge_export_mistakes(tmp_path, monkeypatch, argv, words) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:
        main(["edge", "export", *argv, "-o", str(tmp_path / "m.tsp")])
    _one_line_error(exc, *words)
    assert not (tmp_path / "m.tsp").exists()


def test_edge_export_missing_output_dir(tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["edge", "export", f"{ZOO}:mlp", "-o", str(tmp_path / "nodir" / "m.tsp")])
    _one_line_error(exc, "-o ", "does not exist")
    with pytest.raises(SystemExit) as exc:  # a directory as -o: was IsADirectoryError after the export
        main(["edge", "export", f"{ZOO}:mlp", "-o", str(tmp_path)])
    _one_line_error(exc, f"-o {tmp_path}: is a directory", f"-o {tmp_path / 'model.tsp'}")


def test_edge_export_unsupported_input_dtype_is_one_line(tmp_path) -> None:
    # an int64 input to a float model: refused by export or by the load check after it
    with pytest.raises(SystemExit) as exc:
        main(["edge", "export", f"{ZOO}:mlp", "-o", str(tmp_path / "m.tsp"), "--input", "2,64:i64"])
    _one_line_error(exc)


def test_edge_export_input_dtype_and_run_input_errors(tmp_path, capsys) -> None:
    prog = tmp_path / "m.tsp"
    assert main(["edge", "export", f"{ZOO}:mlp", "-o", str(prog), "--input", "3,64:f32"]) == 0
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["edge", "run", str(prog), "--input", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 0
    from examples.models.zoo import mlp

    with torch.no_grad():
        ref = mlp()[0](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    assert main(["edge", "run", str(prog), "--input", str(tmp_path / "nope.npy")]) == 1
    assert capsys.readouterr().out.strip() == f"error: --input {tmp_path / 'nope.npy'}: no such file"
    for bad, words in ((str(tmp_path / "nodir" / "y.npy"), f"directory {tmp_path / 'nodir'} does not exist"),
                       (f"{tmp_path}/", "is a directory; give a .npy file name")):
        assert main(["edge", "run", str(prog), "--input", str(tmp_path / "x.npy"), "-o", bad]) == 1
        out = capsys.readouterr().out.strip()
        assert out.startswith(f"error: -o {bad}: {words}") and "\n" not in out, out
    assert not (tmp_path / ".npy").exists()
    (tmp_path / "x.txt").write_text("1 2 3\n")
    assert main(["edge", "run", str(prog), "--input", str(tmp_path / "x.txt")]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"error: --input {tmp_path / 'x.txt'}: not a .npy file") and "\n" not in out


def test_kernels_input_mistakes(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path / "cache"))
    for shape in ("-1,4", "4,a"):
        assert main(["kernels", "autotune", SOFTMAX, f"--shape={shape}", "--device", "cpu"]) == 2
        out = capsys.readouterr().out
        assert f"--shape '{shape}'" in out and "non-negative integers" in out
    # a 1-D input to a kernel that indexes x[tm, :]: the compiler's message, no traceback
    assert main(["kernels", "code", SOFTMAX, "--shape", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "cannot run on inputs of shape 4" in err and "too many indices" in err
    if not torch.cuda.is_available():
        assert main(["kernels", "autotune", SOFTMAX, "--shape", "4,4", "--device", "cuda"]) == 2
        assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().out


def test_kernels_cache_list_empty(tmp_path, capsys) -> None:
    assert main(["kernels", "cache", "list", "--dir", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "no entries, the directory does not exist" in out and str(tmp_path / "none") in out


def test_kernels_cache_import_missing_bundle(tmp_path, capsys) -> None:
    missing = tmp_path / "bundle.json"
    assert main(["kernels", "cache", "import", str(missing), "--dir", str(tmp_path / "c")]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"error: {missing}: no such file") and "cache export" in out, out
    assert not (tmp_path / "c").exists()


def test_broken_pipe_is_quiet(tmp_path) -> None:
    from torchship.weights.numpy import save_file

    path = tmp_path / "many.safetensors"
    save_file({f"layer.{i}.weight": np.zeros(2, np.float32) for i in range(3000)}, str(path))
    proc = subprocess.Popen([sys.executable, "-m", "torchship.cli", "weights", "inspect", "--json", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10)  # `| head -c 10`: read a little, then hang up
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) != 0
    assert "Traceback" not in err, err


def test_missing_optional_dependency(monkeypatch, capsys) -> None:
    import importlib

    real = importlib.import_module

    def without_kernels(name: str, *args, **kwargs):
        if name == "torchship.kernels.cli":
            raise ModuleNotFoundError("No module named 'triton'", name="triton")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_kernels)
    assert main(["kernels", "cache", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("torchship kernels: error: No module named 'triton'; install it with pip install "
                   "'torchship[kernels]' (from a clone: pip install '.[kernels]')")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails as if not installed
    with pytest.raises(SystemExit) as exc:
        main(["edge", "export", f"{ZOO}:mlp", "-o", "m.tsp"])
    _one_line_error(exc, "edge export needs torch", "'.[torch]'")


def test_weights_convert_refusal_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / ("a_long_directory_name_" * 3) / "not_a_pickle_checkpoint.bin"
    bad.parent.mkdir()
    bad.write_text("hello\n")
    assert main(["weights", "convert", str(bad)]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"refused: {bad}: not a pickle checkpoint") and "\n" not in out, out


def test_kernels_example_file_mistakes(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path / "cache"))
    add = f"{ROOT}/examples/kernels/add.py::add"
    assert main(["kernels", "code", add, "--device", "cpu", "--shape-key", "huge"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --shape-key 'huge': unknown shape key") and "gpu_small" in err, err
    missing = tmp_path / "cfg.json"
    assert main(["kernels", "code", add, "--device", "cpu", "--config", f"@{missing}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --config @{missing}: cannot read: No such file or directory"


def test_kernels_autotune_cached_winner_in_microseconds(tmp_path, monkeypatch, capsys) -> None:
    import re

    monkeypatch.setenv("TORCHSHIP_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["kernels", "autotune", f"{ROOT}/examples/kernels/add.py::add", "--device", "cpu",
            "--max-evals", "1", "--in-process", "--plot", str(tmp_path / "p.png")]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "(CPU: times of Triton's interpreter" in " ".join(first.split()), first
    assert main(argv) == 0
    second = capsys.readouterr().out
    m = re.search(r"cached winner for add \((\d+\.\d) µs\)", second)
    assert m, second
    best = re.search(r"\n│ 1 +│ +(\d+\.\d) │", first)  # the first run's table row 1, in µs
    assert best and best.group(1) == m.group(1), (first, second)
    assert main(["kernels", "cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "1 entries" in listing and "…" not in listing, listing  # long names wrap, never cut


def test_weights_inspect_numpy_file_gets_a_hint(tmp_path, capsys) -> None:
    np.save(tmp_path / "w.npy", np.eye(2, dtype=np.float32))
    np.savez(tmp_path / "w.npz", x=np.eye(2, dtype=np.float32))
    for name, kind in (("w.npy", "a numpy .npy file"), ("w.npz", "a numpy .npz archive")):
        assert main(["weights", "inspect", str(tmp_path / name)]) == 1
        out = " ".join(capsys.readouterr().out.split())
        assert f"this looks like {kind}, not safetensors" in out and "torchship weights convert" in out, out


def test_edge_run_bf16_output_and_input_count(tmp_path, capsys) -> None:
    import ml_dtypes

    (tmp_path / "bfm.py").write_text(
        "import torch\n\n\ndef model():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.GELU()).to(torch.bfloat16).eval()\n")
    prog = tmp_path / "m.tsp"
    assert main(["edge", "export", f"{tmp_path / 'bfm.py'}:model", "-o", str(prog), "--input", "4,16:bf16"]) == 0
    x = torch.randn(4, 16).to(torch.bfloat16)
    np.save(tmp_path / "x.npy", x.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    capsys.readouterr()
    assert main(["edge", "run", str(prog)]) == 1
    out = capsys.readouterr().out.strip()
    assert out == (f"error: {prog}: forward takes 1 input(s) (BF16[4, 16]), got 0 --input: "
                   "give one --input FILE.npy per input, in order"), out
    assert main(["edge", "run", str(prog), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"saved {tmp_path / 'y.npy'} (bfloat16 as raw 2-byte records" in out, out
    y = np.load(tmp_path / "y.npy").view(ml_dtypes.bfloat16)
    import importlib.util

    spec = importlib.util.spec_from_file_location("bfm", tmp_path / "bfm.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.no_grad():
        ref = mod.model()(x).float().numpy()
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=1e-2, atol=1e-2)


def test_weights_inspect_diffusers_root_names_subfolders(tmp_path, capsys) -> None:
    from torchship.weights.numpy import save_file

    for sub in ("unet", "vae"):
        (tmp_path / sub).mkdir()
        save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / sub / "diffusion_pytorch_model.safetensors"))
    assert main(["weights", "verify", str(tmp_path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"{tmp_path}: directory holds no .safetensors file (subfolders that do: unet, vae; pass one" in out, out
    assert main(["weights", "verify", str(tmp_path / "unet")]) == 0


def test_edge_export_dynamic_dim_missing_an_input_gets_a_hint(tmp_path) -> None:
    (tmp_path / "two.py").write_text(
        "import torch\n\n\nclass Add(torch.nn.Module):\n    def forward(self, x, m):\n        return x + m\n\n\n"
        "def model():\n    return Add(), (torch.randn(2, 16), torch.randn(2, 16))\n")
    with pytest.raises(SystemExit) as exc:
        main(["edge", "export", f"{tmp_path / 'two.py'}:model", "-o", str(tmp_path / "m.tsp"),
              "--dynamic", "seq=1..64@0:1"])
    text = str(exc.value.code)
    assert text.startswith("error: ") and text.endswith(
        "\nhint: input 1 axis 1 also has size 16; if it follows seq, list it too: --dynamic seq=1..64@0:1,1:1"), text
    assert main(["edge", "export", f"{tmp_path / 'two.py'}:model", "-o", str(tmp_path / "m.tsp"),
                 "--dynamic", "seq=1..64@0:1,1:1"]) == 0


def test_edge_export_factory_shapes(tmp_path, capsys) -> None:
    (tmp_path / "fac.py").write_text(
        "import torch\n\n\ndef lin():\n    torch.manual_seed(0)\n    return torch.nn.Linear(4, 2)\n\n\n"
        "def single():\n    return lin(), torch.ones(3, 4)\n\n\n"
        "def three():\n    return lin(), (), {}\n\n\n"
        "def func():\n    return (lambda x: x + 1), (torch.ones(3, 4),)\n")
    fac = tmp_path / "fac.py"
    for name, words in (("three", ["returned a tuple of 3", "(model, example_inputs)"]),
                        ("func", ["returned a function, not a torch.nn.Module"])):
        with pytest.raises(SystemExit) as exc:
            main(["edge", "export", f"{fac}:{name}", "-o", str(tmp_path / "m.tsp")])
        _one_line_error(exc, *words)
    # (model, x) with one bare example tensor: the tensor is the one input
    assert main(["edge", "export", f"{fac}:single", "-o", str(tmp_path / "m.tsp")]) == 0
    from torchship.edge import runtime

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        ref = torch.nn.Linear(4, 2)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runtime.load(str(tmp_path / "m.tsp")).run(x), ref, rtol=1e-5, atol=1e-6)


def test_weights_convert_npz_output_dir(tmp_path, capsys) -> None:
    from torchship.weights.numpy import load_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float16)}
    np.savez(tmp_path / "w.npz", **arrays)
    out = tmp_path / "new" / "sub"
    assert main(["weights", "convert", str(tmp_path / "w.npz"), "-o", f"{out}/"]) == 0
    loaded = load_file(str(out / "w.safetensors"))
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded[k], v)
    capsys.readouterr()
    assert main(["weights", "convert", str(tmp_path / "w.npz"), "-o", str(tmp_path / "no" / "w.safetensors")]) == 2
    text = capsys.readouterr().out.strip()
    assert text == f"refused: -o {tmp_path / 'no' / 'w.safetensors'}: directory {tmp_path / 'no'} does not exist", text
    assert main(["weights", "convert", str(tmp_path / "missing.npz"), "-o", f"{tmp_path / 'm'}/"]) == 2
    assert not (tmp_path / "m").exists()


def test_weights_scan_long_paths_are_not_cut(tmp_path, capsys) -> None:
    deep = tmp_path / ("a_long_download_directory_name_" * 2) / "sub"
    deep.mkdir(parents=True)
    for name in ("first_model.bin", "second_model.bin"):
        torch.save({"w": torch.zeros(2)}, deep / name)
    assert main(["weights", "scan", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out, out
    cells = "".join(line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│"))
    assert str(deep / "first_model.bin") in cells and str(deep / "second_model.bin") in cells, cells


def test_python_dash_m_torchship_is_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "torchship", "--version"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    import torchship

    assert proc.returncode == 0 and proc.stdout.strip() == f"torchship {torchship.__version__}"
