"""The config contract, the command encoding and the memory layout."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from skiptrain.config import Config, ConfigError, PRESETS, preset
from skiptrain.isa import Command, command_width, decode, encode
from skiptrain.layout import Region, locate, words_per_row


@pytest.mark.parametrize("changes,message", [
    ({"rows": 0}, "rows=0: must be in 1..32"),
    ({"cols": 33}, "cols=33: must be in 1..32"),
    ({"data_width": 1}, "data_width=1: must be in 2..32"),
    ({"frac_bits": 16}, "frac_bits=16: must be in 0..data_width-1 = 0..15"),
    ({"acc_width": 39}, "acc_width=39: must be in 2*data_width+8..64 = 40..64"),
    ({"counter_width": 23}, "counter_width=23: must be in 24..64"),
    ({"spad_depth": 1000}, "spad_depth=1000: must be a power of two"),
    ({"acc_depth": 1}, "acc_depth=1: must be a power of two"),
    ({"prog_depth": 3}, "prog_depth=3: must be a power of two"),
    ({"multiplier": "dsp48"}, "multiplier='dsp48': must be one of"),
    ({"data_width": 20, "acc_width": 48, "multiplier": "ecp5"}, "data_width=20: must be at most 18"),
    ({"rows": 2.5}, "rows=2.5: must be an integer"),
    ({"rows": True}, "rows=True: must be an integer"),
    ({"gradient_skip": "no"}, "gradient_skip='no': must be true or false"),
    ({"kept_norm": True, "gradient_skip": False},
     "kept_norm=True: needs gradient_skip=True (it normalises by the per-sample skip's kept count)"),
])
def test_bad_config_names_field_value_and_rule(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**changes)


def test_unknown_preset_and_fields():
    with pytest.raises(ConfigError, match=r"preset='huge': unknown preset; choose one of \['default', 'small', 'tiny', 'tiny_gemm'\]"):
        preset("huge")
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['colz'\]"):
        Config.from_dict({"colz": 4})
    with pytest.raises(ConfigError, match="unknown config field"):
        preset("tiny").replace(depth=3)


def test_json_round_trip(tmp_path):
    for cfg in PRESETS.values():
        p = tmp_path / "c.json"
        cfg.to_json(p)
        back = Config.from_json(p)
        assert back == cfg and back.banks == cfg.banks
        assert json.loads(p.read_text())["derived"]["banks"] == cfg.banks
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.from_json(tmp_path / "bad.json")


def test_derived_values():
    assert preset("default").banks == 8 and preset("tiny").banks == 2
    assert Config(rows=3, cols=5).banks == 8 and Config(rows=12, cols=12).banks == 16
    c = preset("default")
    assert (c.data_min, c.data_max) == (-32768, 32767)


def test_command_encoding_round_trip_and_range():
    cfg = preset("default")
    R = Region(5, 3, 4, 1)
    cmd = Command.gemm(100, 200, 300, R, R, R, trans_a=True, shift=9)
    word = encode(cmd, cfg)
    assert word < 1 << command_width(cfg)
    assert decode(word, cfg) == cmd
    with pytest.raises(ValueError, match=r"command field m=65536: must be in 0..65535"):
        encode(Command(m=1 << 16), cfg)


def test_skewed_layout_is_conflict_free():
    """Any V consecutive elements of a row, or of a column, lie in V different banks."""
    V = 8
    for base, ld in [(0, 2), (3, 5)]:
        for r in range(12):
            for c0 in range(10):
                banks = {locate(r, c0 + j, base, ld, V)[0] for j in range(V)}
                assert len(banks) == V
                banks = {locate(r + i, c0, base, ld, V)[0] for i in range(V)}
                assert len(banks) == V
    assert words_per_row(9, 8) == 2


def test_region_store_load_numpy_and_torch():
    V = 4
    reg = Region.packed(2, 3, 6, V)
    m = np.arange(18).reshape(3, 6)
    img = np.zeros((V, 16), dtype=np.int64)
    reg.store(img, m)
    assert (reg.load(img) == m).all()
    timg = torch.zeros((V, 16), dtype=torch.int64)
    reg.store(timg, torch.as_tensor(m))
    assert torch.equal(reg.load(timg), torch.as_tensor(m))
    with pytest.raises(ValueError, match="exceed memory depth"):
        Region.packed(14, 3, 6, V).store(img, m)


def test_training_flag_is_checked():
    with pytest.raises(ConfigError, match=r"training=1: must be true or false"):
        Config(training=1)
    assert preset("tiny_gemm").replace(training=True) == preset("tiny")
    # the skip hardware comes with the training hardware, unless gradient_skip=False
    assert preset("tiny").has_skip and not preset("tiny_gemm").has_skip
    assert not preset("tiny").replace(gradient_skip=False).has_skip


def test_config_files_load_and_say_what_the_readme_says():
    """Every configs/*.json loads, names itself after its file, and is the default with only
    the fields the README says changed."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    files = sorted(folder.glob("*.json"))
    assert len(files) >= 4, files
    base = preset("default")
    changed = {"default_batch128": {"spad_depth": 8192, "acc_depth": 4096},
               "default_kept_norm": {"kept_norm": True},
               "default_no_skip": {"gradient_skip": False},
               "default_4x4": {"rows": 4, "cols": 4, "spad_depth": 2 * base.spad_depth,
                               "acc_depth": 2 * base.acc_depth}}
    assert sorted(f.stem for f in files) == sorted(changed), files
    for f in files:
        cfg = Config.from_json(f)
        assert cfg.name == f.stem, f"{f.name}: name {cfg.name!r}"
        assert cfg == base.replace(name=f.stem, **changed[f.stem]), f"{f.name}: {cfg}"
    # the 4x4 keeps the default's memory bits: half the banks, twice the depth
    small = Config.from_json(folder / "default_4x4.json")
    assert small.banks * small.spad_depth == base.banks * base.spad_depth
    assert small.banks * small.acc_depth == base.banks * base.acc_depth


def test_config_files_are_whole_and_checked(tmp_path):
    """A file that leaves out a field, gives a wrong ``derived``, is no regular file or no
    UTF-8 text is refused with a message naming the file, the value and the rule."""
    full = json.loads(preset("small").to_json())
    cases = {}
    no_rows = {k: v for k, v in full.items() if k != "rows"}
    cases["no_rows.json"] = (json.dumps(no_rows), "missing config field(s) ['rows']: a config gives every field")
    wrong = dict(full, derived={"banks": 99, "multiplier_latency": 3})
    cases["derived.json"] = (json.dumps(wrong), "derived.banks=99: does not match the fields, which give 4")
    odd = dict(full, derived={"banks": "4"})
    cases["derived_str.json"] = (json.dumps(odd), "derived.banks='4': does not match the fields, which give 4")
    extra = dict(full, derived={"lanes": 4})
    cases["derived_key.json"] = (json.dumps(extra), "derived={'lanes': 4}: must be an object with keys among")
    cases["rows0.json"] = (json.dumps(dict(full, rows=0)), "rows=0: must be")
    for name, (text, rule) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(f"config file {str(f)!r}: {rule}")):
            Config.from_json(f)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{junk")
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(tmp_path / 'binary.json')!r} is not UTF-8 text")):
        Config.from_json(tmp_path / "binary.json")
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(tmp_path)!r} is a directory: must be a JSON file")):
        Config.from_json(tmp_path)
    with pytest.raises(ConfigError, match=re.escape("config file '/dev/null' is not a regular file: must be a JSON file")):
        Config.from_json("/dev/null")
    # derived may be left out, and a right one is accepted
    assert Config.from_dict({k: v for k, v in full.items() if k != "derived"}) == preset("small")
    assert Config.from_dict(full) == preset("small")
