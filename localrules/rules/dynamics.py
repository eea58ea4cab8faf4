"""The stability analyses of appendix D, by autodiff through the project's own rule code.

Nothing here writes a matrix or an eigenvalue down by hand: the loss is built from
``localrules.rules.primitives`` (and, for D.2, ``localrules.rules.ops.asymmetric_matmul``) at scalar
shapes, and the linearisation comes from nested gradient tapes. The appendix's own numbers
(``seed_d1``, ``seed_d2``) are kept only to be shown next to the computed ones.

**D.1, instability of weight mirror.** With scalar w, b and input x, the symmetrized gradient flow
of a rule's alignment loss R (R differentiated with respect to *both* w and b) is linear:
d/dt (w, b) = −A (w, b), and A is R's Hessian. A is diagonal in u = (1, 1) (the symmetric part of
(w, b)) and v = (1, −1) (the skew part); a negative eigenvalue makes that part grow.

**Scale.** The project's primitives are at the reference code's scale (no ½; DESIGN.md decision 2).
The appendix's matrices only come out with ½ on decay and sparse (and presumably null) and none on
amp and self (paper-spec §B.1), so ``scale="paper"`` multiplies each primitive by that factor and
``scale="code"`` takes them as they are. Either way the rule weights are all 1 (the appendix's
"α = β"), except weight mirror's decay weight λ.

**The appendix's prose is off by 2** for SA and AA: it gives λ_v = 1 and x², while its own matrices
give 2 and 2x² (paper-spec §I.18). The computed values are the matrices' eigenvalues.

**D.2, beyond feedback alignment.** A two-layer scalar linear network y ≈ w2·w1·x on one datum
x = √β, y = α/√β (so ⟨yx⟩ = α and ⟨x²⟩ = β), trained on J = ½(y − w2·w1·x)². Backprop sends the
error to w1 through w2; feedback alignment and symmetric alignment send it through b (the project's
asymmetric matmul). Symmetric alignment also moves b by ḃ = −∂R/∂b with R = ½·decay + self on
(W = w2, B = b), R training b only as in training, which gives ḃ = w2 − b. The Jacobian of the
vector field at a point of the hyperbola of minima w2·w1 = α/β (BP and SA at b = w2, FA at the
given b) has a real spectrum there; a positive eigenvalue means the minimum repels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from localrules.rules.ops import asymmetric_matmul
from localrules.rules.primitives import PRIMITIVE_FUNCTIONS, AlignmentTensors
from localrules.rules.spec import KIND_BY_SHORT, KINDS
from localrules.validation import check_choice, check_finite, check_nonnegative

DTYPE = tf.float64
"""Float64 throughout: the answers are compared with closed forms to ~1e-12."""

PAPER_SCALE: Mapping[str, float] = {
    "amp": 1.0, "decay": 0.5, "null": 0.5, "sparse": 0.5, "self": 1.0,
}
"""Factor turning each code-scale primitive into the appendix's (½‖·‖² for squared norms)."""

CODE_SCALE: Mapping[str, float] = {p: 1.0 for p in PAPER_SCALE}
SCALES: Mapping[str, Mapping[str, float]] = {"paper": PAPER_SCALE, "code": CODE_SCALE}

D1_CONVENTION = (
    "d1: paper scale, R = ½·decay + ½·sparse + amp + self (the ½ the appendix's matrices need, "
    "paper-spec §B.1), all weights 1 except weight mirror's decay weight λ; the flow is "
    "d/dt (w, b) = −A (w, b), symmetrized over w and b; eig_u is A's eigenvalue on u = (1, 1), "
    "eig_v on v = (1, −1). d1_code_scale: the same with the project's primitives as they are "
    "(reference-code scale, no ½). d1_seed: the appendix's matrices and the λ_u, λ_v of its "
    "prose, whose SA and AA λ_v (1 and x²) are half of what its own matrices give "
    "(paper-spec §I.18)."
)
"""What the D.1 numbers mean, stated next to them (DESIGN.md decision 2)."""

