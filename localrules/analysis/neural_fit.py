"""Neural fitting (appendix B.5): how well a layer's features predict recorded neural responses.

The procedure, per layer:

1. Split the images 75/25 *within each object category* (``stratified_split``), so every
   category is seen in training and scored on held-out images.
2. Standardise every feature with the training images' mean and standard deviation.
3. When the layer has more than ``pca`` features, project onto the top ``pca`` principal
   components of the training images (randomized SVD, seeded). The components are *not* whitened:
   low-variance directions, which are mostly noise, stay small.
4. Standardise every site's responses with training statistics, and fit a partial least squares
   regression with ``n_components`` (25) latent components on the training images.
5. Predict the held-out images; score each site by the Pearson r between its predicted and
   recorded held-out responses; summarise by the median over sites.

The appendix names the data, the split and the targets but not the regression (paper-spec §B.5,
"fitting method not found"); PCA followed by 25-component PLS is the usual choice for these data
and is what is done here. Nothing fitted ever sees a held-out image: the scalers, the PCA and the
PLS are all fitted on the training images only.

Noise correction. When a per-site reliability is given — the split-half correlation of the
site's responses across repeats, Spearman–Brown corrected, i.e. the correlation one would expect
between two full-length repeats — the corrected score is ``r / sqrt(reliability)``: the fraction
of the explainable correlation that the model explains. It is computed only where the
reliability is positive (elsewhere NaN, counted), is not clipped (a noisy reliability can push it
above 1), and ``median_corrected`` is the median over the sites where it is defined.

NumPy and scikit-learn only: analysis never imports TensorFlow (DESIGN.md).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TRAIN_FRACTION = 0.75
MIN_HELD_OUT = 3
"""Fewer held-out images than this give no meaningful Pearson r (two always give ±1)."""
_CONSTANT_RTOL = 1e-6
"""A column whose std is at most this fraction of its |mean| (or exactly 0) is constant."""


# --- the split ----------------------------------------------------------------------------------
def stratified_split(
    categories: np.ndarray, train_fraction: float = TRAIN_FRACTION, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) image indices with ``train_fraction`` of every category in train.

    Within each category (in sorted order) the images are shuffled with NumPy's legacy
    ``RandomState(seed)`` — frozen across NumPy versions, so a seed names the same split forever —
    and round(fraction·n) go to train, clamped so both sides keep at least one image. A category
    with a single image cannot be split and is a ValueError naming it.
    """
    categories = np.asarray(categories)
    if categories.ndim != 1 or categories.size == 0:
        raise ValueError(f"categories must be a non-empty 1-D array (one label per image), got "
                         f"shape {categories.shape}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    labels, counts = np.unique(categories, return_counts=True)
    single = labels[counts < 2]
    if single.size:
        shown = ", ".join(repr(_plain(v)) for v in single[:10])
        more = f" (and {single.size - 10} more)" if single.size > 10 else ""
        raise ValueError(f"category {shown}{more} has a single image; the split within each "
                         "category needs at least 2 images per category (1 to fit, 1 to test)")
    rng = np.random.RandomState(seed)
    train, test = [], []
    for label in labels:
        members = rng.permutation(np.flatnonzero(categories == label))
        n_train = min(max(math.floor(len(members) * train_fraction + 0.5), 1),
                      len(members) - 1)
        train.append(members[:n_train])
        test.append(members[n_train:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def split_for_fit(categories: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``stratified_split``, refused (ValueError) when the held-out set is too small for a
    per-site r or the training set too small to fit: checked before any feature is computed."""
    train_idx, test_idx = stratified_split(categories, seed=seed)
    if len(test_idx) < MIN_HELD_OUT:
        raise ValueError(f"the 75/25 split within categories leaves {len(test_idx)} held-out "
                         f"images; a per-site Pearson r needs at least {MIN_HELD_OUT} (give more "
                         "images per category)")
    if len(train_idx) < 2:
        raise ValueError(f"the split leaves {len(train_idx)} training image(s); the fit needs "
                         "at least 2")
    return train_idx, test_idx


# --- input checks -------------------------------------------------------------------------------
def check_responses(
    responses: Any, categories: Any, reliability: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate the neural side of a fit; returns (responses float64, categories, reliability).

    ``responses`` is (images, sites) and finite; ``categories`` has one label per image;
    ``reliability`` has one value per site, each a correlation (≤ 1, not ±Inf; NaN marks a site
    without an estimate). Every problem is a ValueError that says what was given and what is valid.
    """
    responses = np.asarray(responses)
    if responses.ndim != 2 or 0 in responses.shape:
        raise ValueError(f"responses must be a 2-D array of shape (images, sites) with at least "
                         f"one of each, got shape {responses.shape}")
    if not (np.issubdtype(responses.dtype, np.floating)
            or np.issubdtype(responses.dtype, np.integer)):
        raise ValueError(f"responses must be numbers, got dtype {responses.dtype}")
    responses = responses.astype(np.float64)
    bad = ~np.isfinite(responses)
    if bad.any():
        image, site = np.argwhere(bad)[0]
        raise ValueError(f"responses contain {int(bad.sum())} NaN/Inf values (the first at image "
                         f"{image}, site {site}); every response must be finite — drop or impute "
                         "missing entries before fitting")
    categories = np.asarray(categories)
    if categories.shape != (responses.shape[0],):
        raise ValueError(f"categories must be a 1-D array with one label per image: responses "
                         f"have shape {responses.shape} ({responses.shape[0]} images) but "
                         f"categories have shape {categories.shape}")
    if not (np.issubdtype(categories.dtype, np.integer) or categories.dtype.kind in "UbS"):
        raise ValueError(f"categories must be integer or string labels, got dtype "
                         f"{categories.dtype}")
    if reliability is not None:
        reliability = np.asarray(reliability)
        if reliability.shape != (responses.shape[1],):
            raise ValueError(f"reliability must have one value per site: responses have shape "
                             f"{responses.shape} ({responses.shape[1]} sites) but reliability "
                             f"has shape {reliability.shape}")
        if not (np.issubdtype(reliability.dtype, np.floating)
                or np.issubdtype(reliability.dtype, np.integer)):
            raise ValueError(f"reliability must be numbers, got dtype {reliability.dtype}")
        reliability = reliability.astype(np.float64)
        if np.isinf(reliability).any():
            raise ValueError("reliability contains ±Inf; use NaN for a site without an estimate")
        if (reliability > 1).any():
            site = int(np.flatnonzero(reliability > 1)[0])
            raise ValueError(f"reliability must be a correlation (at most 1), got "
                             f"{reliability[site]:g} at site {site}")
    return responses, categories, reliability


def _features_2d(name: str, features: Any, n_images: int) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim < 1 or features.shape[0] != n_images:
        raise ValueError(f"features of layer {name!r} must have one row per image: responses "
                         f"have {n_images} images but the features have shape {features.shape}")
    if not (np.issubdtype(features.dtype, np.floating)
            or np.issubdtype(features.dtype, np.integer)):
        raise ValueError(f"features of layer {name!r} must be numbers, got dtype "
                         f"{features.dtype}")
    flat = features.reshape(n_images, -1)
    if flat.shape[1] == 0:
        raise ValueError(f"layer {name!r} has no features (shape {features.shape})")
    if not np.isfinite(flat).all():
        raise ValueError(f"features of layer {name!r} contain NaN/Inf (a diverged model?); "
                         "features must be finite")
    return flat if np.issubdtype(flat.dtype, np.floating) else flat.astype(np.float64)


# --- one layer ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFit:
    """Held-out predictivity of one layer's features for every recorded site."""

    layer: str
    n_features: int
    """Features of the layer (flattened), before any PCA."""
    n_fitted_features: int
    """Features the regression saw: ``n_features`` or the number of principal components kept."""
    n_components: int
    """PLS components actually used (the request, clamped to what the training set allows)."""
    n_train: int
    n_test: int
    r: np.ndarray = field(repr=False)
    """(sites,) held-out Pearson r per site; NaN where a side has zero variance."""
    r_corrected: np.ndarray | None = field(repr=False, default=None)
    """(sites,) ``r / sqrt(reliability)`` where reliability > 0, else NaN; None without one."""

    @property
    def n_sites(self) -> int:
        return int(self.r.size)

    @property
    def n_nan_sites(self) -> int:
        """Sites without an r (a constant held-out response or prediction), left out of medians."""
        return int(np.isnan(self.r).sum())

    @property
    def n_uncorrected_sites(self) -> int | None:
        """Sites whose r exists but whose reliability (NaN or ≤ 0) allows no correction."""
        if self.r_corrected is None:
            return None
        return int((np.isnan(self.r_corrected) & ~np.isnan(self.r)).sum())

    @property
    def median_r(self) -> float:
        return _nan_quantile(self.r, 0.5)

    @property
    def r_quartiles(self) -> tuple[float, float]:
        """(25th, 75th) percentile of the per-site r: the spread the plot's error bars show."""
        return _nan_quantile(self.r, 0.25), _nan_quantile(self.r, 0.75)

    @property
    def median_corrected(self) -> float | None:
        return None if self.r_corrected is None else _nan_quantile(self.r_corrected, 0.5)

    @property
    def corrected_quartiles(self) -> tuple[float, float] | None:
        if self.r_corrected is None:
            return None
        return _nan_quantile(self.r_corrected, 0.25), _nan_quantile(self.r_corrected, 0.75)

    def to_dict(self) -> dict[str, Any]:
        """The per-layer summary (JSON-ready: NaN becomes None)."""
        q25, q75 = self.r_quartiles
        cq = self.corrected_quartiles or (None, None)
        return {
            "layer": self.layer,
            "n_features": self.n_features,
            "median_r": _json_float(self.median_r),
            "median_corrected": _json_float(self.median_corrected),
            "n_sites": self.n_sites,
            "n_nan_sites": self.n_nan_sites,
            "n_uncorrected_sites": self.n_uncorrected_sites,
            "r_q25": _json_float(q25),
            "r_q75": _json_float(q75),
            "corrected_q25": _json_float(cq[0]),
            "corrected_q75": _json_float(cq[1]),
            "n_fitted_features": self.n_fitted_features,
            "n_components": self.n_components,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }

    def site_rows(self) -> list[dict[str, Any]]:
        """One row per site: layer, site index, r and r_corrected (None where undefined)."""
        corrected = (self.r_corrected if self.r_corrected is not None
                     else np.full(self.n_sites, np.nan))
        return [{"layer": self.layer, "site": i, "r": _json_float(r),
                 "r_corrected": None if self.r_corrected is None else _json_float(c)}
                for i, (r, c) in enumerate(zip(self.r, corrected, strict=True))]


def summary_rows(fits: Sequence[LayerFit]) -> list[dict[str, Any]]:
    """The per-layer table (one dict per layer, in the order fitted)."""
    return [fit.to_dict() for fit in fits]


def site_rows(fits: Sequence[LayerFit]) -> list[dict[str, Any]]:
    """The per-site table of every layer."""
    return [row for fit in fits for row in fit.site_rows()]


def _nan_quantile(values: np.ndarray, q: float) -> float:
    valid = values[~np.isnan(values)]
    return float(np.quantile(valid, q)) if valid.size else math.nan


def _json_float(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and ``others`` z-scored with the training rows' mean and std.

    A column constant over the training rows becomes exactly 0 everywhere: it carries nothing a
    fit could use, and dividing its rounding noise by a tiny std would invent signal.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    constant = (std == 0) | (std <= _CONSTANT_RTOL * np.abs(mean))
    scale = np.where(constant, 1.0, std).astype(train.dtype)
    out = []
    for x in (train, *others):
        z = (x - mean) / scale
        z[:, constant] = 0
        out.append(z)
    return out


def _pearson(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-column Pearson r; NaN where either column is constant."""
    p = predicted - predicted.mean(axis=0)
    a = actual - actual.mean(axis=0)
    sp = np.sqrt((p * p).sum(axis=0))
    sa = np.sqrt((a * a).sum(axis=0))
    n = predicted.shape[0]
    constant = ((sp <= _CONSTANT_RTOL * np.abs(predicted.mean(axis=0)) * math.sqrt(n))
                | (sa <= _CONSTANT_RTOL * np.abs(actual.mean(axis=0)) * math.sqrt(n))
                | (sp == 0) | (sa == 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * a).sum(axis=0) / (sp * sa)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def noise_corrected(r: np.ndarray, reliability: np.ndarray) -> np.ndarray:
    """``r / sqrt(reliability)`` where reliability > 0; NaN elsewhere (see the module docstring)."""
    r = np.asarray(r, np.float64)
    reliability = np.asarray(reliability, np.float64)
    valid = reliability > 0  # False for NaN too
    out = np.full(r.shape, np.nan)
    out[valid] = r[valid] / np.sqrt(reliability[valid])
    return out


def fit_layer(
    features: np.ndarray,
    responses: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    n_components: int = 25,
    pca: int = 1000,
    reliability: np.ndarray | None = None,
    *,
    layer: str = "features",
    seed: int = 0,
) -> LayerFit:
    """Fit one layer's (images, features) to (images, sites) responses; score held-out images.

    ``pca`` is the most features the regression sees (0 disables the PCA step). ``n_components``
    larger than the training data allow (training images − 1, or the features left after PCA) is
    clamped with a warning. The PLS runs with ``scale=False`` because both blocks are already
    standardised with training statistics: its own scaling would redo that for the features and,
    after PCA, re-scale every principal component to unit variance — whitening them, so that the
    many low-variance (mostly noise) directions would weigh as much as the dominant ones. The
    responses *are* standardised per site (step 4 of the module docstring) so that every site,
    whatever its firing range, counts the same in choosing the shared latent components — as it
    counts the same in the median-over-sites score. Pearson r is unchanged by that scaling.
    """
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.exceptions import ConvergenceWarning

    features = _features_2d(layer, features, len(features))
    responses = np.asarray(responses, np.float64)
    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    if features.shape[0] != responses.shape[0]:
        raise ValueError(f"layer {layer!r}: features have {features.shape[0]} images but "
                         f"responses have {responses.shape[0]}")
    if len(test_idx) < MIN_HELD_OUT:
        raise ValueError(f"only {len(test_idx)} held-out images; a per-site Pearson r needs at "
                         f"least {MIN_HELD_OUT}")
    if len(train_idx) < 2:
        raise ValueError(f"only {len(train_idx)} training image(s); the fit needs at least 2")
    if n_components < 1 or pca < 0:
        raise ValueError(f"n_components must be >= 1 and pca >= 0, got {n_components} and {pca}")

    x_train, x_test = _standardise(features[train_idx], features[test_idx])
    n_features = features.shape[1]
    if 0 < pca < n_features:
        x_train, x_test = _project(x_train, x_test, pca, seed, layer)

    (y_train,) = _standardise(responses[train_idx])

    limit = min(len(train_idx) - 1, x_train.shape[1])
    used = min(n_components, limit)
    if used < n_components:
        log.warning("layer %s: %d PLS components requested, but %d training images and %d "
                    "features allow at most %d; using %d", layer, n_components, len(train_idx),
                    x_train.shape[1], limit, used)
    pls = PLSRegression(n_components=used, scale=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pls.fit(x_train, y_train)
    stalled = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    if stalled:
        # NIPALS stalls when the leading singular values of X'Y are nearly equal, which is what
        # features without signal for the responses look like; the fit is still usable.
        log.info("layer %s: PLS's NIPALS iterations hit their limit for some components "
                 "(typical when the features carry little signal for the responses)", layer)
    for w in caught:
        if w not in stalled:
            log.warning("layer %s: %s: %s", layer, w.category.__name__, w.message)
    predicted = pls.predict(x_test).reshape(len(test_idx), -1)
    r = _pearson(predicted, responses[test_idx])
    if np.isnan(r).any():
        log.warning("layer %s: %d of %d sites have no r (constant held-out responses or "
                    "predictions); they are left out of the median", layer,
                    int(np.isnan(r).sum()), r.size)
    corrected = None if reliability is None else noise_corrected(r, reliability)
    return LayerFit(layer=layer, n_features=n_features, n_fitted_features=int(x_train.shape[1]),
                    n_components=used, n_train=len(train_idx), n_test=len(test_idx), r=r,
                    r_corrected=corrected)


def _project(x_train: np.ndarray, x_test: np.ndarray, pca: int, seed: int,
             layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Top principal components of the training rows (unwhitened), applied to both sides.

    More components than training images add nothing: the regression's weights live in the span
    of the training rows anyway, so the count is capped there (losslessly, hence only logged).
    """
    from sklearn.decomposition import PCA

    keep = min(pca, x_train.shape[0], x_train.shape[1])
    if keep < pca:
        log.info("layer %s: keeping %d principal components (of %d requested): the training "
                 "set has %d images", layer, keep, pca, x_train.shape[0])
    reducer = PCA(n_components=keep, svd_solver="randomized", random_state=seed)
    return reducer.fit_transform(x_train), reducer.transform(x_test)


# --- all layers ---------------------------------------------------------------------------------
def neural_fit(
    layer_features: Mapping[str, np.ndarray],
    responses: np.ndarray,
    categories: np.ndarray,
    *,
    n_components: int = 25,
    pca: int = 1000,
    reliability: np.ndarray | None = None,
    seed: int = 0,
) -> list[LayerFit]:
    """Fit every layer of ``layer_features`` (name → (images, ...) array) to ``responses``.

    All layers share one split (``stratified_split(categories, seed=seed)``), so their scores
    compare like with like. Everything is validated before the first fit.
    """
    responses, categories, reliability = check_responses(responses, categories, reliability)
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
            or n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
    if isinstance(pca, bool) or not isinstance(pca, (int, np.integer)) or pca < 0:
        raise ValueError(f"pca must be an integer >= 0 (0: no PCA), got {pca!r}")
    if not layer_features:
        raise ValueError("no layers to fit: layer_features is empty")
    n_images = responses.shape[0]
    flat = {name: _features_2d(name, f, n_images) for name, f in layer_features.items()}
    train_idx, test_idx = split_for_fit(categories, seed=seed)
    fits = []
    for name, features in flat.items():
        fit = fit_layer(features, responses, train_idx, test_idx, int(n_components), int(pca),
                        reliability, layer=name, seed=seed)
        log.info("layer %s: median held-out r %.4f over %d sites", name, fit.median_r,
                 fit.n_sites - fit.n_nan_sites)
        fits.append(fit)
    return fits
