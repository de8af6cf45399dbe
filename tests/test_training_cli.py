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
     "--tau=1.5: must be a number in (0.0, 1.0] (policy conf_sample)"),
    (["train", "--policy", "conf_sample", "--theta", "0.1"],
     "option 'theta' applies to layer_freeze, layer_drop, not to conf_sample"),
    (["train", "--policy", "random_sample", "--rate", "0.2,x"],
     "--rate=0.2,x: must be a number in [0, 1] or a comma list"),
    (["train", "--policy", "random_sample", "--rate", "2"],
     "--rate=2.0: must be a number in [0.0, 1.0] (policy random_sample)"),
    (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent/c10"],
     "CIFAR-10 folder '/nonexistent/c10' does not exist"),
    (["train", "--dataset", "cifar10"], "dataset 'cifar10' needs a data folder"),
    (["train", "--seeds", "0"], "--seeds=0: must be an integer >= 1"),
    (["train", "--epochs", "0"], "--epochs=0: must be an integer >= 1"),
    (["compare", "--policies", "none,none"],
     "--policies=none,none: must be a list of distinct policy specs (none listed twice)"),
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


# ---------------------------------------------------------------------------------------------
# from an outside audit: every wrong value is refused up front, naming the flag and the rule

#: one quick run (digits, 64 images, one epoch, one seed): if a check were missing, the command
#: would train and return 0 in a second or two instead of exiting 2
QUICK = ["--epochs", "1", "--limit", "64", "--seeds", "1", "--no-progress", "--momentum", "0",
         "--lr", "0.25", "--model", "mlp1", "--width", "16", "--device", "cpu"]
ACCEL = ["--backend", "accel"]
MARGIN = ["--policy", "conf_sample", "--confidence", "margin"]