D1_RULES: tuple[str, ...] = ("sa", "aa", "wm")
D2_RULES: tuple[str, ...] = ("bp", "fa", "sa")

U = np.array([1.0, 1.0])
V = np.array([1.0, -1.0])

_EVALUATION_POINT = (0.6, -1.3)
"""Where the D.1 Hessian is taken. R is quadratic, so any point gives the same A; a generic one
also lets us check that the gradient there is exactly A·(w, b) (no linear term in the flow)."""

_TOLERANCE = 1e-10


def _tidy(values: np.ndarray, magnitude: float) -> np.ndarray:
    """Round-off below ``_TOLERANCE``·magnitude to an exact 0 (and −0.0 to 0.0) for display."""
    out = np.where(np.abs(values) <= _TOLERANCE * max(1.0, magnitude), 0.0, values)
    return out + 0.0


def _scalar(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, (1, 1))


def alignment_value(
    rule: str, tensors: AlignmentTensors, weights: Mapping[str, float], scale: str
) -> tf.Tensor:
    """R = Σ_p scale_p · weight_p · P_p over the primitives of ``rule`` (a short kind name).

    The primitive list comes from the rule's kind, so the analysis follows the project's rules.
    """
    factors = SCALES[check_choice("scale", scale, SCALES)]
    primitives = KINDS[KIND_BY_SHORT[rule]].primitives
    total = tf.zeros([], DTYPE)
    for prim in primitives:
        total += factors[prim] * weights[prim] * PRIMITIVE_FUNCTIONS[prim](tensors)
    return total


def d1_weights(rule: str, lam: float) -> dict[str, float]:
    """The appendix's D.1 weights: 1 on every primitive ("α = β"), weight mirror's decay λ."""
    check_choice("D.1 rule", rule, D1_RULES)
    weights = {p: 1.0 for p in KINDS[KIND_BY_SHORT[rule]].primitives}
    if rule == "wm":
        weights["decay"] = lam
    return weights


def d1_loss(
    rule: str, w: tf.Tensor, b: tf.Tensor, x: float, lam: float, scale: str = "paper"
) -> tf.Tensor:
    """R at scalar forward weight ``w``, backward weight ``b`` and input ``x`` (batch of one).

    Laid out as a dense layer: f = x·W and the backward projection x·Bᵀ, B transposed into W's
    layout as the dense layer does. No stop-gradient on W: D.1's flow is symmetrized.
    """
    xs = tf.constant([[x]], DTYPE)
    kernel = _scalar(w)
    backward = tf.transpose(_scalar(b))
    tensors = AlignmentTensors(
        forward_kernel=kernel,
        backward_kernel=backward,
        forward_output=tf.matmul(xs, kernel),
        backward_output=tf.matmul(xs, backward),
        forward_reconstruction=None,
    )
    return alignment_value(rule, tensors, d1_weights(rule, lam), scale)


