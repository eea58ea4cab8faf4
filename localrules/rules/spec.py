"""Learning rules as plain data: kind, primitive weights, path operations, input noise.

A rule is what a trial's config, a preset and a layer all share, so it is a frozen dataclass with a
JSON form (``to_dict``/``from_dict``) and no TensorFlow in sight. The numerics live in
``primitives.py`` and ``alignment.py``.

Weights are keyed by primitive name (``{"amp": …, "decay": …}``), never by α/β/γ: the appendix
and the reference code disagree about which symbol multiplies which primitive (paper-spec
§C.2, §I.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localrules.validation import MAGNITUDE, check_bool, check_choice, check_keys, shown

PRIMITIVES: tuple[str, ...] = ("amp", "decay", "null", "sparse", "self")
"""Primitive names, at the reference code's scale (no ½; data terms are batch means)."""

LOCAL_PRIMITIVES: frozenset[str] = frozenset({"amp", "decay", "null"})
"""Primitives a layer can compute from its own input, W and B (paper-spec §C.1)."""


@dataclass(frozen=True)
class Kind:
    """One family of learning rules: which primitives it weighs and how B gets its task gradient."""

    name: str
    short: str
    primitives: tuple[str, ...]
    default_weights: Mapping[str, float]
    uses_backward_kernel: bool = True
    """False only for backprop, whose input gradient is the exact transpose of W."""
    tied_gradient: bool = False
    """Kolen–Pollack: B receives W's task gradient (transposed into B's layout)."""

    @property
    def local(self) -> bool:
        """No weight transport: B is separate and R reads only the layer's own quantities."""
        return self.uses_backward_kernel and all(p in LOCAL_PRIMITIVES for p in self.primitives)

    @property
    def trains_backward(self) -> bool:
        return bool(self.primitives) or self.tied_gradient


# Default weights are the reference code's defaults (paper-spec §C.2), keyed by primitive.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("backprop", "bp", (), {}, uses_backward_kernel=False),
        Kind("feedback", "fa", (), {}),
        Kind("weight_mirror", "wm", ("amp", "decay"), {"amp": 1e-3, "decay": 1e-3}),
        Kind(
            "information",
            "ia",
            ("amp", "decay", "null"),
            {"amp": 2e-3, "null": 1e-3, "decay": 1e-3},
        ),
        Kind("symmetric", "sa", ("decay", "self"), {"decay": 1e-3, "self": 2e-3}),
        Kind("activation", "aa", ("sparse", "amp"), {"sparse": 1e-3, "amp": 2e-3}),
        Kind("kolen_pollack", "kp", ("decay",), {"decay": 1e-3}, tied_gradient=True),
    )
}
KIND_BY_SHORT: dict[str, str] = {k.short: k.name for k in KINDS.values()}


def kind_name(name: str) -> str:
    """Canonical kind name for a long or short name (``"wm"`` → ``"weight_mirror"``)."""
    if isinstance(name, str) and name in KIND_BY_SHORT:
        return KIND_BY_SHORT[name]
    return check_choice("rule kind", name, [*KINDS, *KIND_BY_SHORT])


@dataclass(frozen=True)
class PathOps:
    """The twelve boolean operations of the alignment ("backward-pass") computation.

    Applied in this order (paper-spec §D.2): input centering / L2-normalising (per example over all
    features), batch-centering of the backward input, bias, ReLU, then forward-output centering,
    L2-normalising, batch-centering, then backward-output centering and L2-normalising. Output
    operations act on the projections and on their reconstructions alike. L2-normalising always
    centers first, as in the reference code.
    """

    center_input: bool = False
    normalize_input: bool = False
    batch_center_backward_input: bool = False
    bias_forward: bool = False
    bias_backward: bool = False
    relu_forward: bool = False
    relu_backward: bool = False
    center_forward_output: bool = False
    normalize_forward_output: bool = False
    batch_center_forward_output: bool = False
    center_backward_output: bool = False
    normalize_backward_output: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_bool(f"path op {f.name!r}", getattr(self, f.name))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathOps:
        check_keys("path op", data, cls.names())
        return cls(**data)

    def to_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)

    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name, on in self.to_dict().items() if on)


AKROUT_OPS = PathOps(
    batch_center_backward_input=True,
    batch_center_forward_output=True,
    relu_forward=True,
    bias_forward=True,
)
"""Weight mirror's fixed operations in its first two searches (Akrout et al. 2019; B.1.1)."""

NOISE_DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform")


@dataclass(frozen=True)
class Noise:
    """Input noise for the alignment computation: it *replaces* each layer's input.

    ``stddev`` is a standard deviation for both distributions; ``uniform`` draws from
    U(−√3σ, √3σ), which has that standard deviation. Fresh noise per layer per call.
    """

    stddev: float
    distribution: str = "normal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stddev", MAGNITUDE.check("noise stddev", self.stddev))
        check_choice("noise distribution", self.distribution, NOISE_DISTRIBUTIONS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Noise:
        check_keys("noise key", data, ("stddev", "distribution"))
        if "stddev" not in data:
            raise ValueError("noise needs a 'stddev' (the standard deviation σ)")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rule:
    """A learning rule: ``R_l = Σ_p weights[p] · P_p`` over the kind's primitives, computed on the
    path given by ``ops`` from the layer input (or from ``noise``, which replaces it).

    ``weights`` may name any subset of the kind's primitives; the others keep the kind's reference
    code defaults. A weight of 0 switches a primitive off.
    """

    kind: str
    weights: Mapping[str, float] = field(default_factory=dict, hash=False)
    ops: PathOps = field(default_factory=PathOps)
    noise: Noise | None = None

    def __post_init__(self) -> None:
        name = kind_name(self.kind)
        spec = KINDS[name]
        if self.weights is not None and not isinstance(self.weights, Mapping):
            raise ValueError(f"rule weights must be a mapping of primitive names to numbers, "
                             f"got {shown(self.weights)}")
        weights = dict(self.weights or {})
        check_keys("primitive", weights, PRIMITIVES)
        for prim in weights:
            if prim not in spec.primitives:
                allowed = ", ".join(spec.primitives) or "none"
                raise ValueError(
                    f"primitive {prim!r} is not part of rule kind {name!r}; it weighs: {allowed}"
                )
        merged = {p: MAGNITUDE.check(f"weight of {p!r}", w) for p, w in
                  {**spec.default_weights, **weights}.items()}
        if not isinstance(self.ops, PathOps):
            raise ValueError(f"ops must be a PathOps, got {type(self.ops).__name__}")
        if self.noise is not None and not isinstance(self.noise, Noise):
            raise ValueError(f"noise must be a Noise or None, got {type(self.noise).__name__}")
        object.__setattr__(self, "kind", name)
        object.__setattr__(self, "weights", merged)

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def has_alignment_loss(self) -> bool:
        """True if some primitive has a non-zero weight (R is not identically 0)."""
        return any(w > 0 for w in self.weights.values())

    @property
    def active_primitives(self) -> tuple[str, ...]:
        return tuple(p for p, w in self.weights.items() if w > 0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        check_keys("rule key", data, ("kind", "weights", "ops", "noise"))
        if "kind" not in data:
            raise ValueError(f"a rule needs a 'kind'; valid: {', '.join(KINDS)}")
        noise = data.get("noise")
        return cls(
            kind=data["kind"],
            weights=data.get("weights") or {},
            ops=PathOps.from_dict(data.get("ops") or {}),
            noise=None if noise is None else Noise.from_dict(noise),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "weights": dict(self.weights),
            "ops": self.ops.to_dict(),
            "noise": None if self.noise is None else self.noise.to_dict(),
        }
