"""The Ray Tune engine: the same searches on a Ray cluster (``localrules search --engine ray``).

Ray Tune schedules the trials (resources per trial, retries from checkpoints, early stopping
under the search's fidelity, the store engine's rungs); the store engine's own trial factory
suggests them (reference runs, warm starts, then hyperopt's TPE over the store's history); and
every trial lands in the localrules store in the
same schema as the store-queue engine, so ``localrules trials`` and every report work unchanged.

- ``searcher.py``: the searcher that hands Tune the store engine's trials (ids, seeds and
  suggestions follow the default engine's rules).
- ``trainable.py``: the function trainable — the same trainer, per-epoch reports, checkpoints
  through Ray's checkpoint API, restore on retry.
- ``callback.py``: writes trials, progress and results into the store from the driver.
- ``engine.py``: builds or restores the ``Tuner`` and runs it.

``ray`` is an optional extra (``pip install localrules[ray]``). This package's top level and
``engine.py`` import it only inside functions, so the CLI parses its flags and ``require_ray``
can explain a missing install; ``searcher.py``, ``callback.py`` and ``trainable.py`` subclass or
call Ray's API at module level and are imported only once Ray is known to be there.
"""

from __future__ import annotations

INSTALL_HINT = "the Ray engine needs Ray Tune: pip install 'localrules[ray]'"
METRIC, MODE = "objective", "max"
"""What Tune (and ASHA) optimise: a search trial's objective, maximised."""


def require_ray() -> None:
    """ValueError (bad input at the CLI: exit 2) saying how to install Ray when it is missing."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as err:
        raise ValueError(f"{INSTALL_HINT} ({err})") from None