def _gradient_and_hessian(
    fn: Callable[[tf.Tensor], tf.Tensor], point: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    theta = tf.constant(point, DTYPE)
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            value = fn(theta)
        grad = inner.gradient(value, theta)
    hess = outer.jacobian(grad, theta, experimental_use_pfor=False)
    return grad.numpy(), hess.numpy()


def d1_matrix(rule: str, x: float, lam: float, scale: str = "paper") -> np.ndarray:
    """A with d/dt (w, b) = −A (w, b): the Hessian of R over (w, b), by autodiff.

    Raises RuntimeError if the flow is not linear (gradient ≠ A·(w, b)); that would mean the
    primitives changed and the D.1 analysis no longer applies.
    """
    x = check_finite("x", x)
    lam = check_nonnegative("λ (weight mirror's decay weight)", check_finite("λ", lam))
    point = np.array(_EVALUATION_POINT)
    grad, hess = _gradient_and_hessian(
        lambda theta: d1_loss(rule, theta[0], theta[1], x, lam, scale), point
    )
    if not np.allclose(grad, hess @ point, rtol=1e-12, atol=1e-12):
        raise RuntimeError(f"D.1 flow of {rule!r} is not linear in (w, b): gradient {grad}")
    return hess


def d1_eigenvalues(a: np.ndarray) -> tuple[float, float]:
    """(λ_u, λ_v): A's eigenvalues on u = (1, 1) and v = (1, −1), as Rayleigh quotients.

    Raises RuntimeError if u or v is not an eigenvector of A (the decoupling would not hold).
    """
    pairs = []
    for vec in (U, V):
        lam = float(vec @ a @ vec / (vec @ vec))
        if not np.allclose(a @ vec, lam * vec, rtol=1e-12, atol=1e-12):
            raise RuntimeError(f"{vec} is not an eigenvector of A = {a.tolist()}")
        pairs.append(lam)
    return pairs[0], pairs[1]


def d1_matrices(x: float, lam: float, scale: str = "paper") -> dict[str, dict]:
    """{rule: {"A", "eig_u", "eig_v"}} for SA, AA and WM at input ``x`` and WM decay weight λ.

    ``scale="paper"`` is the appendix's convention (½ on decay and sparse); ``"code"`` is the
    project's primitives as they are. See the module docstring.
    """
    out: dict[str, dict] = {}
    for rule in D1_RULES:
        a = d1_matrix(rule, x, lam, scale)
        magnitude = float(np.max(np.abs(a)))
        a = _tidy(a, magnitude)
        eig_u, eig_v = d1_eigenvalues(a)
        eig_u, eig_v = _tidy(np.array([eig_u, eig_v]), magnitude).tolist()
        out[rule] = {"A": a.tolist(), "eig_u": eig_u, "eig_v": eig_v}
    return out


def seed_d1(x: float, lam: float) -> dict[str, dict]:
    """The appendix's D.1 statements, transcribed for comparison only: its matrices, and λ_u, λ_v
    as its prose gives them (SA and AA λ_v are half of what those matrices give; §I.18)."""
    x2 = x * x
    return {
        "sa": {"A": [[1.0, -1.0], [-1.0, 1.0]], "eig_u": 0.0, "eig_v": 1.0},
        "aa": {"A": [[x2, -x2], [-x2, x2]], "eig_u": 0.0, "eig_v": x2},
        "wm": {"A": [[lam, -x2], [-x2, lam]], "eig_u": lam - x2, "eig_v": lam + x2},
    }


def d2_point(w1: float, b: float, alpha: float, beta: float) -> dict[str, float]:
    """The point of the hyperbola w2·w1 = α/β with the given w1: {"w1", "w2", "b"} (b for FA).

    Raises ValueError unless all are finite, β > 0 (⟨x²⟩ of real data) and w1 ≠ 0.
    """
    w1, b = check_finite("w1", w1), check_finite("b", b)
    alpha, beta = check_finite("alpha", alpha), check_finite("beta", beta)
    if beta <= 0:
        raise ValueError(f"beta = ⟨x²⟩ must be > 0, got {beta!r}")
    if w1 == 0:
        raise ValueError("w1 must be non-zero: the hyperbola w2·w1 = α/β has no point at w1 = 0")
    return {"w1": w1, "w2": alpha / (beta * w1), "b": b}


def _sa_alignment(layer_input: tf.Tensor, w2: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Symmetric alignment's R on the second layer (W = w2, B = b), paper scale, weights 1."""
    backward = tf.transpose(b)
    tensors = AlignmentTensors(
        w2, backward, tf.matmul(layer_input, w2), tf.matmul(layer_input, backward), None
    )
    return alignment_value("sa", tensors, {"decay": 1.0, "self": 1.0}, "paper")


def d2_vector_field(rule: str, theta: tf.Tensor, alpha: float, beta: float) -> tf.Tensor:
    """The flow d/dt θ for θ = (w1, w2) (BP) or (w1, w2, b) (FA, SA), by autodiff of J (and R).

    The output error ∂J/∂ŷ comes from the network function ŷ = w2·w1·x itself; it is then sent
    back through the second layer's backward op: a plain matmul for BP, the project's asymmetric
    matmul (input gradient through b, zero gradient for b) for FA and SA. The two steps are kept
    apart because ``tf.custom_gradient`` also applies its custom gradient when an *outer* tape
    differentiates the op's output: had J been computed from the asymmetric op's output, the
    Jacobian would differentiate ŷ with respect to w1 through b instead of w2 (wrong off b = w2).
    """
    check_choice("D.2 rule", rule, D2_RULES)
    root = math.sqrt(beta)
    x = tf.constant([[root]], DTYPE)
    y = tf.constant([[alpha / root]], DTYPE)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(theta)
        w1, w2 = _scalar(theta[0]), _scalar(theta[1])
        h1 = tf.matmul(x, w1)
        prediction = tf.matmul(h1, w2)
        task = tf.reduce_mean(0.5 * tf.square(y - prediction))
        if rule == "bp":
            routed = prediction
        else:
            b = _scalar(theta[2])
            routed = asymmetric_matmul(h1, w2, b)
        align = _sa_alignment(h1, w2, b) if rule == "sa" else None
    zero = tf.UnconnectedGradients.ZERO
    error = tape.gradient(task, prediction)
    grad = tape.gradient(routed, theta, output_gradients=error, unconnected_gradients=zero)
    if align is not None:
        # R trains b only, as in training where W and the input are stop-gradient. A mask on
        # this gradient, not tf.stop_gradient, which would also hide w2 from the Jacobian.
        only_b = tf.constant([0.0, 0.0, 1.0], DTYPE)
        grad += only_b * tape.gradient(align, theta, unconnected_gradients=zero)
    del tape
    return -grad


def d2_jacobian(rule: str, w1: float, b: float, alpha: float, beta: float) -> np.ndarray:
    """∂(d/dt θ)/∂θ at the hyperbola point (BP and SA at b = w2, FA at the given b).

    Rows are the components of the flow; the appendix writes the transpose (same eigenvalues).
    """
    point = d2_point(w1, b, alpha, beta)
    check_choice("D.2 rule", rule, D2_RULES)
    values = [point["w1"], point["w2"]]
    if rule != "bp":
        values.append(point["b"] if rule == "fa" else point["w2"])
    theta = tf.constant(values, DTYPE)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(theta)
        field = d2_vector_field(rule, theta, alpha, beta)
    return tape.jacobian(field, theta, experimental_use_pfor=False).numpy()


def d2_eigenvalues(w1: float, b: float, alpha: float, beta: float) -> dict[str, dict]:
    """{rule: {"eigenvalues": [...]}} for BP, FA and SA: real parts, ascending.

    The spectrum is real on the hyperbola; a positive eigenvalue means the minimum repels.
    """
    out: dict[str, dict] = {}
    for rule in D2_RULES:
        jac = d2_jacobian(rule, w1, b, alpha, beta)
        eig = np.sort(np.linalg.eigvals(jac).real)
        out[rule] = {"eigenvalues": _tidy(eig, float(np.max(np.abs(jac)))).tolist()}
    return out


def seed_d2(w1: float, b: float, alpha: float, beta: float) -> dict[str, list[float]]:
    """The appendix's D.2 table, transcribed for comparison only (its x² read as β), ascending."""
    point = d2_point(w1, b, alpha, beta)
    w1, w2, b = point["w1"], point["w2"], point["b"]
    table = {
        "bp": [-(w1 * w1 + w2 * w2) * beta, 0.0],
        "fa": [-(w1 * w1 + b * w2) * beta, 0.0, 0.0],
        "sa": [-(w1 * w1 + w2 * w2) * beta, 0.0, -1.0],
    }
    return {rule: [v + 0.0 for v in sorted(values)] for rule, values in table.items()}
