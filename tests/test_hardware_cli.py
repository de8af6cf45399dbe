"""The hardware commands' argument checks (generate, cosim, bench, synth, flow): every bad
argument is refused with exit code 2 and a message naming it and the rule, before any build,
simulation or place and route starts (fast tier: nothing here reaches a simulator)."""

from __future__ import annotations

import pytest

from skiptrain.cli import main
from skiptrain.commands.hardware import default_shapes
from skiptrain.config import preset


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("skiptrain: error: "), err
    return err


@pytest.fixture
def paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    small_mb4 = tmp_path / "small_mb4.json"
    preset("small").replace(max_batch=4, name="small_mb4").to_json(small_mb4)
    bad_name = tmp_path / "bad_name.json"
    bad_name.write_text(preset("tiny").to_json().replace('"name": "tiny"', '"name": "../x"'))
    return {"tmp": str(tmp_path), "afile": str(afile), "under_file": str(afile / "x.json"),
            "json": str(tmp_path / "r.json"), "small_mb4": str(small_mb4), "bad_name": str(bad_name)}


CASES = [
    # cosim: each kind of run refuses the other's options, even given with their default value
    (["cosim", "--sim", "icarus", "--steps", "10"],
     "--steps: option(s) of 'cosim train', not of 'cosim gemm'"),
    (["cosim", "--sim", "icarus", "--policy", "none", "--lr", "0.25"],
     "--lr, --policy: option(s) of 'cosim train', not of 'cosim gemm'"),
    (["cosim", "train", "--sim", "verilator", "--seeds", "5"],
     "--seeds: option(s) of 'cosim gemm', not of 'cosim train'"),
    (["cosim", "train", "--sim", "verilator", "--max-dim", "12", "--commands", "3"],
     "--commands, --max-dim: option(s) of 'cosim gemm', not of 'cosim train'"),
    (["cosim", "train", "--sim", "verilator", "--lr", "abc"],
     "--lr='abc': must be a number, a power of two (e.g. 0.25)"),
    (["cosim", "train", "--sim", "verilator", "--seed", str(1 << 32)],
     "--seed='4294967296': must be an integer in 0..4294967295 (a 32-bit seed)"),
    (["cosim", "train", "--sim", "verilator", "--preset", "tiny_gemm"],
     "config 'tiny_gemm' has no training hardware (training=false)"),
    (["cosim", "train", "--sim", "verilator", "--config", "{small_mb4}", "--sizes", "64,8,10",
      "--batch", "8"],
     "batch=8: must be at most the config's max_batch=4"),
    # output paths are checked before the work, not written into at its end
    (["bench", "gemm", "--preset", "tiny", "--json", "{tmp}"], "--json='{tmp}' is a directory: must be a file path"),
    (["bench", "gemm", "--preset", "tiny", "--seed", str(1 << 32), "--json", "{json}"],
     "--seed='4294967296': must be an integer in 0..4294967295 (a 32-bit seed)"),
    (["bench", "cosim", "--shape", "0x4x4", "--json", "{json}"],
     "--shape: '0x4x4' is not a GEMM shape"),
    (["bench", "cosim", "--preset", "tiny", "--shape", "8x8x8", "--opt", "", "--json", "{json}"],
     "--opt='': must be one of"),
    (["bench", "train", "--steps", "0", "--json", "{under_file}"],
     "--json='{under_file}': '{afile}' is not a directory, so the file cannot be made"),
    (["bench", "train", "--steps", "0", "--preset", "tiny_gemm", "--json", "{json}"],
     "config 'tiny_gemm' has no training hardware"),
    (["generate", "--preset", "tiny", "--out", "{afile}"],
     "--out='{afile}' is a file: must be a folder (created if missing)"),
    (["generate", "--preset", "tiny", "--out", ""], "--out='': must be a folder path"),
    (["generate", "--config", "{bad_name}", "--out", "{tmp}"],
     "name='../x': must be 1-64 letters, digits, '_', '.' or '-'"),
    (["flow", "--preset", "tiny", "--out", "{afile}"], "--out='{afile}' is a file"),
    (["synth", "--preset", "tiny", "--target", "ecp5", "--json", "{tmp}"],
     "--json='{tmp}' is a directory"),
    (["synth", "--preset", "tiny", "--target", "ecp5", "--json", "{json}", "--markdown", "{under_file}"],
     "--markdown='{under_file}': '{afile}' is not a directory"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a[:3]) + f" #{n}" for n, (a, _) in enumerate(CASES)])
def test_hardware_commands_refuse(capsys, paths, argv, message):
    argv = [a.format(**paths) for a in argv]
    err = _refused(capsys, argv)
    assert message.format(**paths) in err, err


def test_bench_gemm_default_shapes_fit_the_preset():
    assert default_shapes(preset("default")) == "64x64x64,256x256x256"
    assert default_shapes(preset("tiny")) == "64x64x64,255x255x255"
