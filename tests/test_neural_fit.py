"""Neural fitting (appendix B.5): the analysis recovers a planted layer and nothing from shuffled
responses, splits 75/25 within every category, corrects for noise as documented, and refuses bad
input; end to end, ``localrules neural-fit`` on a real trained digits run finds the layer the
responses were made from and writes its four files, and bad input exits 2 writing nothing.

The first part is NumPy and scikit-learn only; the second trains one tiny network (shared by the
module's TensorFlow tests).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from localrules.analysis.neural_fit import (
    LayerFit,
    fit_layer,
    neural_fit,
    noise_corrected,
    site_rows,
    stratified_split,
    summary_rows,
)

N_IMAGES = 400
N_CATEGORIES = 8
N_SITES = 30
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- synthetic data -----------------------------------------------------------------------------
def _layers(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Three unrelated Gaussian 'layers'; "c" is wider than the PCA limit used below."""
    return {name: rng.standard_normal((N_IMAGES, d)).astype(np.float32)
            for name, d in (("a", 100), ("b", 200), ("c", 600))}


def _planted(features: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Responses = a known random linear map of ``features`` + noise (``noise`` × signal SD).

    The map has rank 8, as neural responses are low-dimensional: a full-rank map of 200
    isotropic features into 30 sites needs more than the 25 PLS components to be recovered.
    """
    weights = rng.standard_normal((features.shape[1], 8)) @ rng.standard_normal((8, N_SITES))
    signal = features @ weights
    return signal + noise * signal.std(axis=0) * rng.standard_normal(signal.shape)


def _categories() -> np.ndarray:
    return np.repeat(np.arange(N_CATEGORIES), N_IMAGES // N_CATEGORIES)


# --- the analysis -------------------------------------------------------------------------------
def test_the_planted_layer_scores_highest(rng):
    layers = _layers(rng)
    responses = _planted(layers["b"], rng)
    fits = neural_fit(layers, responses, _categories(), pca=250)
    scores = {f.layer: f.median_r for f in fits}
    print("median held-out r per layer:", scores)
    assert [f.layer for f in fits] == ["a", "b", "c"]  # the order given
    assert max(scores, key=scores.get) == "b"
    assert scores["b"] > 0.8
    assert abs(scores["a"]) < 0.15 and abs(scores["c"]) < 0.15
    by_name = {f.layer: f for f in fits}
    assert by_name["c"].n_features == 600
    assert by_name["c"].n_fitted_features == 250  # reduced by the PCA
    assert by_name["b"].n_fitted_features == 200  # narrower than the PCA limit: no PCA
    # round(0.75 · 50) = 38 of each category's 50 images train, 12 are held out.
    assert all(f.n_train == 304 and f.n_test == 96 and f.n_nan_sites == 0 for f in fits)


def test_shuffled_responses_score_near_zero(rng):
    layers = _layers(rng)
    responses = _planted(layers["b"], rng)
    shuffled = responses[rng.permutation(N_IMAGES)]
    (fit,) = neural_fit({"b": layers["b"]}, shuffled, _categories())
    print("median r, shuffled responses:", fit.median_r)
    assert abs(fit.median_r) < 0.15


def test_a_planted_signal_survives_the_pca(rng):
    """A wide layer whose variance lives in a few directions (like real features) keeps its
    signal through the reduction to 50 components."""
    latent = rng.standard_normal((N_IMAGES, 10))
    wide = latent @ rng.standard_normal((10, 2000)) + 0.1 * rng.standard_normal((N_IMAGES, 2000))
    responses = latent @ rng.standard_normal((10, N_SITES))
    responses += 0.1 * responses.std(axis=0) * rng.standard_normal(responses.shape)
    (fit,) = neural_fit({"wide": wide}, responses, _categories(), pca=50)
    assert fit.n_fitted_features == 50
    assert fit.median_r > 0.9


def test_held_out_r_matches_an_independent_fit(rng):
    """The per-site r equals the documented pipeline rebuilt here from scikit-learn parts: no
    held-out image reaches the scalers or the regression."""
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.preprocessing import StandardScaler

    features = rng.standard_normal((N_IMAGES, 40))
    responses = _planted(features, rng, noise=1.0)
    train, test = stratified_split(_categories(), seed=3)
    fit = fit_layer(features, responses, train, test, n_components=5, pca=0, seed=3)
    x_scaler = StandardScaler().fit(features[train])
    y_scaler = StandardScaler().fit(responses[train])
    pls = PLSRegression(n_components=5, scale=False).fit(
        x_scaler.transform(features[train]), y_scaler.transform(responses[train]))
    predicted = pls.predict(x_scaler.transform(features[test]))
    expected = [np.corrcoef(predicted[:, s], responses[test, s])[0, 1] for s in range(N_SITES)]
    np.testing.assert_allclose(fit.r, expected, atol=1e-9)
    assert fit.median_r == pytest.approx(np.median(expected))


def test_stratified_split_is_75_25_within_every_category_and_seeded():
    sizes = [10, 11, 12, 13, 2, 3, 50, 7]
    categories = np.concatenate([np.full(n, f"cat{i}") for i, n in enumerate(sizes)])
    categories = categories[np.random.default_rng(0).permutation(len(categories))]
    train, test = stratified_split(categories, seed=5)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(categories)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    for i, n in enumerate(sizes):
        n_train = int(np.sum(categories[train] == f"cat{i}"))
        n_test = int(np.sum(categories[test] == f"cat{i}"))
        assert n_train + n_test == n
        assert n_train == min(max(math.floor(0.75 * n + 0.5), 1), n - 1), (n, n_train)
        assert n_test >= 1
    again = stratified_split(categories, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again, strict=True))
    assert not np.array_equal(stratified_split(categories, seed=6)[0], train)


def test_noise_correction_is_r_over_sqrt_reliability(rng):
    layers = _layers(rng)
    responses = _planted(layers["b"], rng, noise=0.5)
    reliability = rng.uniform(0.2, 0.95, N_SITES)
    reliability[[3, 7, 11]] = [0.0, -0.2, np.nan]  # no correction possible for these
    (fit,) = neural_fit({"b": layers["b"]}, responses, _categories(), reliability=reliability)
    expected = np.array([r / math.sqrt(rel) if rel > 0 else np.nan
                         for r, rel in zip(fit.r, reliability, strict=True)])
    np.testing.assert_allclose(fit.r_corrected, expected, rtol=1e-12, equal_nan=True)
    assert fit.n_uncorrected_sites == 3
    assert fit.median_corrected == pytest.approx(np.nanmedian(expected))
    assert fit.median_corrected > fit.median_r
    np.testing.assert_allclose(noise_corrected(fit.r, reliability), expected, equal_nan=True)


def test_a_constant_site_is_nan_counted_and_left_out_of_the_median(rng):
    layers = _layers(rng)
    responses = _planted(layers["b"], rng)
    responses[:, 4] = 2.5
    (fit,) = neural_fit({"b": layers["b"]}, responses, _categories())
    assert np.isnan(fit.r[4]) and fit.n_nan_sites == 1
    assert fit.median_r == pytest.approx(np.median(np.delete(fit.r, 4)))
    assert fit.to_dict()["n_nan_sites"] == 1


def test_too_many_components_are_clamped_with_a_warning(rng, caplog):
    categories = np.repeat(np.arange(4), 10)  # 32 training images
    features = rng.standard_normal((40, 6))
    responses = features @ rng.standard_normal((6, 5))
    with caplog.at_level(logging.WARNING, logger="localrules.analysis.neural_fit"):
        (fit,) = neural_fit({"narrow": features}, responses, categories, n_components=25)
    assert fit.n_components == 6
    assert "25 PLS components requested" in caplog.text and "using 6" in caplog.text


def test_summary_and_site_tables(rng):
    layers = _layers(rng)
    del layers["c"]
    responses = _planted(layers["b"], rng)
    fits = neural_fit(layers, responses, _categories(), reliability=np.full(N_SITES, 0.5))
    summary = summary_rows(fits)
    assert [row["layer"] for row in summary] == ["a", "b"]
    assert list(summary[0])[:6] == ["layer", "n_features", "median_r", "median_corrected",
                                    "n_sites", "n_nan_sites"]
    sites = site_rows(fits)
    assert len(sites) == 2 * N_SITES
    assert list(sites[0]) == ["layer", "site", "r", "r_corrected"]
    json.dumps({"layers": summary, "sites": sites}, allow_nan=False)  # NaN-free, JSON-ready


def test_the_figure_is_a_png(tmp_path, rng):
    from localrules.analysis.plots import neural_fit_figure, save_png

    fits = [LayerFit("x", 10, 10, 5, 30, 10, rng.uniform(0, 1, 20)),
            LayerFit("y", 10, 10, 5, 30, 10, np.r_[np.nan, rng.uniform(0, 1, 19)])]
    fig = neural_fit_figure(fits)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "layer"
    assert ax.get_ylabel().startswith("held-out Pearson r (median over sites)")
    path = save_png(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def _bad(rng, **change):
    data = {"responses": rng.standard_normal((40, 5)), "categories": np.repeat(np.arange(4), 10),
            "features": rng.standard_normal((40, 6)), "reliability": None}
    data.update(change)
    return neural_fit({"l": data["features"]}, data["responses"], data["categories"],
                      reliability=data["reliability"])


@pytest.mark.parametrize(("change", "message"), [
    (lambda rng: {"responses": rng.standard_normal(40)},
     r"responses must be a 2-D array of shape \(images, sites\).*got shape \(40,\)"),
    (lambda rng: {"categories": np.repeat(np.arange(4), 9)},
     r"responses have shape \(40, 5\) \(40 images\) but categories have shape \(36,\)"),
    (lambda rng: {"features": rng.standard_normal((39, 6))},
     r"layer 'l' must have one row per image: responses have 40 images but the features have "
     r"shape \(39, 6\)"),
    (lambda rng: {"reliability": np.ones(4)},
     r"one value per site: responses have shape \(40, 5\) \(5 sites\) but reliability has "
     r"shape \(4,\)"),
    (lambda rng: {"reliability": np.full(5, 1.5)}, "reliability must be a correlation"),
    (lambda rng: {"responses": np.where(np.eye(40, 5) > 0, np.nan, 1.0)},
     r"responses contain 5 NaN/Inf values \(the first at image 0, site 0\); every response "
     "must be finite"),
    (lambda rng: {"categories": np.r_[np.repeat(np.arange(3), 13), 7]},
     "category 7 has a single image; .* at least 2 images per category"),
])
def test_bad_input_is_a_clear_value_error(rng, change, message):
    with pytest.raises(ValueError, match=message):
        _bad(rng, **change(rng))


def test_bad_settings_are_value_errors(rng):
    data = rng.standard_normal((40, 5))
    categories = np.repeat(np.arange(4), 10)
    with pytest.raises(ValueError, match="n_components must be an integer >= 1, got 0"):
        neural_fit({"l": data}, data, categories, n_components=0)
    with pytest.raises(ValueError, match="pca must be an integer >= 0"):
        neural_fit({"l": data}, data, categories, pca=-1)
    with pytest.raises(ValueError, match="no layers to fit"):
        neural_fit({}, data, categories)


# --- end to end with TensorFlow -----------------------------------------------------------------
PLANTED = "group2_block2_out"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One ResNet-18 of width 4 trained by `localrules train` for an epoch of digits (~15 s)."""
    from localrules.cli.main import main

    out = tmp_path_factory.mktemp("neural_fit") / "run"
    assert main(["train", "--rule", "bp", "--width", "4", "--epochs", "1", "--batch-size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def stimuli() -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 8×8 grayscale stimuli (0–16 scaled to 0–255) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    return images, digits.target


def _stored_forward_kernels(checkpoint: str, shape: tuple[int, ...]) -> list[np.ndarray]:
    """The values saved for the model's layers' ``forward_kernel`` of ``shape``, found through
    the checkpoint's object graph (a variable is saved once, under whichever path reached it
    first — trainable ones under the optimizer — so keys alone do not say which layer it is)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(checkpoint)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))

    def children(node: int) -> dict[str, int]:
        return {c.local_name: c.node_id for c in graph.nodes[node].children}

    operations = children(children(children(0)["model"])["_operations"])
    found = []
    for node in operations.values():
        kernel = children(node).get("forward_kernel")
        if kernel is None:
            continue
        value = reader.get_tensor(graph.nodes[kernel].attributes[0].checkpoint_key)
        if value.shape == shape:
            found.append(value)
    return found


def test_restored_weights_are_the_checkpoints_and_stimuli_are_normalised_like_eval(run_dir):
    from localrules.data.digits import EVAL_FRACTION, SPLIT_SEED
    from localrules.data.digits import stratified_split as digits_split
    from localrules.train.features import TrainedRun

    trained = TrainedRun(str(run_dir / "checkpoints"))  # the checkpoints/ subdir is accepted
    assert trained.run_dir == str(run_dir)
    kernel = trained.model.get_layer("classifier").forward_kernel
    fresh = kernel.numpy().copy()
    trained.restore()
    stored = _stored_forward_kernels(trained.checkpoint, tuple(kernel.shape))
    assert len(stored) == 1
    np.testing.assert_array_equal(kernel.numpy(), stored[0])
    assert not np.array_equal(fresh, stored[0])

    # The eval pipeline's first images, and the same digits given as [0, 1] stimuli.
    from sklearn.datasets import load_digits

    digits = load_digits()
    _, eval_idx = digits_split(digits.target, EVAL_FRACTION, SPLIT_SEED)
    pipeline = next(iter(trained.dataset.eval(16)))[0].numpy()
    ours = trained.preprocess((digits.images[eval_idx[:16]] / 16.0).astype(np.float32))
    np.testing.assert_allclose(ours.numpy(), pipeline, rtol=1e-6, atol=1e-6)


def test_every_dataset_normalises_unit_images_in_its_stored_units():
    """Stimuli arrive in [0, 1]; a dataset that stores 0–255 (CIFAR-10) scales them first."""
    from localrules.data import DatasetInfo, load_dataset
    from localrules.data.base import ArrayDataset

    images = np.zeros((2, 4, 4, 3), np.uint8)
    labels = np.zeros(2, np.int32)
    info = DatasetInfo("tiny", 2, (4, 4, 3), 2, 2)
    stored_255 = ArrayDataset(info, 0, (images, labels), (images, labels),
                              mean=np.full(3, 127.5), std=np.full(3, 50.0), pixel_scale=255.0)
    unit = np.full((1, 4, 4, 3), 1.0, np.float32)
    np.testing.assert_allclose(stored_255.normalise_unit(unit).numpy(), (255 - 127.5) / 50)
    synthetic = load_dataset("synthetic", image_shape=[4, 4, 3], train_examples=2,
                             eval_examples=2)
    np.testing.assert_array_equal(synthetic.normalise_unit(unit).numpy(), unit)


def test_neural_fit_cli_finds_the_planted_layer(run_dir, stimuli, tmp_path, capsys):
    from localrules.cli.main import main
    from localrules.train.features import TrainedRun

    images, labels = stimuli
    trained = TrainedRun(str(run_dir))
    trained.restore()
    features = trained.extract(images, [PLANTED])[PLANTED]
    rng = np.random.default_rng(7)
    responses = features @ rng.standard_normal((features.shape[1], 24))
    responses += 0.3 * responses.std(axis=0) * rng.standard_normal(responses.shape)
    paths = {}
    for name, array in (("images", images), ("responses", responses), ("labels", labels),
                        ("rel", rng.uniform(0.5, 0.9, 24))):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    out = tmp_path / "out"

    code = main(["neural-fit", "--checkpoint", str(run_dir), "--stimuli", str(paths["images"]),
                 "--responses", str(paths["responses"]), "--categories", str(paths["labels"]),
                 "--reliability", str(paths["rel"]), "--out", str(out), "--format", "json",
                 "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    scores = {row["layer"]: row["median_r"] for row in printed["layers"]}
    print("median held-out r per layer:", scores)
    assert list(scores) == ["group1_block2_out", "group2_block2_out", "group3_block2_out",
                            "group4_block2_out", "pool"]  # the default layers, in order
    assert max(scores, key=scores.get) == PLANTED
    assert scores[PLANTED] > 0.8
    assert all(row["median_corrected"] is not None for row in printed["layers"])

    for name in ("neural_fit.csv", "neural_fit_sites.csv", "neural_fit.json", "neural_fit.png"):
        assert (out / name).is_file(), name
    csv_lines = (out / "neural_fit.csv").read_text().splitlines()
    assert csv_lines[0].startswith("layer,n_features,median_r,median_corrected,n_sites,"
                                   "n_nan_sites")
    assert len(csv_lines) == 1 + 5
    assert len((out / "neural_fit_sites.csv").read_text().splitlines()) == 1 + 5 * 24
    assert json.loads((out / "neural_fit.json").read_text())["layers"] == printed["layers"]
    png = out / "neural_fit.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] >= 300 and pixels.shape[1] >= 500


def _cli(run_dir: Path, tmp_path: Path, *, images=None, responses=None, labels=None,
         extra: tuple[str, ...] = ()) -> tuple[int, Path]:
    from localrules.cli.main import main

    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (40, 8, 8), dtype=np.uint8) if images is None
              else images,
              "responses": rng.standard_normal((40, 6)) if responses is None else responses,
              "labels": np.repeat(np.arange(4), 10) if labels is None else labels}
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "out"
    code = main(["neural-fit", "--checkpoint", str(run_dir),
                 "--stimuli", str(tmp_path / "images.npy"),
                 "--responses", str(tmp_path / "responses.npy"),
                 "--categories", str(tmp_path / "labels.npy"), "--out", str(out),
                 "--no-progress", *extra])
    return code, out


def test_cli_mismatched_image_counts_exit_2_and_write_nothing(run_dir, tmp_path, capsys):
    code, out = _cli(run_dir, tmp_path, responses=np.zeros((39, 6)))
    err = capsys.readouterr().err
    assert code == 2
    assert "(40, 8, 8)" in err and "(39, 6)" in err
    assert not out.exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"extra": ("--layer", "nope")}, "unknown layer 'nope' in resnet18; valid (in forward "
     "order): stem_conv, stem_bn"),
    ({"extra": ("--components", "0")}, "--components: must be an integer in [1, 10000], got '0'"),
    ({"responses": np.zeros(40)}, "--responses must be 2-D (images, sites), got shape (40,)"),
    ({"labels": np.r_[np.repeat(np.arange(3), 13), 9]}, "category 9 has a single image"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "responses": np.ones((4, 6)),
      "labels": np.array([0, 0, 1, 1])}, "leaves 2 held-out images; a per-site Pearson r needs "
     "at least 3"),
    ({"responses": np.full((40, 6), np.nan)}, "responses contain 240 NaN/Inf values"),
    ({"images": np.full((40, 8, 8), 2.0)}, "floating-point --stimuli must be in [0, 1]"),
    ({"images": np.zeros((40, 8, 8, 2), np.uint8)},
     "stimuli have 2 channels but the model takes 1"),
    ({"images": np.array([{"a": 1}] * 40, dtype=object)}, "cannot read it as a .npy array"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, kwargs, message):
    code, out = _cli(run_dir, tmp_path, **kwargs)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert not out.exists()


def test_cli_bad_paths_exit_2(run_dir, tmp_path, capsys):
    from localrules.cli.main import main

    code, _ = _cli(run_dir, tmp_path)  # a valid call, for the files
    assert code == 0
    base = ["neural-fit", "--stimuli", str(tmp_path / "images.npy"),
            "--responses", str(tmp_path / "responses.npy"),
            "--categories", str(tmp_path / "labels.npy"), "--no-progress"]
    capsys.readouterr()

    missing = tmp_path / "nowhere"
    assert main([*base, "--checkpoint", str(missing), "--out", str(tmp_path / "o1")]) == 2
    assert str(missing) in capsys.readouterr().err

    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    (empty_run / "config.json").write_text((run_dir / "config.json").read_text())
    assert main([*base, "--checkpoint", str(empty_run), "--out", str(tmp_path / "o2")]) == 2
    assert f"{empty_run}/checkpoints does not exist" in capsys.readouterr().err
    (empty_run / "checkpoints").mkdir()
    assert main([*base, "--checkpoint", str(empty_run), "--out", str(tmp_path / "o2")]) == 2
    assert f"no checkpoint in {empty_run}/checkpoints" in capsys.readouterr().err

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main([*base, "--checkpoint", str(run_dir), "--out", str(a_file)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err

    text = tmp_path / "responses.csv"
    text.write_text("1,2\n")
    args = [*base, "--checkpoint", str(run_dir), "--out", str(tmp_path / "o3")]
    args[args.index("--responses") + 1] = str(text)
    assert main(args) == 2
    assert "expected a .npy file" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))
