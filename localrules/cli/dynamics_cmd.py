"""``localrules dynamics``: the stability analyses of appendix D (placeholder, being written)."""
