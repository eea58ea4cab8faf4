"""``localrules neural-fit``: how well a trained run's layers predict recorded neural responses.

Appendix B.5: features of the trained network for each stimulus, a 75/25 split within each
object category, PCA then PLS regression on the training images, per-site Pearson r on the
held-out ones (``localrules.analysis.neural_fit`` has the method and its conventions). Prints a
table (or JSON) per layer and writes ``neural_fit.csv`` (per layer), ``neural_fit_sites.csv`` (per
site), ``neural_fit.json`` and ``neural_fit.png`` into ``--out``.

Every input is checked before anything heavy runs or any file is written: the arrays (files,
format, shapes, agreement on the number of images, finite responses, a splittable category
list) before TensorFlow loads; then the run (config, checkpoint), the layer names and the
stimuli's channels against the rebuilt model, before the checkpoint is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localrules.cli.arguments import number
from localrules.cli.tables import check_out_dir, table
from localrules.validation import BATCH_SIZE, SEED, Limit

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
COMPONENTS = Limit(1, 10_000, integer=True)
PCA = Limit(0, 1_000_000, integer=True)
"""Principal components a layer is reduced to (0: never)."""

FORMATS = ("table", "json")
OUTPUTS = ("neural_fit.csv", "neural_fit_sites.csv", "neural_fit.json", "neural_fit.png")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neural-fit", help="fit a trained run's layers to neural responses (B.5)",
                       description="Fit each layer's features for the stimuli to the "
                       "recorded responses (PCA, then PLS on 75% of the images of each "
                       "category) and score the held-out 25% by per-site Pearson r. Writes "
                       "neural_fit.csv, neural_fit_sites.csv, neural_fit.json and "
                       "neural_fit.png into --out.")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="run directory written by `localrules train` (or its checkpoints/)")
    p.add_argument("--stimuli", required=True, metavar="NPY",
                   help="images.npy: (N, H, W[, C]), uint8 0–255 or float in [0, 1]")
    p.add_argument("--responses", required=True, metavar="NPY",
                   help="responses.npy: (N, sites), finite")
    p.add_argument("--categories", required=True, metavar="NPY",
                   help="labels.npy: (N,) object category per image (integer or string)")
    p.add_argument("--layer", dest="layers", action="append", metavar="NAME",
                   help="layer whose output to fit (repeatable; default: each residual group's "
                        "output and the global pool)")
    p.add_argument("--reliability", metavar="NPY",
                   help="rel.npy: (sites,) split-half reliability, Spearman–Brown corrected; "
                        "adds r / sqrt(reliability)")
    p.add_argument("--components", type=number(COMPONENTS),
                   default=25, help="PLS components (default 25)")
    p.add_argument("--pca", type=number(PCA), default=1000,
                   help="reduce layers with more features to this many principal components "
                        "(default 1000; 0: never)")
    p.add_argument("--seed", type=number(SEED), default=0, help="seed of the split and the PCA")
    p.add_argument("--batch-size", type=number(BATCH_SIZE),
                   default=64, help="images per forward pass")
    p.add_argument("--data-dir",
                   help="the run's dataset files, if not where its config says (CIFAR-10 and "
                        "ImageNet; the normalisation comes from the dataset)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the outputs")
    p.add_argument("--format", choices=FORMATS, default="table", help="what to print")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


# --- input checks (no TensorFlow) ---------------------------------------------------------------
def load_array(path: str, flag: str, *, mmap: bool = False) -> np.ndarray:
    """The array in a .npy file, or a ValueError naming the flag and the file.

    Never unpickles (``allow_pickle=False``); ``mmap`` maps the file instead of reading it, so a
    large stimulus set is checked without loading it all.
    """
    import numpy as np

    file = Path(path)
    if not file.exists():
        raise ValueError(f"{flag} {path}: no such file")
    if not file.is_file():
        raise ValueError(f"{flag} {path}: not a file")
    if file.suffix.lower() != ".npy":
        raise ValueError(f"{flag} {path}: expected a .npy file (written by numpy.save)")
    try:
        array = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
    except Exception as err:  # a corrupt or pickled file can raise almost anything
        raise ValueError(f"{flag} {path}: cannot read it as a .npy array without pickle "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{flag} {path}: holds {type(array).__name__}, not a single array")
    return array


def _check_flags(args: argparse.Namespace) -> None:
    """The numeric flags, --out and (when local) --checkpoint, before any file is read."""
    check_out_dir(args.out)
    if "://" not in args.checkpoint and not Path(args.checkpoint).exists():
        raise ValueError(f"--checkpoint {args.checkpoint}: no such directory")


def load_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Every array, checked against the others; ValueError on the first problem."""
    from localrules.analysis.neural_fit import check_responses, split_for_fit
    from localrules.data.stimuli import check_stimuli

    stimuli = load_array(args.stimuli, "--stimuli", mmap=True)
    responses = load_array(args.responses, "--responses")
    categories = load_array(args.categories, "--categories")
    reliability = (load_array(args.reliability, "--reliability")
                   if args.reliability is not None else None)
    check_stimuli(stimuli, "--stimuli")
    if responses.ndim != 2:
        raise ValueError(f"--responses must be 2-D (images, sites), got shape {responses.shape}")
    if stimuli.shape[0] != responses.shape[0]:
        raise ValueError(f"--stimuli and --responses disagree on the number of images: stimuli "
                         f"have shape {stimuli.shape}, responses {responses.shape}")
    responses, categories, reliability = check_responses(responses, categories, reliability)
    split_for_fit(categories, seed=args.seed)  # single-image categories, too few held out
    return {"stimuli": stimuli, "responses": responses, "categories": categories,
            "reliability": reliability}


