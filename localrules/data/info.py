"""What a loaded dataset tells the trainer about itself, without TensorFlow.

Kept apart from the pipelines so that the CLI and the config layer can name datasets and read
their shapes without paying for a TensorFlow import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Shape and size of one dataset as the model sees it (after any crop or resize)."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    """(H, W, C) of the images in every batch."""
    train_examples: int
    eval_examples: int
