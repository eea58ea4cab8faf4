"""The Ray Tune engine: the same searches on a Ray cluster (``localrules search --engine ray``).

Ray Tune schedules the trials (resources per trial, retries from checkpoints, ASHA early
stopping); hyperopt's TPE suggests them through Ray's ``HyperOptSearch`` over the same space
(conditional branches included); and every trial lands in the localrules store in the same
schema as the store-queue engine, so ``localrules trials`` and every report work unchanged.

- ``searcher.py``: the searcher that turns each TPE sample into a validated trial config with a
  store trial id (so seeds and ids follow the default engine's rules).
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


def require_ray() -> None:
    """ValueError (bad input at the CLI: exit 2) saying how to install Ray when it is missing."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as err:
        raise ValueError(f"{INSTALL_HINT} ({err})") from None
