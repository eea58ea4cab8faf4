"""The tf.distribute strategy a trial runs under, chosen from the environment or by name.

``auto``: a TPU if one is attached (a Cloud TPU VM's local chips, or ``TPU_NAME`` set), several
GPUs → MirroredStrategy, otherwise the default strategy. Under any strategy the batch statistics
inside a step (BatchNorm, batch centering, the primitives' batch means) are per replica, as on the
paper's TPUs (DESIGN.md decision 7); the global batch is split evenly across replicas.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from localrules.validation import check_choice

log = logging.getLogger(__name__)


def _tpu_strategy() -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _tpu_present() -> bool:
    return bool(os.environ.get("TPU_NAME")) or any(
        os.path.exists(p) for p in ("/dev/accel0", "/dev/vfio/0")
    )


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    check_choice("strategy", name, ("auto", "default", "mirrored", "tpu"))
    if name == "tpu" or (name == "auto" and _tpu_present()):
        strategy = _tpu_strategy()
    elif name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    log.info("strategy %s with %d replica(s)", type(strategy).__name__,
             strategy.num_replicas_in_sync)
    return strategy