def refused(command, args, tmp_path, capsys, out=None):
    """The error of ``skiptrain COMMAND QUICK ARGS``: exit 2, ``skiptrain: error: ...``, and
    nothing written (the output folder not created)."""
    out = tmp_path / "x" if out is None else out
    with pytest.raises(SystemExit) as e:
        main([command, *QUICK, *args, "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("skiptrain: error: "), err
    assert not (tmp_path / "x").exists()
    return err


@pytest.mark.parametrize("args, message", [
    # 1. infinity is no learning rate, weight decay or threshold
    (["--weight-decay", "inf"], "--weight-decay=inf: must be a finite number >= 0"),
    (["--weight-decay", "nan"], "--weight-decay=nan: must be a finite number >= 0"),
    (["--lr", "inf"], "--lr=inf: must be a finite number > 0"),
    (["--lr", "nan"], "--lr=nan: must be a finite number > 0"),
    (["--momentum", "inf"], "--momentum=inf: must be a number in [0, 1)"),
    (["--target-acc", "inf"], "--target-acc=inf: must be a number in (0, 1]"),
    (["--policy", "conf_sample", "--tau", "inf"],
     "--tau=inf: must be a finite number in (0.0, 1.0] (policy conf_sample)"),
    (["--policy", "layer_freeze", "--theta", "inf"],
     "--theta=inf: must be a finite number in (0.0, inf) (policy layer_freeze)"),
    (["--policy", "wus_lr", "--lr-gamma", "inf"],
     "--lr-gamma=inf: must be a finite number in (0.0, 1.0] (policy wus_lr)"),
    (["--policy", "wus", "--wus-eps", "inf"],
     "--wus-eps=inf: must be a finite number in (0.0, 1.0] (policy wus)"),
    (["--policy", "conf_batch", "--confidence", "margin", "--batch-tau", "inf"],
     "--batch-tau=inf: must be a finite number in (0.0, inf) (policy conf_batch)"),
    (["--policy", "random_sample", "--rate", "0.1,inf"],
     "--rate entry 2=inf: must be a finite number in [0.0, 1.0] (policy random_sample)"),
    # 2. options of another backend or data set are refused, not ignored
    (["--accel-preset", "nope"],
     "--accel-preset=nope: must be given only with --backend accel (the float backend has no "
     "accelerator)"),
    (["--accel-config", "/nonexistent/c.json"],
     "--accel-config=/nonexistent/c.json: must be given only with --backend accel"),
    (["--accel-rounding", "nearest"], "--accel-rounding=nearest: must be given only with "
                                      "--backend accel"),
    (["--data-dir", "/nonexistent"],
     "--data-dir=/nonexistent: must be given only with --dataset cifar10 (digits reads no folder)"),
    (["--dataset", "synthetic", "--data-dir", "/tmp"],
     "--data-dir=/tmp: must be given only with --dataset cifar10 (synthetic reads no folder)"),
    # 4. an accelerator without training hardware, a batch over its max_batch
    (ACCEL + ["--accel-preset", "tiny_gemm"],
     "--accel-preset=tiny_gemm: must be an accelerator with training hardware (training=true); "
     "'tiny_gemm' has training=false"),
    (ACCEL + ["--batch-size", "512"],
     "--batch-size=512: must be a power of two <= 256 with --backend accel: the accelerator "
     "'default' has max_batch=256"),
    (ACCEL + ["--batch-size", "24"], "--batch-size=24: must be a power of two <= 256"),
    # 5. the device
    (["--device", "foo"], "--device=foo: must be auto, cpu, cuda, cuda:N or mps (a device string "
                          "torch knows)"),
    (["--device", "meta"], "--device=meta: must be auto, cpu, cuda, cuda:N or mps (the devices "
                           "the trainer runs on)"),
    (["--device", "cuda:99"], "--device=cuda:99: must be "),
    # 6. a logit margin is > 0 and finite on both backends, and fits CONF_TAU on the accelerator
    (MARGIN + ["--tau", "0"], "--tau=0.0: must be a number in (0.0, inf) (policy conf_sample)"),
    (MARGIN + ["--tau", "0"] + ACCEL,
     "--tau=0.0: must be a number in (0.0, inf) (policy conf_sample)"),
    (MARGIN + ["--tau", "-1"], "--tau=-1.0: must be a number in (0.0, inf) (policy conf_sample)"),
    (MARGIN + ["--tau", "inf"],
     "--tau=inf: must be a finite number in (0.0, inf) (policy conf_sample)"),
    (MARGIN + ["--tau", "1e9"] + ACCEL,
     "--tau=1000000000.0: must be a number in (0.0, 16777215.99609375] with --confidence margin "
     "on the accelerator 'default': the largest that its 32-bit CONF_TAU holds"),
    (["--policy", "conf_batch", "--confidence", "margin", "--batch-tau", "1e9"] + ACCEL,
     "--batch-tau=1000000000.0: must be a number in (0.0, 2097151.9998779297] with --confidence "
     "margin and batch 32 on the accelerator 'default'"),
    # 8. the flags, not the library's parameter names
    (["--batch-size", "0"], "--batch-size=0: must be an integer >= 1"),
    (["--target-acc", "2"], "--target-acc=2.0: must be a number in (0, 1]"),
    (["--weight-decay", "-1"], "--weight-decay=-1.0: must be a number >= 0"),
    (["--limit", "0"], "--limit=0: must be an integer >= 1"),
    (["--threads", "0"], "--threads=0: must be an integer >= 1"),
    (["--policy", "conf_batch", "--batch-tau", "2"],
     "--batch-tau=2.0: must be a number in (0.0, 1.0] (policy conf_batch)"),
    (["--policy", "conf_sample", "--warmup", "-1"],
     "--warmup=-1: must be an integer >= 0 (policy conf_sample)"),
    (["--policy", "downsample", "--low-epochs", "-1"],
     "--low-epochs=-1: must be an integer >= 0 (policy downsample)"),
    (["--policy", "wus", "--wus-period", "0"],
     "--wus-period=0: must be an integer >= 1 (policy wus)"),
    (ACCEL + ["--momentum", "0.9"], "--momentum=0.9: must be 0 with --backend accel"),
    (ACCEL + ["--weight-decay", "0.5"], "--weight-decay=0.5: must be 0 with --backend accel"),
    (ACCEL + ["--lr", "0.2"], "--lr=0.2: must be a power of two in 2**-39..1 with --backend accel"),
    # 9. more images or a longer warm-up than there are
    (["--limit", "5000"], "--limit=5000: must be at most 1437, the training images of digits"),
    (["--batch-size", "128"],
     "--batch-size=128: must be at most 64, the training images left by --limit 64"),
    (["--policy", "conf_sample", "--warmup", "1"],
     "--warmup=1: must be less than --epochs (1): conf_sample would never act"),
    (["--policy", "layer_freeze", "--warmup", "1000"],
     "--warmup=1000: must be less than --epochs (1): layer_freeze would never act"),
])
def test_train_refuses_naming_the_flag_and_the_rule(args, message, tmp_path, capsys):
    err = refused("train", args, tmp_path, capsys)
    assert message in err, err


@pytest.mark.parametrize("args, message", [
    # 7. an empty entry is not a duplicate
    (["--policies", "none,,"], "--policies=none,,: must be a list of policy specs without empty "
                               "entries (entry 2 of 3 is empty)"),
    (["--policies", ",none"], "entry 1 of 2 is empty"),
    (["--policies", "none,conf_sample", "--warmup", "2"],
     "--warmup=2: must be less than --epochs (1): conf_sample would never act"),
    (["--policies", "none", "--accel-rounding", "stochastic"],
     "--accel-rounding=stochastic: must be given only with --backend accel"),
])
def test_compare_refuses_naming_the_flag_and_the_rule(args, message, tmp_path, capsys):
    err = refused("compare", args, tmp_path, capsys)
    assert message in err, err


@pytest.mark.parametrize("command", ["train", "compare"])
def test_out_that_cannot_be_a_folder_is_refused_before_training(command, tmp_path, capsys):
    """3. an --out that is a file, or under one, fails up front (not with a traceback after
    the training)."""
    file = tmp_path / "file"
    file.write_text("keep me")
    extra = ["--policies", "none"] if command == "compare" else []
    err = refused(command, extra, tmp_path, capsys, out=file)
    assert f"--out={file}: must be a folder (it is an existing file)" in err, err
    err = refused(command, extra, tmp_path, capsys, out=file / "sub")
    assert f"--out={file / 'sub'}: must be a folder or a new folder's path ({str(file)!r} is a " \
           "file)" in err, err
    assert file.read_text() == "keep me"


def test_accel_config_file_without_training_or_with_a_small_max_batch(tmp_path, capsys):
    """4. a config with training=false, and a batch over the config's max_batch, are refused
    before any step (they crashed in the golden model, or were refused by a memory size)."""
    from skiptrain.config import preset
    none = tmp_path / "inference.json"
    preset("default").replace(training=False, name="inference").to_json(none)
    small = tmp_path / "batch8.json"
    preset("default").replace(max_batch=8, name="batch8").to_json(small)
    err = refused("train", ACCEL + ["--accel-config", str(none)], tmp_path, capsys)
    assert f"--accel-config={none}: must be an accelerator with training hardware " \
           "(training=true); 'inference' has training=false: it runs inference only" in err, err
    for policy in ("none", "conf_sample"):
        err = refused("train", ACCEL + ["--accel-config", str(small), "--policy", policy],
                      tmp_path, capsys)
        assert "--batch-size=32: must be a power of two <= 8 with --backend accel: the " \
               "accelerator 'batch8' has max_batch=8" in err, err
    # the largest batch the config takes trains
    assert main(["train", *QUICK, *ACCEL, "--accel-config", str(small), "--batch-size", "8",
                 "--out", str(tmp_path / "ok")]) == 0
    capsys.readouterr()


def test_the_largest_margin_the_refusal_names_trains_on_the_accelerator(tmp_path, capsys):
    """6. --tau at the largest margin CONF_TAU holds (the bound the message gives) is taken."""
    assert main(["train", *QUICK, *ACCEL, *MARGIN, "--tau", "16777215.99609375",
                 "--out", str(tmp_path / "ok")]) == 0
    assert "conf_sample" in capsys.readouterr().out


def test_library_errors_keep_the_parameter_names():
    """8. the Python API names its own parameters; the command line translates them."""
    from golden.training import cli
    from golden.training.errors import OptionError
    with pytest.raises(OptionError, match="batch_size must be an integer >= 1, got 0") as e:
        cli.run("train", ["none"], batch_size=0, out="unused")
    assert (e.value.name, e.value.value, e.value.rule) == ("batch_size", 0, "an integer >= 1")
    with pytest.raises(OptionError, match=r"policy conf_batch: tau_batch must be a number in "
                                          r"\(0.0, 1.0\], got 2.0") as e:
        cli.run("train", ["conf_batch"], {"batch_tau": 2.0}, out="unused")
    assert e.value.name == "batch_tau" and e.value.where == "policy conf_batch"
    with pytest.raises(OptionError, match="accel_rounding must be given only with backend accel"):
        cli.run("train", ["none"], accel_rounding="nearest", out="unused")
