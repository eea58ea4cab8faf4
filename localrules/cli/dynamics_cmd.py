"""``localrules dynamics``: the stability analyses of appendix D (D.1 and D.2) as tables or JSON.

``--x X --lam L`` runs D.1 (symmetrized gradient flow of SA, AA and weight mirror at a scalar
input); ``--w1 W1 --b B --alpha A --beta BETA`` runs D.2 (two-layer scalar linear network on the
hyperbola of minima). Either group, or both. TensorFlow is imported only once the flags are
known to be complete and finite, so bad input fails fast and the other commands never load it.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence

from localrules.cli.arguments import number
from localrules.validation import Limit

D1_FLAGS = ("x", "lam")
D2_FLAGS = ("w1", "b", "alpha", "beta")
_SIGN_TOLERANCE = 1e-9
REAL = Limit(-1e12, 1e12)
"""The scalars of the analyses: finite, and small enough that their squares stay finite."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dynamics",
        help="stability analyses of appendix D (D.1: weight mirror, D.2: beyond FA)",
        description="D.1: give --x and --lam. D.2: give --w1, --b, --alpha and --beta. "
        "Either group, or both.",
    )
    d1 = parser.add_argument_group("D.1, instability of weight mirror")
    d1.add_argument("--x", type=number(REAL), metavar="X", help="scalar layer input x")
    d1.add_argument("--lam", type=number(REAL),
                    metavar="L", help="weight mirror's decay weight λ_WM")
    d2 = parser.add_argument_group("D.2, two-layer scalar linear network")
    d2.add_argument("--w1", type=number(REAL), metavar="W1", help="first-layer weight (non-zero)")
    d2.add_argument("--b", type=number(REAL),
                    metavar="B", help="feedback alignment's backward weight")
    d2.add_argument("--alpha", type=number(REAL), metavar="A", help="α = ⟨y·x⟩")
    d2.add_argument("--beta", type=number(REAL), metavar="BETA", help="β = ⟨x²⟩ (> 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=run)


def _group(args: argparse.Namespace, flags: Sequence[str], name: str) -> bool:
    """True if all the group's flags are given; ValueError if some are missing or not finite."""
    given = [f for f in flags if getattr(args, f) is not None]
    if not given:
        return False
    missing = [f"--{f}" for f in flags if f not in given]
    if missing:
        raise ValueError(
            f"{name} needs {', '.join(f'--{f}' for f in flags)} together; missing: "
            f"{', '.join(missing)}"
        )
    return True


def _num(value: float) -> str:
    return f"{value + 0.0:.6g}"


def _matrix(rows: Sequence[Sequence[float]]) -> str:
    return "[" + ", ".join("[" + ", ".join(_num(v) for v in row) + "]" for row in rows) + "]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]


def _sign(value: float, magnitude: float) -> int:
    tol = _SIGN_TOLERANCE * max(1.0, magnitude)
    return 0 if abs(value) <= tol else (1 if value > 0 else -1)


def _d1_behaviour(eig_u: float, eig_v: float) -> str:
    """How u and v evolve under d/dt = −A: a negative eigenvalue grows."""
    words = {-1: "grows", 0: "neutral", 1: "decays"}
    magnitude = max(abs(eig_u), abs(eig_v))
    return f"u {words[_sign(eig_u, magnitude)]}, v {words[_sign(eig_v, magnitude)]}"


def _d2_minimum(eigenvalues: Sequence[float]) -> str:
    magnitude = max(abs(v) for v in eigenvalues)
    signs = {_sign(v, magnitude) for v in eigenvalues}
    if 1 in signs:
        return "unstable (an eigenvalue > 0)"
    return "sink" if -1 in signs else "degenerate (all 0)"


def _d1_text(x: float, lam: float, result: dict) -> str:
    paper, code, seed = result["d1"], result["d1_code_scale"], result["d1_seed"]
    lines = [
        f"D.1  instability of weight mirror: d/dt (w, b) = −A (w, b) at x = {_num(x)}, "
        f"λ_WM = {_num(lam)}",
        "paper scale (½·decay + ½·sparse + amp + self; weights 1, weight mirror's decay λ):",
    ]
    rows = []
    for rule, r in paper.items():
        s = seed[rule]
        off = "" if math.isclose(s["eig_v"], r["eig_v"], rel_tol=1e-9, abs_tol=1e-12) else " *"
        rows.append([
            rule, _matrix(r["A"]), _num(r["eig_u"]), _num(r["eig_v"]),
            _d1_behaviour(r["eig_u"], r["eig_v"]),
            _matrix(s["A"]), _num(s["eig_u"]), _num(s["eig_v"]) + off,
        ])
    lines += _table(
        ["rule", "A", "λ_u", "λ_v", "flow", "seed A", "seed λ_u", "seed λ_v (prose)"], rows
    )
    lines.append("code scale (the project's primitives as they are, no ½; same weights):")
    lines += _table(
        ["rule", "A", "λ_u", "λ_v", "flow"],
        [
            [rule, _matrix(r["A"]), _num(r["eig_u"]), _num(r["eig_v"]),
             _d1_behaviour(r["eig_u"], r["eig_v"])]
            for rule, r in code.items()
        ],
    )
    lines += [
        "u = (1, 1) is the symmetric part of (w, b), v = (1, −1) the skew part; a negative "
        "eigenvalue grows.",
        "Weight mirror is unstable when λ_WM < x² (λ_u = λ_WM − x² < 0).",
        "* the appendix's prose gives λ_v = 1 and x² for SA and AA; its own matrices give 2 and",
        "  2x² (paper-spec §I.18). The λ columns are computed from the matrices.",
    ]
    return "\n".join(lines)


def _d2_text(result: dict, seed: dict) -> str:
    point = result["d2_point"]
    w1, w2, b = point["w1"], point["w2"], point["b_fa"]
    lines = [
        "D.2  two-layer scalar linear network on the hyperbola of minima w2·w1 = α/β",
        f"α = {_num(point['alpha'])}, β = {_num(point['beta'])}, w1 = {_num(w1)} → "
        f"w2 = α/(β·w1) = {_num(w2)}; BP and SA at b = w2, FA at b = {_num(b)}",
    ]
    coords = {
        "bp": f"({_num(w1)}, {_num(w2)})",
        "fa": f"({_num(w1)}, {_num(w2)}, {_num(b)})",
        "sa": f"({_num(w1)}, {_num(w2)}, {_num(w2)})",
    }
    rows = [
        [rule, coords[rule], ", ".join(_num(v) for v in r["eigenvalues"]),
         ", ".join(_num(v) for v in seed[rule]), _d2_minimum(r["eigenvalues"])]
        for rule, r in result["d2"].items()
    ]
    lines += _table(
        ["rule", "(w1, w2, b)", "Jacobian eigenvalues", "seed closed form", "minimum"], rows
    )
    lines += [
        "Eigenvalues: real parts, ascending; the zeros point along the set of fixed points.",
        "Seed closed forms: BP −(w1²+w2²)β, 0; FA −(w1²+b·w2)β, 0, 0; SA −(w1²+w2²)β, 0, −1",
        "(the appendix writes x² for β). FA's minimum is unstable when w1² + b·w2 < 0.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    want_d1 = _group(args, D1_FLAGS, "D.1")
    want_d2 = _group(args, D2_FLAGS, "D.2")
    if not (want_d1 or want_d2):
        raise ValueError(
            "nothing to analyse: give --x and --lam (D.1), or --w1, --b, --alpha and --beta "
            "(D.2), or both"
        )

    from localrules.rules import dynamics

    result: dict = {}
    texts = []
    if want_d1:
        result["d1"] = dynamics.d1_matrices(args.x, args.lam, "paper")
        result["d1_code_scale"] = dynamics.d1_matrices(args.x, args.lam, "code")
        result["d1_seed"] = dynamics.seed_d1(args.x, args.lam)
        result["d1_convention"] = dynamics.D1_CONVENTION
        texts.append(_d1_text(args.x, args.lam, result))
    if want_d2:
        point = dynamics.d2_point(args.w1, args.b, args.alpha, args.beta)
        result["d2"] = dynamics.d2_eigenvalues(args.w1, args.b, args.alpha, args.beta)
        result["d2_point"] = {
            "w1": point["w1"], "w2": point["w2"], "b_fa": point["b"],
            "alpha": args.alpha, "beta": args.beta,
        }
        seed = dynamics.seed_d2(args.w1, args.b, args.alpha, args.beta)
        texts.append(_d2_text(result, seed))

    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else "\n\n".join(texts))
    return 0
