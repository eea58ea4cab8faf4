"""The trainer end to end on digits: the rules learn as the paper says, resume is exact, the
optimizer semantics of DESIGN.md decision 3 hold, and bad input writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from localrules.cli.main import main
from localrules.config import config_from_preset


def _train_cli(tmp_path: Path, preset: str) -> dict:
    """``localrules train --preset P --out DIR`` with no other flag: the default digits budget."""
    out = tmp_path / preset
    done = subprocess.run([sys.executable, "-m", "localrules.cli.main", "train", "--preset",
                           preset, "--out", str(out), "--no-progress"], capture_output=True,
                          text=True, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mean_angle(result: dict) -> float:
    return float(np.mean(list(result["weight_angle_deg"].values())))


@pytest.mark.slow
def test_rules_learn_and_align_as_the_paper_says_at_the_default_budget(tmp_path):
    """The command a user runs, with its defaults (digits, ResNet-18 width 16, 10 epochs, batch
    64, lr 0.1): bp learns, fa stays clearly below with B random, SA and IA align and learn.
    ``benchmarks/bench_rules.py`` measures every preset over 3 seeds."""
    results = {p: _train_cli(tmp_path, p) for p in ("bp", "fa", "sa", "ia-tpe")}
    summary = {p: (r["top1"], r["weight_angle_deg"] and round(_mean_angle(r), 1))
               for p, r in results.items()}
    print("digits, default budget (top-1, mean weight angle):", summary)
    bp, fa, sa, ia = (results[p] for p in ("bp", "fa", "sa", "ia-tpe"))
    assert bp["top1"] >= 0.97 and bp["weight_angle_deg"] == {}, summary  # no B of its own
    assert fa["top1"] <= 0.85 and 75 < _mean_angle(fa) < 105, summary  # B stays random
    assert sa["top1"] >= 0.90 and _mean_angle(sa) < 20, summary
    assert ia["top1"] >= 0.93 and _mean_angle(ia) < _mean_angle(fa) / 2, summary
    assert not any(r["diverged"] for r in results.values())


def _config(*argv: str):
    from localrules.cli.main import build_parser
    from localrules.cli.train_cmd import build_config

    return build_config(build_parser().parse_args(["train", "--out", "x", *argv]))


def test_train_defaults_to_the_search_budget():
    from localrules.spaces import default_budget

    config = _config("--preset", "bp")
    run = config.run
    assert (config.dataset, config.model, config.width, config.image_size) == (
        "digits", "resnet18", 16, None)
    assert (run.epochs, run.batch_size, run.effective_task_lr) == (10, 64, 0.1)
    assert run.warmup_epochs == pytest.approx(10 * 6 / 45, abs=1e-6)
    assert run.drop_epochs == pytest.approx((10 * 30 / 45,), abs=1e-6)
    # the same config a search's reference bp trains with
    assert config == default_budget("digits").preset_config("bp")
    assert _config() == config  # bp is the default


def test_epochs_stretch_the_schedule_and_the_batch_moves_the_rate():
    run = _config("--preset", "ia-tpe", "--epochs", "20", "--batch-size", "128").run
    assert run.epochs == 20 and run.warmup_epochs == pytest.approx(20 * 6 / 45, abs=1e-6)
    assert run.drop_epochs == pytest.approx((20 * 30 / 45,), abs=1e-6)
    assert run.delay_epochs == pytest.approx(20 / 45, abs=1e-6)  # ia-tpe's one paper epoch
    assert run.effective_task_lr == pytest.approx(0.2)
    assert run.alternate and run.alignment_lr == pytest.approx(0.009785729149984566)
    # the preset's own (appendix) schedule, stretched the same way
    paper = _config("--preset", "sa", "--schedule", "preset").run
    assert (paper.epochs, paper.batch_size, paper.effective_task_lr) == (90, 256, 0.1)
    short = _config("--preset", "sa", "--schedule", "preset", "--epochs", "9").run
    assert short.drop_epochs == (3, 6, 8) and short.warmup_epochs == 0.5
    upsampled = _config("--preset", "ia-tpe", "--image-size", "16")
    assert upsampled.image_size == 16


@pytest.mark.slow  # long evidence: `python -m pytest -m slow` (.ci/run) runs it
def test_bp_reports_no_backward_weights(tmp_path):
    """bp sends errors through Wᵀ: no B–W angles, norm ratios or weight snapshots."""
    from localrules.runs import RunDirectory

    trainer = _trainer(tmp_path, "bp", "run.epochs=1")
    RunDirectory(tmp_path / "t").write_config(trainer.config)  # as the CLI and the workers do
    result = trainer.fit()
    assert result.weight_angle_deg == {}
    record = json.loads((tmp_path / "t" / "history.jsonl").read_text().splitlines()[-1])
    assert "layers" not in record and record["top1"] is not None
    assert not (tmp_path / "t" / "weights").exists()
    from localrules.analysis.weight_report import weight_history

    with pytest.raises(ValueError, match="no separate backward weights"):
        weight_history(str(tmp_path / "t"))


@pytest.mark.slow  # long evidence: `python -m pytest -m slow` (.ci/run) runs it
def test_joint_optimizer_trains_b_with_the_task_sgd(tmp_path):
    """``run.optimizer: joint``: no Adam; on an R step B moves by Nesterov SGD on R at the task
    rate (first step: −(1 + momentum)·lr·∂R/∂B), and W by momentum only."""
    import tensorflow as tf

    from localrules.train.stream import BatchStream

    trainer = _trainer(tmp_path, "wm-tpe", "run.optimizer=\"joint\"", "run.alternate=true",
                       "run.warmup_epochs=0", "rule.noise=null")
    assert trainer.state.alignment_optimizer is None
    layer = trainer.state.layers[2]
    assert any(v is layer.backward_kernel for v in trainer.state.task_variables)
    stream = BatchStream(trainer.dataset, 64, trainer.strategy, 0)
    x, _ = next(iter(trainer.dataset.train(64, 0)))
    with tf.GradientTape() as tape:
        trainer.state.model(x, training=True)
        r = tf.add_n([lay.last_alignment_loss for lay in trainer.state.layers])
    grad = tape.gradient(r, layer.backward_kernel).numpy()
    before = layer.backward_kernel.numpy().copy()
    w_before = layer.forward_kernel.numpy().copy()
    lr = trainer.plan.task_lr(0)
    assert trainer.plan.kind(0) == "align" and lr > 0
    assert trainer.plan.alignment_lr(0) == lr
    trainer.run_step(0, stream)
    np.testing.assert_allclose(layer.backward_kernel.numpy() - before, -1.9 * lr * grad,
                               rtol=2e-3, atol=1e-7)
    np.testing.assert_array_equal(layer.forward_kernel.numpy(), w_before)  # no momentum yet
    stem = trainer.state.layers[0]  # (a residual branch's W has no gradient yet: zero-γ last BN)
    stem_w = stem.forward_kernel.numpy().copy()
    out = trainer.run_step(1, stream)  # a J step: B gets a zero gradient, W its own
    assert out["kind"] == "task" and not np.allclose(stem.forward_kernel.numpy(), stem_w)


def test_joint_optimizer_in_simultaneous_mode_moves_both(tmp_path):
    """One update on J + R: W by J's gradient, B by R's, in the same SGD step."""
    from localrules.train.stream import BatchStream

    trainer = _trainer(tmp_path, "wm-tpe", "run.optimizer=\"joint\"", "run.warmup_epochs=0")
    assert not trainer.config.run.alternate and trainer.plan.kind(0) == "both"
    stem = trainer.state.layers[0]
    w, b = stem.forward_kernel.numpy().copy(), stem.backward_kernel.numpy().copy()
    out = trainer.run_step(0, BatchStream(trainer.dataset, 64, trainer.strategy, 0))
    assert out["kind"] == "both" and np.isfinite(out["loss"])
    assert not np.allclose(stem.forward_kernel.numpy(), w)
    assert not np.allclose(stem.backward_kernel.numpy(), b)


def test_joint_optimizer_refuses_a_delay():
    with pytest.raises(ValueError, match="delay_epochs must be 0"):
        config_from_preset("ia-tpe", overrides=["run.optimizer=\"joint\""])


def _trainer(tmp_path: Path, preset: str, *extra: str):
    from localrules.train.trainer import Trainer

    config = config_from_preset(preset, overrides=[
        "dataset=\"digits\"", "width=4", "run.batch_size=64", "run.epochs=2", *extra])
    return Trainer(config, tmp_path / "t")


def test_inactive_optimizer_applies_a_zero_update(tmp_path):
    """Decision 3: on an R step momentum still moves W; on a J step Adam's state still moves."""
    trainer = _trainer(tmp_path, "wm-ad-tpe", "run.delay_epochs=0", "run.warmup_epochs=0")
    from localrules.train.stream import BatchStream

    stream = BatchStream(trainer.dataset, 64, trainer.strategy, 0)
    kernel = trainer.state.layers[1].forward_kernel
    assert trainer.plan.kind(0) == "align" and trainer.plan.kind(1) == "task"
    trainer.run_step(1, stream)  # a J step: W moves by its gradient, Adam takes a zero step
    assert int(trainer.state.alignment_optimizer.iterations) == 1
    before = kernel.numpy().copy()
    trainer.run_step(2, stream)  # an R step: no task gradient, but momentum carries W on
    assert np.abs(before - kernel.numpy()).max() > 0
    assert int(trainer.state.task_optimizer.iterations) == 2


