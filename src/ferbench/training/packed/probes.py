"""Why a model cannot train in a pack, asked before it does: options the packed loop does not run, a training step
that draws random numbers, an op vmap cannot batch. Any answer sends the group to the solo loop, and the record says
why (``pack_note``)."""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig
from torch.func import functional_call, stack_module_state, vmap

from ferbench.training.lightning.callbacks import ema_decay
from ferbench.training.mixup import build_mixup
from ferbench.training.optim import packed_optimizer_gap
from ferbench.training.packed.keys import identity_gap
from ferbench.training.packed.member import PackNet


def unpackable(cfg: DictConfig, net: PackNet) -> str | None:
    """Why this model cannot train in a pack (vmap cannot batch one of its ops, an unsupported option), or None."""
    if build_mixup(cfg.aug.get("mixup")) is not None:
        return "aug.mixup mixes batches in the Lightning training step, which packs do not run"
    if why := packed_optimizer_gap(cfg.optim) or identity_gap(cfg):
        return why
    if str(cfg.trainer.precision) not in ("32-true", "32", "bf16-mixed"):
        return f"trainer.precision={cfg.trainer.precision} (packs train in 32-true or bf16-mixed)"
    if ema_decay(cfg.trainer):
        return "trainer.ema_decay averages the weights in a Lightning callback, which the packed loop does not run"
    if int(cfg.model.get("freeze_epochs") or 0) > 0:
        return "model.freeze_epochs freezes a backbone for some epochs, which the packed loop does not do"
    if bool(cfg.trainer.get("gpu_augment", False)) and cfg.aug.get("train"):
        return "trainer.gpu_augment draws the augmentation from one stream shared by the pack, not each run's own"
    size, chans = int(cfg.model.input_size), int(cfg.model.in_chans)
    return probe_stochastic(net, size, chans) or probe_vmap(net, size, chans)


def probe_stochastic(net: PackNet, input_size: int, in_chans: int) -> str | None:
    """Why ``net``'s training step is random (two seeds give two losses on one batch: dropout, stochastic depth), or
    None. Under vmap such draws come from the pack's shared stream, never from each run's own, so packing it would
    change the experiment behind the run id."""
    probe = copy.deepcopy(net).train()
    x = torch.randn(2, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(2, dtype=torch.long)
    losses = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for seed in (0, 1):
            torch.manual_seed(seed)
            losses.append(probe(x, y, train=True)[0])
    if torch.equal(losses[0], losses[1]):
        return None
    return (
        "the model draws random numbers in training (dropout): in a pack they would come from one stream shared by "
        "its models, not each run's own"
    )


def probe_vmap(net: PackNet, input_size: int, in_chans: int) -> str | None:
    """None if two copies of ``net`` train under vmap (a forward and backward on a tiny batch), else why not."""
    try:
        nets = [copy.deepcopy(net), copy.deepcopy(net)]
        params, buffers = stack_module_state(nets)
        base = copy.deepcopy(net).to("meta")
        x = torch.randn(2, 2, in_chans, input_size, input_size)
        y = torch.zeros(2, 2, dtype=torch.long)

        def one(p, b, xx, yy):
            return functional_call(base, (p, b), (xx, yy), {"train": True})

        losses, _ = vmap(one, randomness="different")(params, buffers, x, y)
        losses.sum().backward()
        return None
    except Exception as exc:  # any op vmap cannot batch, whatever its error type
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
