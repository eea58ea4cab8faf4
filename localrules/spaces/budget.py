"""What every trial of a search trains on, and how the paper's ImageNet settings scale to it.

The paper's searches train ResNet-18 on ImageNet for 45 epochs per trial with batch sizes
{256, 1024, 2048, 4096} (lr = |B|/2048), a 6-epoch warmup and drops at 30/60/80 (paper-spec §F).
On a dataset far smaller than ImageNet those numbers make no sense (digits has 1,438 training
images), so a budget scales them: epochs are the budget's, warmup and drop epochs shrink by the
same factor (``epochs / 45``), and batch sizes are divided by ``batch_divisor`` with the learning
rate still tied to the paper's batch (the reference batch 2048 is divided too). The experiment
records the budget and ``describe()`` says exactly what was scaled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localrules.validation import check_int, check_str, dataclass_from_dict

PAPER_EPOCHS = 45
PAPER_WARMUP_EPOCHS = 6.0
PAPER_DROP_EPOCHS: tuple[int, ...] = (30, 60, 80)
PAPER_BATCH_SIZES: tuple[int, ...] = (256, 1024, 2048, 4096)
PAPER_REFERENCE_BATCH = 2048


@dataclass(frozen=True)
class Budget:
    """Dataset, model and training length shared by all trials of one experiment."""

    dataset: str = "imagenet"
    model: str = "resnet18"
    width: int = 64
    epochs: int = PAPER_EPOCHS
    batch_divisor: int = 1
    data_dir: str | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        check_str("budget dataset", self.dataset)
        check_str("budget model", self.model)
        check_int("width", self.width, minimum=1)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_divisor", self.batch_divisor, minimum=1)
        if min(PAPER_BATCH_SIZES) % self.batch_divisor:  # every scaled batch size stays >= 1
            raise ValueError(f"batch_divisor must divide {min(PAPER_BATCH_SIZES)} (a power of two "
                             f"up to 256), got {self.batch_divisor}")
        if self.data_dir is not None:
            check_str("data_dir", self.data_dir)
        if self.image_size is not None:
            check_int("image_size", self.image_size, minimum=8)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        return dataclass_from_dict(cls, data, "budget")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def time_scale(self) -> float:
        return self.epochs / PAPER_EPOCHS

    def warmup_epochs(self) -> float:
        return round(PAPER_WARMUP_EPOCHS * self.time_scale, 6)

    def drop_epochs(self) -> tuple[int, ...]:
        """The paper's drops scaled by ``epochs / 45``, kept ≥ 1 and strictly increasing."""
        drops: list[int] = []
        for d in PAPER_DROP_EPOCHS:
            drops.append(max(round(d * self.time_scale), drops[-1] + 1 if drops else 1))
        return tuple(drops)

    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(b // self.batch_divisor for b in PAPER_BATCH_SIZES)

    def batch_size(self, paper_batch: int = 256) -> int:
        return paper_batch // self.batch_divisor

    @property
    def reference_batch(self) -> int:
        return PAPER_REFERENCE_BATCH // self.batch_divisor

    def settings(self) -> dict[str, Any]:
        """Config keys the budget fixes for every trial (dotted, for ``config.set_keys``)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "width": self.width,
            "data_dir": self.data_dir,
            "image_size": self.image_size,
            "run.epochs": self.epochs,
            "run.warmup_epochs": self.warmup_epochs(),
            "run.drop_epochs": list(self.drop_epochs()),
        }

    def describe(self, batches: bool = True) -> str:
        """What the budget trains and how it scales the paper's schedule; ``batches=False`` for
        spaces that take their batch sizes as written (YAML spaces)."""
        if self.epochs == PAPER_EPOCHS and (self.batch_divisor == 1 or not batches):
            scaled = "the paper's schedule, unscaled"
        else:
            scaled = (f"scaled from the paper's 45 epochs: ×{self.time_scale:.3g} → warmup "
                      f"{self.warmup_epochs():g}, drops at "
                      f"{'/'.join(map(str, self.drop_epochs()))}")
            if batches:
                scaled += (f"; batch sizes ÷{self.batch_divisor} → "
                           f"{{{', '.join(map(str, self.batch_sizes()))}}} with lr = "
                           f"|B|/{self.reference_batch}")
        return (f"{self.model} (width {self.width}) on {self.dataset}, {self.epochs} epochs per "
                f"trial; {scaled}")


DEFAULT_BUDGETS: Mapping[str, Budget] = {
    "imagenet": Budget("imagenet"),
    # CIFAR-10: 50,000 images (1/25 of ImageNet); batches ÷8 keep ~200 steps per epoch at |B|=256.
    "cifar10": Budget("cifar10", epochs=15, batch_divisor=8),
    # digits: 1,438 images; a narrow ResNet and a few epochs finish a small search in minutes.
    "digits": Budget("digits", width=8, epochs=4, batch_divisor=16),
    "synthetic": Budget("synthetic", width=8, epochs=2, batch_divisor=16),
}


def default_budget(dataset: str, **overrides: Any) -> Budget:
    """The default budget for a dataset with some fields replaced (None values are ignored)."""
    base = DEFAULT_BUDGETS.get(dataset, Budget(dataset))
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
