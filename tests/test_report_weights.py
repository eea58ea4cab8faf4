"""Weight snapshots written by the trainer and ``localrules report weights`` (Figs. S3, S4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from localrules.analysis.plots import weight_metrics_figure, weight_scatter_figure
from localrules.analysis.weight_report import default_epochs, scatter_samples, weight_history
from localrules.cli.main import main
from localrules.config import config_from_preset
from localrules.snapshots import list_snapshots, read_snapshot, sample_positions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_shape(path) -> tuple[int, ...]:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    return imread(path).shape


@pytest.fixture(scope="module")
def sa_run(tmp_path_factory):
    """Symmetric alignment on digits for 3 epochs, 64 sampled pairs per layer; the trainer."""
    from localrules.train.trainer import Trainer

    out = tmp_path_factory.mktemp("weights") / "sa"
    config = config_from_preset("sa", overrides=[
        'dataset="digits"', "width=4", "run.batch_size=64", "run.epochs=3",
        "run.alignment_lr=0.01", "weight_samples=64"])
    trainer = Trainer(config, out)
    trainer.fit()
    return out, trainer


def test_snapshots_hold_the_same_sampled_pairs_at_every_validation(sa_run):
    out, trainer = sa_run
    found = list_snapshots(str(out))
    assert list(found) == [0, 1, 2, 3]
    first, last = read_snapshot(found[0]), read_snapshot(found[3])
    assert first.step == 0 and last.step == int(trainer.step)
    assert list(last.layers) == [layer.name for layer in trainer.state.layers]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    for i, layer in enumerate(trainer.state.layers):
        a, b = first.layers[layer.name], last.layers[layer.name]
        w = layer.forward_kernel.numpy()
        assert b.shape == w.shape
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(b.positions, sample_positions(w.size, 64, 0, i))
        assert len(b.positions) == min(64, w.size)
        # The pairs are (W_ij, B_ji): W at the position and B transposed into W's layout.
        np.testing.assert_allclose(b.w, w.ravel()[b.positions], rtol=1e-6)
        np.testing.assert_allclose(b.b, layer.backward_as_forward().numpy().ravel()[b.positions],
                                   rtol=1e-6)
        assert b.angle_deg == pytest.approx(
            history[-1]["layers"][layer.name]["weight_angle_deg"], rel=1e-9)


def test_weight_history_starts_at_initialisation_and_sa_aligns(sa_run):
    out, trainer = sa_run
    h = weight_history(str(out))
    assert h.epochs == [0, 1, 2, 3]
    assert h.layers == [layer.name for layer in trainer.state.layers]
    initial = np.array([h.angles[n][0] for n in h.layers])
    final = np.array([h.angles[n][-1] for n in h.layers])
    assert np.all(np.abs(initial - 90) < 25)  # independent draws: about orthogonal
    assert final.mean() < initial.mean() - 20  # SA pulls B towards W
    assert len(h.rows()) == 4 * len(h.layers)


def test_figures_have_the_papers_axes(sa_run):
    out, _ = sa_run
    h = weight_history(str(out))
    fig = weight_metrics_figure(h.epochs, h.angles, h.norm_ratios)
    left, right, bar = fig.axes
    assert left.get_ylabel() == "angle between W and B (degrees)"
    assert right.get_ylabel() == r"$\|B\|_F\ /\ \|W\|_F$" and left.get_xlabel() == "epoch"
    assert len(left.lines) == len(h.layers) and "depth" in bar.get_ylabel()
    layer, samples = scatter_samples(str(out), None, None)
    assert layer == h.layers[2] and len(samples) == 4 and samples[0][0].startswith("init")
    scatter = weight_scatter_figure(samples, layer)
    assert scatter.axes[0].get_ylabel() == r"backward weight $B_{ji}$"
    assert scatter.axes[0].get_xlabel() == r"forward weight $W_{ij}$"


def test_report_weights_cli_writes_figures_and_csv(sa_run, tmp_path, capsys):
    out, trainer = sa_run
    layer = trainer.state.layers[0].name
    dest = tmp_path / "fig"
    assert main(["report", "weights", "--run", str(out), "--layer", layer, "--epochs", "0", "3",
                 "--out", str(dest)]) == 0
    text = capsys.readouterr().out
    assert "4 validation points" in text and layer in text
    assert png_shape(dest / "weight_metrics.png")[0] > 300
    assert png_shape(dest / f"weight_scatter_{layer}.png")[1] > 300
    rows = (dest / "weight_metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,layer,depth,weight_angle_deg,norm_ratio"
    assert len(rows) == 1 + 4 * len(trainer.state.layers)


@pytest.mark.parametrize(("args", "message"), [
    (["--layer", "nope"], "no layer 'nope' in the snapshots; layers: "),
    (["--epochs", "7"], "no weight snapshot at epoch(s) 7; available: 0, 1, 2, 3"),
    (["--epochs", "-1"], "--epochs: must be an integer in [0, 10000]"),
])
def test_report_weights_bad_input_exits_2_and_writes_nothing(sa_run, tmp_path, capsys, args,
                                                             message):
    out, _ = sa_run
    dest = tmp_path / "nothing"
    assert main(["report", "weights", "--run", str(out), "--out", str(dest), *args]) == 2
    assert message in capsys.readouterr().err
    assert not dest.exists()


def test_report_weights_needs_a_run_directory(tmp_path, capsys):
    assert main(["report", "weights", "--run", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["report", "weights", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "history.jsonl not found" in capsys.readouterr().err
    assert main(["report", "weights", "--experiment", "e", "--out", str(tmp_path / "o")]) == 2
    assert "--experiment and --trial go together" in capsys.readouterr().err


def test_default_epochs_spread_over_training():
    assert default_epochs([0, 1, 2]) == [0, 1, 2]
    assert default_epochs(list(range(46))) == [0, 15, 30, 45]


def test_a_truncated_snapshot_is_a_clear_error(sa_run, tmp_path, capsys):
    import shutil

    out, _ = sa_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    path = copy / "weights" / "epoch-0002.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert main(["report", "weights", "--run", str(copy), "--epochs", "2", "--out",
                 str(tmp_path / "o")]) == 2
    assert "epoch-0002.npz is not a weight snapshot" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_without_weight_samples_the_metrics_still_start_at_initialisation(tmp_path, capsys):
    from localrules.train.trainer import Trainer

    config = config_from_preset("fa", overrides=[
        'dataset="digits"', "width=4", "run.batch_size=128", "run.epochs=1",
        "weight_samples=0"])
    Trainer(config, tmp_path / "fa").fit()
    snap = read_snapshot(str(tmp_path / "fa" / "weights" / "epoch-0000.npz"))
    assert all(len(s.positions) == 0 for s in snap.layers.values())
    assert weight_history(str(tmp_path / "fa")).epochs == [0, 1]
    dest = tmp_path / "figs"
    assert main(["report", "weights", "--run", str(tmp_path / "fa"), "--out", str(dest)]) == 0
    assert (dest / "weight_metrics.png").is_file()
    assert not list(dest.glob("weight_scatter_*"))  # nothing to scatter: said, not drawn
    assert main(["report", "weights", "--run", str(tmp_path / "fa"), "--layer", "stem_conv",
                 "--out", str(tmp_path / "x")]) == 2
    assert "kept no weight pairs (its weight_samples is 0)" in capsys.readouterr().err
