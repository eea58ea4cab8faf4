"""Appendix D's stability analyses, computed by autodiff, against the appendix's closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from localrules.cli.main import main
from localrules.rules import dynamics

D1_CASES = [(2.0, 1.0), (0.5, 3.0), (-1.5, 0.2), (0.0, 0.7), (1.0, 1.0)]

D2_CASES = [
    (1.0, -2.0, 1.0, 1.0),  # FA: w1² + b·w2 = −1 < 0, unstable
    (0.7, 0.3, 1.5, 2.3),
    (-1.7, 0.9, -0.4, 0.6),
    (2.0, -5.0, 3.0, 0.5),  # FA: 4 − 15 < 0, unstable
    (0.4, 1.1, 0.0, 1.3),  # α = 0: the minimum is w2 = 0
]


def _closed_d1(x: float, lam: float) -> dict[str, np.ndarray]:
    x2 = x * x
    return {
        "sa": np.array([[1.0, -1.0], [-1.0, 1.0]]),
        "aa": x2 * np.array([[1.0, -1.0], [-1.0, 1.0]]),
        "wm": np.array([[lam, -x2], [-x2, lam]]),
    }


def _closed_d2(w1: float, b: float, alpha: float, beta: float) -> dict[str, list[float]]:
    w2 = alpha / (beta * w1)
    return {
        "bp": sorted([-(w1**2 + w2**2) * beta, 0.0]),
        "fa": sorted([-(w1**2 + b * w2) * beta, 0.0, 0.0]),
        "sa": sorted([-(w1**2 + w2**2) * beta, 0.0, -1.0]),
    }


# --- D.1 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "lam"), D1_CASES)
def test_d1_matrices_match_the_appendix(x, lam):
    result = dynamics.d1_matrices(x, lam)
    for rule, expected in _closed_d1(x, lam).items():
        a = np.array(result[rule]["A"])
        np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("x", "lam"), D1_CASES)
def test_d1_eigenvalues_are_the_matrices_not_the_prose(x, lam):
    result = dynamics.d1_matrices(x, lam)
    x2 = x * x
    expected = {"sa": (0.0, 2.0), "aa": (0.0, 2 * x2), "wm": (lam - x2, lam + x2)}
    for rule, (eig_u, eig_v) in expected.items():
        assert result[rule]["eig_u"] == pytest.approx(eig_u, abs=1e-12)
        assert result[rule]["eig_v"] == pytest.approx(eig_v, abs=1e-12)
        spectrum = np.linalg.eigvalsh(np.array(result[rule]["A"]))
        assert sorted([eig_u, eig_v]) == pytest.approx(spectrum.tolist(), abs=1e-12)


def test_d1_seed_prose_is_off_by_two_for_sa_and_aa_only():
    x, lam = 1.7, 0.4
    computed, seed = dynamics.d1_matrices(x, lam), dynamics.seed_d1(x, lam)
    for rule in ("sa", "aa"):
        assert computed[rule]["eig_v"] == pytest.approx(2 * seed[rule]["eig_v"])
    assert computed["wm"]["eig_v"] == pytest.approx(seed["wm"]["eig_v"])
    for rule in dynamics.D1_RULES:
        np.testing.assert_allclose(computed[rule]["A"], seed[rule]["A"], atol=1e-12)
        assert computed[rule]["eig_u"] == pytest.approx(seed[rule]["eig_u"], abs=1e-12)


def test_d1_weight_mirror_grows_along_u_when_x_squared_exceeds_lambda():
    unstable = dynamics.d1_matrices(x=2.0, lam=1.0)["wm"]
    assert unstable["eig_u"] == pytest.approx(-3.0)  # d/dt u = +3 u: the symmetric part explodes
    stable = dynamics.d1_matrices(x=0.5, lam=1.0)["wm"]
    assert stable["eig_u"] == pytest.approx(0.75)
    assert stable["eig_v"] > 0


@pytest.mark.parametrize(("x", "lam"), [(2.0, 1.0), (-0.6, 2.5)])
def test_d1_code_scale_doubles_decay_and_sparse(x, lam):
    paper = dynamics.d1_matrices(x, lam, "paper")
    code = dynamics.d1_matrices(x, lam, "code")
    x2 = x * x
    # The diagonals come only from decay (SA, WM) and sparse (AA), which carry ½ on paper scale;
    # the off-diagonals come from self and amp, which carry none.
    for rule in dynamics.D1_RULES:
        a_paper, a_code = np.array(paper[rule]["A"]), np.array(code[rule]["A"])
        np.testing.assert_allclose(np.diag(a_code), 2 * np.diag(a_paper), atol=1e-12)
        assert a_code[0, 1] == pytest.approx(a_paper[0, 1], abs=1e-12)
    assert code["sa"]["eig_u"] == pytest.approx(1.0)
    assert code["sa"]["eig_v"] == pytest.approx(3.0)
    assert code["wm"]["eig_u"] == pytest.approx(2 * lam - x2)


def test_d1_flow_is_linear_in_w_and_b(rng):
    x, lam = 1.3, 0.8
    for rule in dynamics.D1_RULES:
        a = dynamics.d1_matrix(rule, x, lam)
        theta = tf.constant(rng.normal(size=2))
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss = dynamics.d1_loss(rule, theta[0], theta[1], x, lam)
        np.testing.assert_allclose(tape.gradient(loss, theta), a @ theta.numpy(), atol=1e-12)


def test_d1_rejects_bad_input():
    with pytest.raises(ValueError, match="scale"):
        dynamics.d1_matrices(1.0, 1.0, "half")
    with pytest.raises(ValueError, match=">= 0"):
        dynamics.d1_matrices(1.0, -1.0)
    with pytest.raises(ValueError, match="finite"):
        dynamics.d1_matrices(math.inf, 1.0)


# --- D.2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w1", "b", "alpha", "beta"), D2_CASES)
def test_d2_eigenvalues_match_the_appendix(w1, b, alpha, beta):
    result = dynamics.d2_eigenvalues(w1, b, alpha, beta)
    assert set(result) == {"bp", "fa", "sa"}
    for rule, expected in _closed_d2(w1, b, alpha, beta).items():
        assert result[rule]["eigenvalues"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert result[rule]["eigenvalues"] == pytest.approx(
            dynamics.seed_d2(w1, b, alpha, beta)[rule], rel=1e-9, abs=1e-12
        )


def test_d2_feedback_alignment_minimum_repels_when_w1_squared_plus_b_w2_is_negative():
    w1, b, alpha, beta = 1.0, -2.0, 1.0, 1.0  # w2 = 1, w1² + b·w2 = −1
    result = dynamics.d2_eigenvalues(w1, b, alpha, beta)
    assert max(result["fa"]["eigenvalues"]) == pytest.approx(1.0)
    assert max(result["bp"]["eigenvalues"]) <= 0
    assert max(result["sa"]["eigenvalues"]) <= 0


def test_d2_vector_field_is_the_appendix_flow_off_the_hyperbola():
    alpha, beta = 1.5, 2.3
    w1, w2, b = 0.5, 2.0, -1.0
    residual = alpha - w2 * w1 * beta
    theta3 = tf.constant([w1, w2, b], tf.float64)
    fa = dynamics.d2_vector_field("fa", theta3, alpha, beta).numpy()
    sa = dynamics.d2_vector_field("sa", theta3, alpha, beta).numpy()
    bp = dynamics.d2_vector_field("bp", tf.constant([w1, w2], tf.float64), alpha, beta).numpy()
    np.testing.assert_allclose(fa, [b * residual, w1 * residual, 0.0], atol=1e-12)  # eqs (2), (3)
    np.testing.assert_allclose(sa, [b * residual, w1 * residual, w2 - b], atol=1e-12)  # eq (4)
    np.testing.assert_allclose(bp, [w2 * residual, w1 * residual], atol=1e-12)


def test_d2_jacobian_differentiates_the_network_not_the_feedback_path():
    # At b ≠ w2 a Jacobian taken through the asymmetric op's custom gradient would use b where
    # the network's derivative is w2; compare every entry with the hand derivative.
    w1, b, alpha, beta = 0.7, 0.3, 1.5, 2.3
    w2 = alpha / (beta * w1)
    fa = dynamics.d2_jacobian("fa", w1, b, alpha, beta)
    expected = -beta * np.array([[b * w2, b * w1, 0.0], [w1 * w2, w1 * w1, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(fa, expected, atol=1e-12)
    sa = dynamics.d2_jacobian("sa", w1, b, alpha, beta)
    np.testing.assert_allclose(sa[2], [0.0, 1.0, -1.0], atol=1e-12)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.0, 0.0, 1.0, 0.0), "beta"),
        ((1.0, 0.0, 1.0, -2.0), "beta"),
        ((0.0, 0.0, 1.0, 1.0), "w1"),
        ((1.0, math.nan, 1.0, 1.0), "finite"),
    ],
)
def test_d2_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        dynamics.d2_eigenvalues(*args)


# --- CLI ---------------------------------------------------------------------------------------


def _json(capsys, argv):
    assert main(["dynamics", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_d1_json_has_the_required_structure(capsys):
    out = _json(capsys, ["--x", "2", "--lam", "1"])
    assert set(out) == {"d1", "d1_code_scale", "d1_seed", "d1_convention"}
    assert set(out["d1"]) == {"sa", "aa", "wm"}
    for entry in out["d1"].values():
        assert set(entry) == {"A", "eig_u", "eig_v"}
        assert np.array(entry["A"]).shape == (2, 2)
        assert isinstance(entry["eig_u"], float)
        assert isinstance(entry["eig_v"], float)
    assert out["d1"]["wm"]["A"] == [[1.0, -4.0], [-4.0, 1.0]]
    assert out["d1"]["aa"]["eig_v"] == pytest.approx(8.0)
    assert out["d1_code_scale"]["sa"]["A"] == [[2.0, -1.0], [-1.0, 2.0]]
    assert "§I.18" in out["d1_convention"]


def test_cli_d2_json_has_the_required_structure(capsys):
    out = _json(capsys, ["--w1", "1", "--b", "-2", "--alpha", "1", "--beta", "1"])
    assert set(out) == {"d2", "d2_point"}
    assert set(out["d2"]) == {"bp", "fa", "sa"}
    for rule, size in (("bp", 2), ("fa", 3), ("sa", 3)):
        assert set(out["d2"][rule]) == {"eigenvalues"}
        assert len(out["d2"][rule]["eigenvalues"]) == size
    assert out["d2"]["fa"]["eigenvalues"] == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    assert out["d2_point"]["w2"] == pytest.approx(1.0)


def test_cli_both_groups_at_once(capsys):
    out = _json(capsys, ["--x", "1", "--lam", "2", "--w1", "2", "--b", "1", "--alpha", "1",
                         "--beta", "3"])
    assert {"d1", "d2"} <= set(out)


def test_cli_tables(capsys):
    assert main(["dynamics", "--x", "2", "--lam", "1"]) == 0
    text = capsys.readouterr().out
    assert "λ_u" in text and "seed λ_v (prose)" in text and "§I.18" in text
    assert "[[1, -4], [-4, 1]]" in text and "u grows" in text
    assert main(["dynamics", "--w1", "1", "--b", "-2", "--alpha", "1", "--beta", "1"]) == 0
    text = capsys.readouterr().out
    assert "seed closed form" in text and "unstable" in text and "sink" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--x", "2"], "missing: --lam"),
        (["--w1", "1", "--alpha", "1"], "missing: --b, --beta"),
        ([], "nothing to analyse"),
        (["--x", "nan", "--lam", "1"], "argument --x: must be a number in [-1e+12, 1e+12]"),
        (["--x", "1", "--lam", "inf"], "argument --lam: must be a number in [-1e+12, 1e+12]"),
        (["--w1", "1", "--b", "0", "--alpha", "1", "--beta", "0"], "beta"),
        (["--w1", "0", "--b", "0", "--alpha", "1", "--beta", "1"], "w1 must be non-zero"),
        (["--x", "1", "--lam", "-1"], ">= 0"),
    ],
)
def test_cli_bad_input_exits_2(capsys, argv, message):
    assert main(["dynamics", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "localrules dynamics: error:" in captured.err
    assert message in captured.err