def test_noise_only_alignment_step_reads_no_data(tmp_path):
    trainer = _trainer(tmp_path, "ia-tpe")
    from localrules.train.stream import BatchStream

    stream = BatchStream(trainer.dataset, 64, trainer.strategy, 0)
    out = trainer.run_step(0, stream)  # inside the delay: R only, from noise
    assert out["kind"] == "align" and stream.consumed == 0
    assert np.all(np.isfinite(out["alignment"]))
    assert len(out["alignment"]) == len(trainer.state.layers)


def test_kolen_pollack_trains_b_with_the_task_optimizer(tmp_path):
    trainer = _trainer(tmp_path, "bp", "rule={\"kind\": \"kp\"}", "run.alignment_lr=0.001")
    assert any(v is trainer.state.layers[0].backward_kernel for v in trainer.state.task_variables)
    from localrules.train.stream import BatchStream

    before = trainer.state.layers[3].backward_kernel.numpy().copy()
    trainer.state.task_optimizer.learning_rate = 0.1
    trainer.run_step(5, BatchStream(trainer.dataset, 64, trainer.strategy, 0))
    assert not np.allclose(before, trainer.state.layers[3].backward_kernel.numpy())


def test_task_update_noise_scales_with_the_learning_rate_and_reaches_b(tmp_path):
    trainer = _trainer(tmp_path, "fa", "update_noise.task_variance=0.01", "run.warmup_epochs=1")
    from localrules.train.stream import BatchStream

    layer = trainer.state.layers[2]
    b0 = layer.backward_kernel.numpy().copy()
    stream = BatchStream(trainer.dataset, 64, trainer.strategy, 0)
    trainer.run_step(0, stream)  # warm-up starts at lr 0: no noise
    np.testing.assert_array_equal(b0, layer.backward_kernel.numpy())
    trainer.run_step(10, stream)  # lr > 0: B is perturbed through the task optimizer's list
    assert not np.allclose(b0, layer.backward_kernel.numpy())


