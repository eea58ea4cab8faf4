"""Categorical importance with SEM: recovers planted effects, computes SEMs as numpy does,
analyses conditional parameters only where active, and reports what cannot be estimated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from localrules.analysis.importance import categorical_importance, parameter_importance


def synthetic_rows(n: int = 400, seed: int = 0) -> list[dict]:
    """big: +0.2 when true; none: no effect; gated (active only with big=true): +0.05."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        big, none = bool(rng.integers(2)), bool(rng.integers(2))
        params = {"big": big, "none": none, "constant": "x", "delay": int(rng.integers(3))}
        objective = 0.5 + 0.2 * big + rng.normal(0, 0.05)
        if big:
            params["gated"] = bool(rng.integers(2))
            objective += 0.05 * params["gated"]
        rows.append({"params": params, "objective": objective})
    return rows


def test_the_planted_effects_are_recovered_with_numpys_sems():
    rows = synthetic_rows()
    result = categorical_importance(rows, ["none", "gated", "big", "delay", "constant"])
    ranked = [r.parameter for r in result]
    assert ranked[:2] == ["big", "gated"] and ranked[-1] == "constant"
    by_name = {r.parameter: r for r in result}
    big = by_name["big"]
    for level in big.levels:
        values = np.array([r["objective"] for r in rows if r["params"]["big"] == level.level])
        assert level.n == len(values)
        assert level.mean == pytest.approx(values.mean())
        assert level.sem == pytest.approx(values.std(ddof=1) / math.sqrt(len(values)))
    sems = [lv.sem for lv in big.levels]
    # +0.2, plus half of the gated +0.05 (gated is true in half of big's trials).
    assert big.importance == pytest.approx(0.225, abs=0.02)
    assert big.importance_se == pytest.approx(math.hypot(*sems))
    # No effect: the spread is within a few SEs of zero.
    assert abs(by_name["none"].importance) < 3 * by_name["none"].importance_se
    # Conditional: only the trials where it is active, and its own effect.
    gated = by_name["gated"]
    assert gated.n_active == sum(r["params"]["big"] for r in rows)
    assert gated.importance == pytest.approx(0.05, abs=0.02)
    assert [lv.level for lv in by_name["delay"].levels] == [0, 1, 2]
    assert not by_name["constant"].estimable and "never varied" in by_name["constant"].note


def test_levels_with_one_trial_are_shown_but_not_used():
    single = parameter_importance("p", [("a", 0.1), ("a", 0.3), ("b", 0.9), ("b", 0.7),
                                        ("c", 5.0)])
    assert [lv.n for lv in single.levels] == [2, 2, 1] and single.levels[2].sem is None
    assert single.importance == pytest.approx(0.6) and "'c'" in single.note
    none = parameter_importance("q", [("a", 0.1), ("b", 0.2)])
    assert not none.estimable and "fewer than 2 levels" in none.note
    empty = parameter_importance("r", [])
    assert not empty.estimable and "no finished trial" in empty.note


def test_top_fraction_and_unfinished_trials():
    rows = [*synthetic_rows(200), {"params": {"big": True}, "objective": None}]
    top = categorical_importance(rows, ["big"], top_fraction=0.25)
    assert sum(lv.n for lv in top[0].levels) == 50
    with pytest.raises(ValueError, match="top fraction"):
        categorical_importance(rows, ["big"], top_fraction=0)


def test_json_form_has_the_documented_keys():
    (result,) = categorical_importance(synthetic_rows(50), ["big"])
    data = result.to_dict()
    assert {"parameter", "importance", "importance_se", "levels"} <= set(data)
    assert set(data["levels"][0]) == {"level", "mean", "sem", "n"}


def test_model_importance_ranks_continuous_and_categorical_effects_above_noise():
    from localrules.analysis.model_importance import model_importance

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(120):
        params = {"x": float(rng.uniform()), "flag": bool(rng.integers(2)),
                  "junk": float(rng.uniform()), "kind": str(rng.choice(["a", "b"]))}
        if params["flag"]:
            params["cond"] = float(rng.uniform())
        objective = 0.3 * params["x"] + 0.2 * params["flag"] + rng.normal(0, 0.02)
        rows.append({"params": params, "objective": objective})
    result = model_importance(rows, ["junk", "kind", "cond", "flag", "x"], n_bootstrap=8,
                              n_estimators=40)
    ranked = [m.parameter for m in result]
    # cond's column also says whether flag was on (its sentinel), so it shares flag's effect.
    assert ranked[0] == "x" and set(ranked[:3]) == {"x", "flag", "cond"}
    by_name = {m.parameter: m for m in result}
    assert by_name["x"].importance > 10 * max(by_name["junk"].importance, 0.01)
    assert by_name["junk"].importance < 3 * by_name["junk"].importance_se + 0.02
    assert by_name["cond"].n_active == sum(r["params"]["flag"] for r in rows)
    assert all(m.importance_se >= 0 for m in result)


def test_model_importance_needs_enough_trials():
    from localrules.analysis.model_importance import model_importance

    with pytest.raises(ValueError, match="at least 8 finished trials"):
        model_importance([{"params": {"a": 1}, "objective": 0.5}] * 3, ["a"])


def test_permutation_drop_agrees_with_scikit_learns_permutation_importance():
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    from localrules.analysis.model_importance import permutation_drop

    rng = np.random.default_rng(5)
    x = rng.uniform(size=(150, 4))
    y = 2 * x[:, 0] + x[:, 1] + rng.normal(0, 0.05, 150)
    forest = RandomForestRegressor(30, random_state=0).fit(x, y)
    ours = permutation_drop(forest, x, y, np.random.default_rng(0), repeats=40)
    theirs = permutation_importance(forest, x, y, n_repeats=40, random_state=0).importances_mean
    np.testing.assert_allclose(ours, theirs, atol=0.03)
    assert ours[0] > ours[1] > 0.1 > max(ours[2:])
