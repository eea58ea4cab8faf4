"""``localrules rules``: listing, JSON of one preset, bad input exits 2, no TensorFlow import."""

from __future__ import annotations

import json

import pytest

from localrules.cli.main import main


def test_rules_lists_every_preset_and_kind(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name in ("bp", "fa", "sa", "aa", "wm-tpe", "wm-tpe-code", "ia-tpe", "ia-tpe-code"):
        assert f"\n{name} " in out
    assert "kolen_pollack" in out and "non-local" in out


def test_rules_show_prints_the_preset_as_json(capsys):
    assert main(["rules", "show", "ia-tpe"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rule"]["weights"]["null"] == 3.1610192645608835e-6
    assert data["rule"]["noise"] == {"stddev": 0.8176668980121832, "distribution": "normal"}
    assert data["run"]["alignment_lr"] == 0.009785729149984566
    assert data["run"]["effective_task_lr"] == 0.125
    assert data["appendix_values"]["alpha/beta"] == 129.112317983


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["rules", "show", "ia-tpee"], "unknown preset 'ia-tpee'; valid: aa, bp"),
        (["rules", "show"], "'rules show' needs a preset name; valid:"),
        (["rules", "list", "sa"], "'rules list' takes no name"),
    ],
)
def test_bad_input_exits_2_with_a_specific_message(capsys, argv, fragment):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err and captured.out == ""


def test_unknown_subcommand_exits_2(capsys):
    assert main(["rulez"]) == 2
    assert "invalid choice: 'rulez'" in capsys.readouterr().err


