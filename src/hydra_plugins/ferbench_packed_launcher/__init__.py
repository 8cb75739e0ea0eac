"""ferbench's packed launcher for Hydra sweeps (``hydra/launcher=packed``); Hydra finds it under ``hydra_plugins``."""
