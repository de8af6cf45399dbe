"""``skiptrain train`` / ``skiptrain compare``: outputs, matched baselines, clear errors."""

import json

from pathlib import Path

import pytest

from skiptrain.cli import main

from training_support import one_thread, write_cifar  # noqa: F401 (autouse fixture)

FAST = ["--dataset", "synthetic", "--epochs", "2", "--device", "cpu"]


def test_train_writes_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["train", "--policy", "conf_sample", "--tau", "0.3", "--warmup", "0",
               "--seeds", "2", "--out", str(out)] + FAST)
    assert rc == 0
    text = capsys.readouterr().out
    assert "conf_sample" in text and "B+G %" in text and "±" in text
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "skiptrain.training.results/1" and doc["seeds"] == [0, 1]
    (pol,) = doc["policies"]
    assert pol["name"] == "conf_sample" and pol["params"]["conf_sample"]["tau"] == 0.3
    assert set(pol["skipped"]) == {"F", "B", "G", "U", "BG", "total"}
    assert pol["skipped"]["BG"] > 0 and 0 <= pol["accuracy_mean"] <= 1
    run = pol["runs"][0]
    assert len(run["epochs"]) == 2 and (out / run["steps_file"]).is_file()
    assert run["layers"][0]["name"] == "fc1.linear"
    for name in ("accuracy_vs_epoch.png", "skip_vs_epoch.png", "accuracy_vs_macs.png"):
        assert (out / name).stat().st_size > 1000


def test_compare_runs_matched_random_baselines(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["compare", "--policies", "none,conf_sample,wus", "--tau", "0.3", "--warmup", "0",
               "--wus-eps", "1.0", "--wus-period", "2", "--seeds", "1", "--limit", "128",
               "--out", str(out)] + FAST)
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    names = [p["name"] for p in doc["policies"]]
    assert names == ["none", "conf_sample", "random_sample~conf_sample", "wus",
                     "random_wus~wus"]
    by = {p["name"]: p for p in doc["policies"]}
    assert by["random_sample~conf_sample"]["matched_to"] == "conf_sample"
    # the baseline replays the method's per-epoch rate
    method = [e["decisions"]["conf_sample"]["rate"] for e in by["conf_sample"]["runs"][0]["epochs"]]
    assert by["random_sample~conf_sample"]["params"]["random_sample"]["rate"] == method
    table = capsys.readouterr().out
    assert "random_wus~wus" in table
    rc = main(["compare", "--policies", "none,conf_sample", "--no-match", "--seeds", "1",
               "--out", str(tmp_path / "n")] + FAST)
    doc = json.loads((tmp_path / "n" / "results.json").read_text())
    assert [p["name"] for p in doc["policies"]] == ["none", "conf_sample"]


def test_cifar10_folder_trains(tmp_path, capsys):
    root = write_cifar(tmp_path / "c10")
    rc = main(["train", "--dataset", "cifar10", "--data-dir", str(root), "--model", "cnn",
               "--width", "4", "--epochs", "1", "--seeds", "1", "--batch-size", "4",
               "--device", "cpu", "--out", str(tmp_path / "o")])
    assert rc == 0 and "cifar10" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "--policy", "conf_smaple"], "unknown policy 'conf_smaple'"),
    (["train", "--policy", "conf_sample", "--tau", "1.5"],
     r"policy conf_sample: tau must be a number in (0.0, 1.0], got 1.5"),
    (["train", "--policy", "conf_sample", "--theta", "0.1"],
     "option 'theta' applies to layer_freeze, layer_drop, not to conf_sample"),
    (["train", "--policy", "random_sample", "--rate", "0.2,x"],
     "--rate must be a number or a comma list"),
    (["train", "--policy", "random_sample", "--rate", "2"], "rate must be a number in [0.0, 1.0]"),
    (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent/c10"],
     "CIFAR-10 folder '/nonexistent/c10' does not exist"),
    (["train", "--dataset", "cifar10"], "dataset 'cifar10' needs a data folder"),
    (["train", "--seeds", "0"], "seeds must be an integer >= 1, got 0"),
    (["train", "--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["compare", "--policies", "none,none"], "a policy is listed twice"),
    (["train", "--policy", "downsample", "--low-every", "2", "--low-prob", "0.5"],
     "give one downsampling schedule"),
    (["train", "--backend", "accel", "--accel-preset", "default", "--accel-config", "c.json"],
     "give --accel-preset or --accel-config, not both"),
    (["train", "--backend", "accel", "--accel-config", "/nonexistent/c.json"],
     "config file '/nonexistent/c.json' does not exist"),
    (["train", "--backend", "accel", "--accel-config", '{"rows": 8, "colz": 8}'],
     "unknown config field(s) ['colz']"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(args + ["--out", str(tmp_path / "x"), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("skiptrain: error: ") and message in err, err
    assert not (tmp_path / "x").exists()


def test_registering_the_commands_imports_neither_torch_nor_the_library():
    import subprocess
    import sys
    code = ("import argparse, sys; import skiptrain.commands.train as t; "
            "t.register(argparse.ArgumentParser().add_subparsers()); "
            "bad = [m for m in ('torch', 'golden.training') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_cli_options_are_library_options_with_the_same_defaults():
    import re
    from skiptrain.commands.train import _POLICY_OPTIONS
    from golden.training.registry import OPTIONS, POLICIES
    assert sorted(dest for _, dest, _ in _POLICY_OPTIONS) == sorted(OPTIONS)
    checked = 0
    for flag, dest, kw in _POLICY_OPTIONS:
        m = re.search(r"default ([0-9.]+)\b", kw.get("help", ""))
        if not m:
            continue
        name, param = next(iter(OPTIONS[dest].items()))  # the first policy the help names
        param = param[0] if isinstance(param, tuple) else param
        cls, fixed = POLICIES[name]
        policy = cls(**fixed)
        value = getattr(policy, param)
        value = policy.threshold if value is None else value
        assert float(m.group(1)) == value, (flag, m.group(1), value)
        checked += 1
    assert checked >= 9


@pytest.mark.parametrize("policy, extra, message", [
    ("conf_smaple", [], "unknown policy 'conf_smaple'"),
    ("conf_sample+random_sample", [], "at most one per-sample policy"),
    ("conf_sample+wus", [], "not in hardware yet"),
    ("random_batch", ["--tau", "0.5"], "--tau: an option of --policy conf_sample, not of random_batch"),
    ("conf_sample", ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "default_no_skip.json")],
     "policy 'conf_sample': the accelerator 'default_no_skip' is built without the skip hardware"),
])
def test_cosim_train_rejects_policies_the_hardware_does_not_run(policy, extra, message, capsys):
    """``cosim train --policy``: one policy, or a per-sample and a batch policy stacked; the
    rest is refused before any simulator is looked for or built."""
    with pytest.raises(SystemExit) as e:
        main(["cosim", "train", "--sim", "verilator", "--policy", policy, "--steps", "1", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("skiptrain") and message in err, err
