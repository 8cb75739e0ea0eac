"""Bad config gets a one-line error naming the key; Hydra lists the choices of a group."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ferbench.config import validate
from ferbench.errors import ConfigError
from ferbench.factory import build_model
from ferbench.paths import config_dir


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.batch_size=-1", "trainer.batch_size"),
        ("optim.lr=0", "optim.lr"),
        ("model.in_chans=2", "model.in_chans"),
        ("protocol=peeking", "protocol"),
    ],
)
def test_invalid_values_name_their_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_cfg(override))


def test_split_ratio_outside_unit_interval(make_cfg):
    with pytest.raises(ConfigError, match=r"split\.ratio"):
        validate(make_cfg("split=holdout", "split.ratio=1.5"))


def test_the_default_run_is_the_laptop_run(make_cfg):
    """``ferbench run`` with no arguments: the small CNN on the embedded synthetic faces, a valid config."""
    cfg = make_cfg(fast=False)
    validate(cfg)
    assert (cfg.model.name, cfg.data.name, cfg.split.name) == ("simplecnn", "synthetic", "official")


@pytest.mark.parametrize("group", ["model", "attn", "data", "split", "optim", "loss", "aug", "trainer"])
def test_every_choice_of_a_group_composes_and_validates(make_cfg, group):
    """Each file of ``conf/<group>/`` on top of the defaults: a choice that no longer fits the schema fails here,
    not in a user's run."""
    choices = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    assert len(choices) >= 2
    for choice in choices:
        cfg = make_cfg(f"{group}={choice}", fast=False)
        validate(cfg)
        assert cfg[group] is not None, choice


def test_unknown_model_name_lists_choices(make_cfg):
    with pytest.raises(ConfigError, match="choose from: .*simplecnn"):
        build_model(make_cfg("model.name=nosuchnet"), 7)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferbench.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_unknown_choice_lists_available_options():
    result = _cli("run", "model=nosuchnet")
    assert result.returncode != 0
    assert result.stderr.startswith("ferbench: error: unknown model 'nosuchnet'; choose from: amdcnn,")
    assert "simplecnn" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_unknown_key_is_named():
    result = _cli("run", "trainer.max_epoch=3")
    assert result.returncode != 0
    assert "max_epoch" in result.stderr


def test_cli_invalid_value_is_one_line(tmp_path):
    result = _cli("run", "trainer.max_epochs=0", f"results_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["ferbench: error: trainer.max_epochs must be an integer >= 1, got 0"]


def test_cli_unknown_command():
    result = _cli("trian")
    assert result.returncode == 2 and "choose from: run" in result.stderr


def test_cli_model_without_an_attention_place_names_attn(tmp_path):
    """shufflecsp's SA and CA have fixed places: attn=cbam must fail, not train the network without CBAM."""
    small = ["data.options.n_train=70", "data.options.n_test=35", "trainer.progress_bar=false"]
    result = _cli("run", "model=shufflecsp", "attn=cbam", f"results_dir={tmp_path}", f"cache_dir={tmp_path}", *small)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ferbench: error: model 'shufflecsp'") and "attn=none" in line
