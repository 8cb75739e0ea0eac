"""The packed loop: K models of one architecture (a cell's folds and seeds) trained as one stacked model under vmap,
and which folds may pack (the solo Lightning loop otherwise)."""