# --- output -------------------------------------------------------------------------------------
def _num(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _table_text(fits, settings: dict[str, Any]) -> str:
    corrected = settings["reliability"] is not None
    headers = ["layer", "features", "fitted", "PLS", "median r", "r q25", "r q75"]
    if corrected:
        headers.append("median corrected")
    headers.append("sites")
    rows = []
    for f in fits:
        d = f.to_dict()
        row = [d["layer"], d["n_features"], d["n_fitted_features"], d["n_components"],
               _num(d["median_r"]), _num(d["r_q25"]), _num(d["r_q75"])]
        if corrected:
            row.append(_num(d["median_corrected"]))
        bad = d["n_nan_sites"]
        row.append(f"{d['n_sites'] - bad}/{d['n_sites']}" + (f" ({bad} NaN)" if bad else ""))
        rows.append(row)
    first = fits[0]
    head = (f"{settings['checkpoint']}: {first.n_sites} sites, {first.n_train} training / "
            f"{first.n_test} held-out images (75/25 within each of {settings['n_categories']} "
            f"categories, seed {settings['seed']}); "
            + (f"PCA to at most {settings['pca']} features, " if settings["pca"] else "no PCA, ")
            + f"PLS with up to {settings['components']} components; held-out Pearson r per "
              "site")
    return head + "\n" + table(headers, rows)


def write_outputs(out: Path, fits, document: dict[str, Any]) -> None:
    from localrules.analysis.neural_fit import site_rows, summary_rows
    from localrules.analysis.plots import neural_fit_figure, save_png
    from localrules.cli.tables import dict_csv

    figure = neural_fit_figure(fits, title=f"neural fit: {document['checkpoint']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "neural_fit.csv").write_text(dict_csv(summary_rows(fits)))
    (out / "neural_fit_sites.csv").write_text(dict_csv(site_rows(fits)))
    (out / "neural_fit.json").write_text(json.dumps(document, indent=2) + "\n")
    save_png(figure, out / "neural_fit.png")


# --- the command --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    inputs = load_inputs(args)

    from localrules.train.features import TrainedRun  # TensorFlow loads here

    trained = TrainedRun(args.checkpoint, data_dir=args.data_dir)
    layers = trained.check_layers(args.layers) if args.layers else trained.default_layers()
    trained.check_stimuli(inputs["stimuli"])
    trained.restore()
    features = trained.extract(inputs["stimuli"], layers, batch_size=args.batch_size,
                               progress=not args.no_progress and sys.stderr.isatty())

    import numpy as np

    from localrules.analysis.neural_fit import neural_fit, summary_rows

    fits = neural_fit(features, inputs["responses"], inputs["categories"],
                      n_components=args.components, pca=args.pca,
                      reliability=inputs["reliability"], seed=args.seed)
    settings = {
        "checkpoint": trained.checkpoint, "run_dir": trained.run_dir,
        "model": trained.config.model, "stimuli": args.stimuli, "responses": args.responses,
        "categories": args.categories, "reliability": args.reliability,
        "n_images": int(inputs["responses"].shape[0]),
        "n_categories": int(np.unique(inputs["categories"]).size),
        "components": args.components, "pca": args.pca, "seed": args.seed,
    }
    document = {**settings, "method": "z-score (train) → PCA (train, unwhitened) → PLS "
                "(scale=False, responses z-scored on train) → per-site Pearson r on held-out "
                "images; corrected r = r / sqrt(reliability)", "layers": summary_rows(fits)}
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        print(_table_text(fits, settings))
    write_outputs(Path(args.out), fits, document)
    log.info("wrote %s to %s", ", ".join(OUTPUTS), args.out)
    return 0
