"""Checks on config values that Hydra's schema cannot express; each failure names its key."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ferbench.errors import ConfigError
from ferbench.paths import config_dir

Check = tuple[str, Callable[[Any], bool], str]

CHECKS: list[Check] = [
    ("trainer.max_epochs", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("trainer.batch_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("trainer.early_stopping_patience", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = off)"),
    ("trainer.early_stopping_min_delta", lambda v: isinstance(v, int | float) and v >= 0, "a number >= 0"),
    ("trainer.num_workers", lambda v: v == "auto" or (isinstance(v, int) and v >= 0), "an integer >= 0 or 'auto'"),
    ("trainer.limit_train_fraction", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("optim.lr", lambda v: v > 0, "a number > 0"),
    ("split.ratio", lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.1 for a 90/10 hold-out"),
    ("split.val_ratio", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("split.k", lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
    ("model.input_size", lambda v: isinstance(v, int) and v >= 8, "an integer >= 8 (pixels)"),
    ("model.in_chans", lambda v: v in (1, 3), "1 (grey) or 3 (RGB)"),
    ("seed", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("protocol", lambda v: v in ("standard", "select_on_test"), "'standard' or 'select_on_test'"),
]


def plain_dict(node: Any) -> dict:
    """A config node (or a mapping, or None) as a plain dict with interpolations resolved: keyword arguments."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def task_name(cfg: Any) -> str:
    """What the config's model trains for (``model.task``, ``classification`` where unset): the one place a config
    says whether it is a detector; the factory's ``TASKS`` is keyed by it."""
    return str(cfg.model.get("task", "classification"))


LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
"""The packages each ``logger`` choice needs (any one of them), beyond ferbench's own dependencies."""

LOGGER_INSTALL = {"mlflow": "mlflow-skinny"}
"""What to pip-install for a logger where it is not its first package's name: ``mlflow-skinny`` gives the ``mlflow``
module without the server's packages (full ``mlflow`` brings graphene, which pins python-dateutil<3: a downgrade)."""


def logger_name(cfg: Any) -> str:
    """The ``logger`` group's choice (``csv`` when the config has none)."""
    node = cfg.get("logger") if hasattr(cfg, "get") else None
    return str(node.name) if node is not None else "csv"


def check_logger(cfg: Any) -> None:
    """A logger whose package is absent fails here, in one line, before a run's folder exists."""
    name = logger_name(cfg)
    needs = LOGGER_PACKAGES.get(name, ())
    if needs and not any(importlib.util.find_spec(package) for package in needs):
        pip = LOGGER_INSTALL.get(name, needs[0])
        raise ConfigError(
            f"logger={name} needs the {' or '.join(needs)} package: pip install {pip} (or the extra, '.[loggers]')"
        )


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with a one-line message for the first invalid value (or a logger's missing package)."""
    check_logger(cfg)
    for key, ok, expected in CHECKS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        try:
            valid = ok(value) and not isinstance(value, bool)
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The run config for ``overrides`` (as ``ferbench run`` composes it); a bad override is a one-line ConfigError
    (the choices, or the nearest key), not a traceback. Tables, reports and ``ferbench profile`` compose through it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            return compose("config", overrides=list(overrides))
        except HydraException as exc:
            refusal = exc
    raise ConfigError(hydra_error_line(str(refusal), overrides)) from refusal


def _choice_of(key: str, overrides: Sequence[str]) -> str:
    """``data=ckplus`` for ``data.options.n_train`` among ``overrides`` (the group's last choice given)."""
    group = key.split(".", 1)[0]
    chosen = [o for o in overrides if o.split("=", 1)[0] == group]
    return chosen[-1] if chosen else f"this {group}"


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix] if prefix else []
    keys = [prefix] if prefix else []
    for key, value in node.items():
        keys += _dotted_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def hydra_error_line(message: str, overrides: Sequence[str] = ()) -> str:
    """Hydra's several-line refusal as one line: an unknown group choice lists the choices; an unknown key names
    the nearest existing one; anything else keeps Hydra's first line and the overrides."""
    import difflib
    import re

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", message)
    if missing:
        group, choice = missing.groups()
        start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Available options")), len(lines))
        options = [line for line in lines[start:] if ":" not in line and "=" not in line]
        return f"unknown {group} '{choice}'; choose from: {', '.join(options)}"
    bad_key = re.search(r"Could not override '([^']+)'", message) or re.search(r"Key '([^']+)' is not in", message)
    if bad_key:
        key = bad_key.group(1)
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            base = OmegaConf.to_container(compose("config"), resolve=False)
        near = difflib.get_close_matches(key, _dotted_keys(base), n=1, cutoff=0.6)
        if near == [key]:  # the default choice of its group has it; the one chosen does not
            return f"unknown config key {key} for {_choice_of(key, overrides)}; only another choice of its group has it"
        hint = f"; did you mean {near[0]}?" if near else f"; to add a new key write +{key}=..."
        return f"unknown config key {key}{hint}"
    return f"{lines[0] if lines else message} (overrides: {' '.join(overrides)})"
