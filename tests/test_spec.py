"""Rules, path operations, noise and presets as data: defaults, round trips, bad input."""

from __future__ import annotations

import pytest

from localrules.rules import KINDS, PRESETS, Noise, PathOps, Rule, get_preset, resolve_rule


@pytest.mark.parametrize(
    ("short", "long"),
    [("bp", "backprop"), ("fa", "feedback"), ("wm", "weight_mirror"), ("ia", "information"),
     ("sa", "symmetric"), ("aa", "activation"), ("kp", "kolen_pollack")],
)
def test_short_and_long_kind_names(short, long):
    assert Rule(short).kind == long
    assert Rule(long).kind == long


def test_default_weights_are_the_reference_code_defaults():
    assert Rule("wm").weights == {"amp": 1e-3, "decay": 1e-3}
    assert Rule("ia").weights == {"amp": 2e-3, "null": 1e-3, "decay": 1e-3}
    assert Rule("sa").weights == {"decay": 1e-3, "self": 2e-3}
    assert Rule("aa").weights == {"sparse": 1e-3, "amp": 2e-3}
    assert Rule("kp").weights == {"decay": 1e-3}
    assert Rule("fa").weights == {} and not Rule("fa").has_alignment_loss


def test_given_weights_override_defaults_and_zero_switches_off():
    rule = Rule("ia", {"null": 0.0, "amp": 5.0})
    assert rule.weights == {"amp": 5.0, "null": 0.0, "decay": 1e-3}
    assert rule.active_primitives == ("amp", "decay")


def test_locality_of_kinds():
    assert {k.short for k in KINDS.values() if k.local} == {"fa", "wm", "ia", "kp"}
    assert not KINDS["symmetric"].local and not KINDS["activation"].local
    assert not KINDS["backprop"].local  # weight transport


def test_rule_round_trips_through_json_dict():
    rule = PRESETS["ia-tpe"].rule
    again = Rule.from_dict(rule.to_dict())
    assert again == rule
    assert again.noise == Noise(stddev=0.8176668980121832, distribution="normal")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: Rule("nope"), "unknown rule kind 'nope'; valid: aa, activation"),
        (lambda: Rule("wm", {"ampp": 1.0}), "unknown primitive 'ampp'; valid: amp, decay, null"),
        (lambda: Rule("wm", {"null": 1.0}), "primitive 'null' is not part of rule kind"),
        (lambda: Rule("wm", {"amp": -1.0}), "'amp' must be a number in [0, 1e+12], got -1.0"),
        (lambda: Rule("wm", {"amp": float("nan")}),
         "'amp' must be a number in [0, 1e+12], got nan"),
        (lambda: Noise(stddev=-0.5), "noise stddev must be a number in [0, 1e+12], got -0.5"),
        (lambda: Noise(stddev=0.5, distribution="cauchy"), "unknown noise distribution 'cauchy'"),
        (lambda: PathOps.from_dict({"relu_sideways": True}), "unknown path op 'relu_sideways'"),
        (lambda: PathOps(relu_forward="yes"), "path op 'relu_forward' must be true or false"),
        (lambda: Rule.from_dict({"kind": "wm", "colour": 1}), "unknown rule key 'colour'"),
        (lambda: Rule.from_dict({"weights": {}}), "a rule needs a 'kind'"),
        (lambda: Noise.from_dict({"distribution": "normal"}), "noise needs a 'stddev'"),
        (lambda: resolve_rule("wm-tpe-typo"), "unknown rule 'wm-tpe-typo'; valid: aa,"),
        (lambda: get_preset("nope"), "unknown preset 'nope'; valid: aa, bp"),
    ],
)
def test_bad_input_names_the_key_and_lists_valid_ones(make, fragment):
    with pytest.raises(ValueError, match=None) as info:
        make()
    assert fragment in str(info.value)


def test_unknown_op_lists_all_twelve_ops():
    with pytest.raises(ValueError) as info:
        PathOps.from_dict({"bogus": True})
    for name in PathOps.names():
        assert name in str(info.value)
    assert len(PathOps.names()) == 12


def test_resolve_rule_accepts_rule_name_preset_dict_and_none():
    assert resolve_rule(None).kind == "backprop"
    assert resolve_rule("kp").kind == "kolen_pollack"
    assert resolve_rule("ia-tpe") is PRESETS["ia-tpe"].rule
    assert resolve_rule({"kind": "fa"}).kind == "feedback"
    rule = Rule("sa")
    assert resolve_rule(rule) is rule

