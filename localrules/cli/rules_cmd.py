"""``localrules rules``: list the learning-rule presets and kinds; ``rules show NAME`` as JSON."""

from __future__ import annotations

import argparse
import json

from localrules.rules import KINDS, PRESETS, get_preset
from localrules.rules.presets import READING_NOTES


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("rules", help="list learning-rule presets, or show one as JSON")
    parser.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    parser.add_argument("name", nargs="?", help="preset name (for 'show')")
    parser.set_defaults(handler=run)


def _table() -> str:
    lines = [f"{'preset':<20} {'kind':<14} {'reading':<9} {'weights':<48} noise σ"]
    for preset in PRESETS.values():
        rule = preset.rule
        weights = ", ".join(f"{p}={w:.4g}" for p, w in rule.weights.items()) or "-"
        sigma = f"{rule.noise.stddev:.4g}" if rule.noise else "-"
        lines.append(f"{preset.name:<20} {rule.kind:<14} {preset.reading:<9} {weights:<48} "
                     f"{sigma}")
    lines.append("")
    lines.append("reading: how the appendix's α/β/γ become primitive weights (docs/rules.md):")
    for reading, note in READING_NOTES.items():
        lines.append(f"  {reading:<9} {note}")
    lines.append("")
    lines.append("kinds (usable as rule names; a preset of the same name wins):")
    for kind in KINDS.values():
        locality = "local" if kind.local else "non-local"
        prims = ", ".join(kind.primitives) or "no alignment loss"
        lines.append(f"  {kind.short:<3} {kind.name:<14} {locality:<10} {prims}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise ValueError(f"'rules show' needs a preset name; valid: {', '.join(PRESETS)}")
        print(json.dumps(get_preset(args.name).to_dict(), indent=2))
    else:
        if args.name:
            raise ValueError("'rules list' takes no name; use 'rules show NAME'")
        print(_table())
    return 0