def test_divergence_stops_early_and_is_reported(tmp_path):
    result = _trainer(tmp_path, "bp", "run.task_lr=1e12", "run.warmup_epochs=0").fit()
    assert result.diverged and result.steps < 2 * 22
    lines = (tmp_path / "t" / "history.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    assert history[-1]["diverged"] is True


def test_an_epoch_is_reported_once_it_is_written_and_checkpointed(tmp_path):
    """The callbacks' order: the history line, the checkpoint, the weight snapshot, then the
    caller's ``on_epoch`` (an epoch reported is one a restart resumes from)."""
    from localrules.runs import RunDirectory
    from localrules.snapshots import list_snapshots

    trainer = _trainer(tmp_path, "fa", "eval_every=1")
    run = RunDirectory(tmp_path / "t")
    seen = []

    def on_epoch(record: dict) -> None:
        seen.append((record["epoch"], [r["epoch"] for r in run.read_history()],
                     Path(trainer.checkpoints.latest).name, list(list_snapshots(run.path))))

    trainer.fit(on_epoch=on_epoch)
    end = trainer.plan.epoch_end
    assert seen == [(1, [1], f"ckpt-{end(0)}", [0, 1]), (2, [1, 2], f"ckpt-{end(1)}", [0, 1, 2])]


def test_a_new_run_writes_nothing_once_writes_are_refused(tmp_path):
    """A worker whose lease passed on while it built the trainer writes no config.json."""
    from localrules.train.trainer import RunAbandoned, start_run

    config = config_from_preset("fa", overrides=["dataset=\"digits\"", "width=4"])
    with pytest.raises(RunAbandoned):
        start_run(config, tmp_path / "t", resume=True, may_write=lambda: False)
    assert not (tmp_path / "t").exists()


@pytest.mark.slow  # three trainings: about a minute on 2 busy cores
def test_a_run_paused_at_a_rung_and_resumed_ends_like_an_uninterrupted_run(tmp_path):
    """A multi-fidelity rung: ``fit(until_epoch=…)`` stops after that epoch (validated and
    checkpointed) under the whole run's schedule, so the resumed run ends exactly where an
    uninterrupted one does; each epoch is in the history once."""
    from localrules.runs import RunDirectory
    from localrules.train.trainer import start_run

    config = config_from_preset("ia-tpe", overrides=[
        "dataset=\"digits\"", "width=4", "run.batch_size=128", "run.epochs=2",
        "run.warmup_epochs=1", "run.drop_epochs=[1.5]", "deterministic=true", "eval_every=2"])
    whole = start_run(config, tmp_path / "whole", resume=False)[0].fit()
    trainer, _ = start_run(config, tmp_path / "paused", resume=True)
    paused = trainer.fit(until_epoch=1)
    assert (paused.epochs, paused.interrupted) == (1, False)
    assert paused.top1 is not None  # validated at the rung though eval_every is 2
    assert paused.steps == trainer.plan.epoch_end(0)
    with pytest.raises(ValueError, match="past the run's 2 epochs"):
        trainer.fit(until_epoch=3)
    trainer, restored = start_run(config, tmp_path / "paused", resume=True)
    assert restored and int(trainer.step) == paused.steps
    resumed = trainer.fit()
    assert (resumed.top1, resumed.eval_loss, resumed.steps) == (
        whole.top1, whole.eval_loss, whole.steps)
    epochs = [r["epoch"] for r in RunDirectory(tmp_path / "paused").read_history()]
    assert epochs == [1, 2]


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "localrules.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kwargs)


RESUME_ARGS = ["train", "--preset", "ia-tpe", "--width", "8", "--epochs", "4",
               "--batch-size", "64", "--deterministic", "--no-progress",
               "--set", "run.warmup_epochs=1", "--set", "run.drop_epochs=[3]"]


@pytest.mark.slow  # a killed or signalled process, or a second strategy: evidence, minutes
def test_sigterm_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    whole = _cli([*RESUME_ARGS, "--out", str(tmp_path / "whole")])
    cut = _cli([*RESUME_ARGS, "--out", str(tmp_path / "cut")])
    history = tmp_path / "cut" / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (history.exists() and history.read_text().strip()):
        time.sleep(0.2)
    cut.send_signal(signal.SIGTERM)
    _, err = cut.communicate(timeout=300)
    assert cut.returncode == 143, err[-3000:]
    resumed = _cli([*RESUME_ARGS, "--out", str(tmp_path / "cut"), "--resume"])
    out_resumed, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    out_whole, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-3000:]
    a, b = json.loads(out_whole.splitlines()[-1]), json.loads(out_resumed.splitlines()[-1])
    assert b["steps"] == a["steps"] and not b["interrupted"]
    assert b["top1"] == a["top1"] and b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-9)
    for name, angle in a["weight_angle_deg"].items():
        assert b["weight_angle_deg"][name] == pytest.approx(angle, rel=1e-9, abs=1e-9)
    epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.slow  # a killed or signalled process, or a second strategy: evidence, minutes
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    code = f"""
import json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from localrules.config import config_from_preset
from localrules.train.trainer import Trainer
config = config_from_preset("ia-tpe", overrides=["dataset=\\"digits\\"", "width=4",
    "run.batch_size=64", "run.epochs=2", "run.delay_epochs=0", "strategy=\\"mirrored\\""])
trainer = Trainer(config, {str(tmp_path / "m")!r})
result = trainer.fit()
print(json.dumps([trainer.strategy.num_replicas_in_sync, result.top1, result.diverged]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    replicas, top1, diverged = json.loads(done.stdout.splitlines()[-1])
    assert replicas == 2 and not diverged and 0 <= top1 <= 1
    record = json.loads((tmp_path / "m" / "history.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(m["alignment_loss"]) for m in record["layers"].values())


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--rule", "zz"], "unknown rule 'zz'"),
        (["--rule", "fa", "--model", "resnet19"], "unknown model 'resnet19'; valid:"),
        (["--rule", "fa", "--dataset", "mnist"], "unknown dataset 'mnist'; valid:"),
        (["--rule", "fa", "--set", "run.lr=0.1"], "unknown config key 'run.lr'"),
        (["--rule", "fa", "--set", "run.epochs=two"], "run.epochs must be an integer"),
        (["--rule", "fa", "--epochs", "0"], "--epochs: must be an integer in [1, 10000]"),
        (["--rule", "fa", "--batch-size", "0"], "--batch-size: must be an integer in [1, 1048576]"),
        (["--rule", "fa", "--image-size", "4"], "--image-size: must be an integer in [8, 4096]"),
        (["--rule", "fa", "--seed", "-1"], "--seed: must be an integer in [0, 4294967295]"),
        (["--rule", "fa", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"],
         "/nonexistent/cifar"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", *argv]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_existing_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(config_from_preset("fa").to_json())
    assert main(["train", "--rule", "fa", "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_with_another_config_is_refused_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    text = config_from_preset("fa").to_json()
    (out / "config.json").write_text(text)
    assert main(["train", "--rule", "fa", "--out", str(out), "--no-progress", "--resume"]) == 2
    assert f"--resume with a different config than the run in {out}" in capsys.readouterr().err
    assert (out / "config.json").read_text() == text and os.listdir(out) == ["config.json"]
