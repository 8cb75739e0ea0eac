"""Packed training: K models of one architecture (a cell's folds and seeds) trained as one stacked model.

``torch.func.stack_module_state`` stacks the K models' weights and buffers along a new first axis; ``vmap`` over
``functional_call`` then runs them as one model, each convolution a grouped convolution over the K models.
Each model keeps what its solo run has: its own initial weights (built after seeding with its seed), BatchNorm
statistics (stacked buffers update per model), optimiser state and step count, sampler order and augmentation
draws (its own ``BatchSeededSampler`` per epoch, re-seeded from ``(seed, fold, epoch)`` exactly as
``EpochSeed`` does for a solo run), early stopping and best checkpoint. Per-model decisions are masks, not
branches in the traced step: a stopped, finished or failed model's weights, optimiser state and BatchNorm
statistics stay frozen while the others go on.

Random draws in a training step (dropout, ``gpu_augment``) would come from one stream shared by the pack, not each
solo run's, making a packed run another experiment under the same id: such runs train one model at a time
(``packed/loop.py``; the record says why). What still differs from a solo run (README, "Packed training"):
- float summation order (a grouped convolution over K models against K convolutions);
- a model whose epoch has fewer batches than another's (folds of unequal size) sits out the extra steps;
- a model whose training part fits in one batch is not packed (a solo run trains it on one partial batch).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ferbench.data.datamodule import BatchSeededSampler, ImageArrayDataset
from ferbench.data.transforms import BatchAugment, normalize_batch
from ferbench.errors import RunFailed
from ferbench.records.atomic import write_atomic
from ferbench.records.record import BEST_CHECKPOINT
from ferbench.records.safe_load import load_weights
from ferbench.training.metrics import test_metrics
from ferbench.training.optim import PackedOptimizer, lr_at_epoch, masked_assign
from ferbench.training.packed.member import Member, MemberResult, PackSettings
from ferbench.training.resume import epoch_seed, random_streams, restore_random_streams
from ferbench.training.rules import BadLoss, LossWatch, StoppingRule, close_epoch

IGNORE = -100
"""Label of a padding slot: ``cross_entropy`` (and AM-Softmax) leave it out of the batch mean."""


CHECKPOINT_EVERY_S = 60.0
"""Seconds between packed checkpoints (and after a model stops): K models' state is written per model, so
writing it every epoch of a fast pack would cost more than the epoch."""


PACKED_LAST = "packed_last.pt"


class PackedTrainer:
    """Trains ``members`` together on ``images`` (uint8 N x H x W x C) and ``labels``; see the module docstring."""

    def __init__(self, members: Sequence[Member], images: np.ndarray, labels: np.ndarray, s: PackSettings) -> None:
        self.members, self.s, self.k = list(members), s, len(members)
        self.labels_np = labels
        device = s.device
        nets = [m.net.to(device) for m in self.members]
        self.params, self.buffers = stack_module_state(nets)
        self.base = copy.deepcopy(nets[0]).to("meta")
        self.optimizer = PackedOptimizer(self.params, s.optim, self.k, device)
        self.datasets = [ImageArrayDataset(images, labels, m.fold.train, m.augment) for m in self.members]
        self.device_images = _on_device(images, device) if self._gathers_on_device() else None
        self.device_augment = (
            BatchAugment.from_albumentations(self.members[0].augment)
            if s.gpu_augment and self.members[0].augment is not None
            else None
        )
        self.labels = torch.tensor(labels, dtype=torch.long, device=device)
        self.epoch = [0] * self.k
        self.done = [False] * self.k
        self.results = [MemberResult(StoppingRule(s.patience, s.min_delta)) for _ in self.members]
        self.loss_watch = LossWatch()
        self.best_params = {n: p.detach().clone() for n, p in self.params.items()}
        self.best_buffers = {n: b.clone() for n, b in self.buffers.items()}
        self._train_step = vmap(self._member_train, randomness="different")
        self._eval_step = vmap(self._member_eval, randomness="different")
        self._last_checkpoint = time.monotonic()

    def _gathers_on_device(self) -> bool:
        """Batches gathered by index from the data set on the device: when nothing augments per image on the host."""
        return self.s.gpu_augment or self.members[0].augment is None

    # ----------------------------------------------------------------------------------------- steps
    def _member_train(self, params, buffers, x, y):
        return functional_call(self.base, (params, buffers), (x, y), {"train": True})

    def _member_eval(self, params, buffers, x, y):
        return functional_call(self.base, (params, buffers), (x, y), {"train": False})

    def _autocast(self):
        enabled = self.s.precision.startswith("bf16")
        return torch.autocast(self.s.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ----------------------------------------------------------------------------------------- data
    def epoch_batches(self, i: int) -> list[list[tuple[int, int]]]:
        """Model ``i``'s batches of its current epoch: the solo run's sampler, seeded as ``EpochSeed`` seeds it."""
        member, n, b = self.members[i], len(self.members[i].fold.train), self.s.batch_size
        generator = torch.Generator().manual_seed(epoch_seed(member.seed, member.fold.index, self.epoch[i]))
        keys = list(iter(BatchSeededSampler(n, b, generator)))
        return [keys[j : j + b] for j in range(0, n - b + 1, b)]  # drop_last, as the solo loader (n > b)

    def _train_batch(self, batches: list[list[tuple[int, int]] | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """[K, B, C, H, W] floats and [K, B] labels; a model without a batch this step gets zeros and IGNORE."""
        b, device = self.s.batch_size, self.s.device
        if self.device_images is not None:
            rows = np.zeros((self.k, b), dtype=np.int64)
            for i, batch in enumerate(batches):
                if batch is not None:
                    rows[i] = self.members[i].fold.train[[pos for pos, _ in batch]]
            rows_t = torch.from_numpy(rows).to(device, non_blocking=True)
            x = self.device_images[rows_t.flatten()]
            y = self.labels[rows_t]
        else:
            shape = self.datasets[0].images.shape[1:]
            host = np.zeros((self.k, b, *shape), dtype=np.uint8)
            y_host = np.zeros((self.k, b), dtype=np.int64)
            for i, batch in enumerate(batches):
                if batch is not None:
                    items = [self.datasets[i][key] for key in batch]
                    host[i] = np.stack([image for image, _ in items])
                    y_host[i] = [label for _, label in items]
            x = torch.from_numpy(host.reshape(self.k * b, *shape)).to(device, non_blocking=True)
            y = torch.from_numpy(y_host).to(device, non_blocking=True)
        x = normalize_batch(x, augment=self.device_augment)
        for i, batch in enumerate(batches):
            if batch is None:
                y[i] = IGNORE
        return x.view(self.k, b, *x.shape[1:]), y

    def _eval_batches(self, part: str) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
        """The models' ``part`` (val/test) in the solo loader's order and batch size, padded with IGNORE slots."""
        b, device = self.s.batch_size, self.s.device
        indices = [getattr(m.fold, part) for m in self.members]
        longest = max(len(ix) for ix in indices)
        out = []
        for start in range(0, longest, b):
            rows = np.zeros((self.k, b), dtype=np.int64)
            valid = np.zeros((self.k, b), dtype=bool)
            counts = []
            for i, ix in enumerate(indices):
                chunk = ix[start : start + b]
                rows[i, : len(chunk)] = chunk
                valid[i, : len(chunk)] = True
                counts.append(len(chunk))
            images = self.device_images if self.device_images is not None else None
            if images is not None:
                x = images[torch.from_numpy(rows).to(device).flatten()]
            else:
                x = torch.from_numpy(self.datasets[0].images[rows.flatten()]).to(device)
            y = torch.from_numpy(np.where(valid, self.labels_np[rows], IGNORE)).to(device)
            x = normalize_batch(x)
            out.append((x.view(self.k, b, *x.shape[1:]), y, counts))
        return out

    # ----------------------------------------------------------------------------------------- training
    def live(self) -> list[bool]:
        return [not d for d in self.done]

    def train(self) -> list[MemberResult]:
        """Every epoch of every model until each has finished, stopped early or failed; then the tests."""
        self._resume()
        while any(self.live()):
            self._train_epoch()
        self._checkpoint(force=True)
        self._test()
        return self.results

    def _train_epoch(self) -> None:
        started = time.perf_counter()
        live = self.live()
        batches = [self.epoch_batches(i) if live[i] else [] for i in range(self.k)]
        steps = max(len(b) for b in batches)
        lr = torch.tensor([lr_at_epoch(self.s.optim, self.s.max_epochs, e) for e in self.epoch], device=self.s.device)
        loss_sum = torch.zeros(self.k, device=self.s.device)
        correct_sum = torch.zeros(self.k, device=self.s.device)
        images = [0] * self.k
        self.base.train()
        for step in range(steps):
            step_batches = [b[step] if step < len(b) else None for b in batches]
            active_list = [batch is not None for batch in step_batches]
            losses, correct = self.step(step_batches, active_list, lr)
            for i, a in enumerate(active_list):
                images[i] += self.s.batch_size if a else 0
            active = torch.tensor(active_list, device=self.s.device)
            loss_sum += torch.where(active, losses.detach().float() * self.s.batch_size, 0)
            correct_sum += torch.where(active, correct.detach().float(), 0)
            self._fail_on(self.loss_watch.add(torch.where(active, losses.detach().float(), 0), step))
        self._fail_on(self.loss_watch.check())
        self._end_epoch(live, loss_sum, correct_sum, images, lr, time.perf_counter() - started)

    def step(self, batches, active_list: list[bool], lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step of the models ``active_list`` marks, each on its own batch (the unit ``ferbench
        bench --pack`` times); per-model losses and correct counts."""
        x, y = self._train_batch(batches)
        everyone = all(active_list)
        active = None if everyone else torch.tensor(active_list, device=self.s.device)
        saved = None if everyone else {n: b.clone() for n, b in self.buffers.items()}
        with self._autocast():
            losses, correct = self._train_step(self.params, self.buffers, x, y)
        total = losses.float().sum() if everyone else torch.where(active, losses.float(), 0).sum()
        total.backward()
        if self.s.gradient_clip_val:
            self._clip(float(self.s.gradient_clip_val))
        self.optimizer.step(lr, active)
        for p in self.params.values():
            p.grad = None
        if saved is not None:  # a model that sat out this step keeps its BatchNorm statistics
            for n, b in self.buffers.items():
                b.copy_(torch.where(active.view(-1, *[1] * (b.dim() - 1)), b, saved[n]))
        return losses, correct

    @torch.no_grad()
    def _clip(self, max_norm: float) -> None:
        """Lightning's ``gradient_clip_val`` (by norm), per model: each model's norm over its own gradients."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))

    def _fail_on(self, bad: list[BadLoss]) -> None:
        """Fail a model whose loss is NaN or infinite: its run only; the others go on."""
        for found in bad:
            if not self.done[found.model]:
                self._fail(found.model, found.reason(self.epoch[found.model] + 1))

    def _fail(self, i: int, reason: str) -> None:
        self.done[i] = True
        self.results[i].failure, self.results[i].failed_epoch = reason, self.epoch[i] + 1
        if self.s.progress:
            self.s.progress(f"{self.members[i].name}: {reason}; that run failed, the rest of the pack goes on")

    def _end_epoch(self, live, loss_sum, correct_sum, images, lr, seconds: float) -> None:
        val = self._evaluate("val") if any(len(m.fold.val) for m in self.members) else None
        train_loss = (loss_sum / torch.tensor([max(n, 1) for n in images], device=loss_sum.device)).tolist()
        train_acc = (correct_sum / torch.tensor([max(n, 1) for n in images], device=loss_sum.device)).tolist()
        improved = [False] * self.k
        for i in range(self.k):
            if not live[i] or self.results[i].failure:
                continue
            validated = val is not None and len(self.members[i].fold.val) > 0
            result, epoch = self.results[i], self.epoch[i] + 1
            try:
                close_epoch(
                    result.history,
                    result.stopping,
                    [self.members[i].logger],
                    epoch,
                    seconds,
                    train_loss[i],
                    lr[i],
                    train_acc=train_acc[i],
                    val_loss=val[0][i] if validated else None,
                    val_acc=val[1][i] if validated else None,
                )
            except RunFailed as exc:
                self._fail(i, str(exc))
                continue
            improved[i] = result.stopping.best_epoch == epoch
            self.epoch[i] = epoch
            self.done[i] = result.stopping.stopped or epoch >= self.s.max_epochs
        self._keep_best(improved)
        if self.s.progress:
            alive = sum(self.live())
            epoch = max(self.epoch)
            self.s.progress(
                f"pack of {self.k}: epoch {epoch}/{self.s.max_epochs} done in {seconds:.1f} s; "
                f"{alive} of {self.k} models still training"
            )
        newly_done = any(live[i] and self.done[i] for i in range(self.k))
        self._checkpoint(force=newly_done)

    @torch.no_grad()
    def _keep_best(self, improved: list[bool]) -> None:
        if not any(improved):
            return
        mask = torch.tensor(improved, device=self.s.device)
        for n, p in self.params.items():
            masked_assign(self.best_params[n], p.detach(), mask)
        for n, b in self.buffers.items():
            masked_assign(self.best_buffers[n], b, mask)

    @torch.no_grad()
    def _evaluate(self, part: str, params=None, buffers=None, keep_probs: bool = False):
        """Per model: mean loss and accuracy over its ``part`` (the solo loader's batch-weighted means)."""
        params = self.params if params is None else params
        buffers = self.buffers if buffers is None else buffers
        self.base.eval()
        loss_sum = torch.zeros(self.k, device=self.s.device)
        correct = torch.zeros(self.k, device=self.s.device)
        counts = np.zeros(self.k)
        probs: list[list[torch.Tensor]] = [[] for _ in range(self.k)]
        for x, y, n in self._eval_batches(part):
            with self._autocast():
                losses, logits = self._eval_step(params, buffers, x, y)
            n_t = torch.tensor(n, device=self.s.device, dtype=torch.float32)
            loss_sum += torch.where(n_t > 0, losses.float() * n_t, 0)
            correct += ((logits.argmax(-1) == y) & (y != IGNORE)).sum(1).float()
            counts += n
            if keep_probs:
                p = torch.softmax(logits.float(), dim=-1)
                for i in range(self.k):
                    probs[i].append(p[i, : n[i]])
        self.base.train()
        denominator = torch.tensor(np.maximum(counts, 1), device=self.s.device, dtype=torch.float32)
        result = ((loss_sum / denominator).tolist(), (correct / denominator).tolist())
        return (*result, probs) if keep_probs else result

    def _test(self) -> None:
        """Each model's best (or, without validation, last) weights on its test part; torchmetrics per model."""
        started = time.perf_counter()
        *_, probs = self._evaluate("test", self.best_params, self.best_buffers, keep_probs=True)
        seconds = (time.perf_counter() - started) / self.k
        for i, member in enumerate(self.members):
            if self.results[i].failure:
                continue
            member_probs = torch.cat(probs[i]) if probs[i] else torch.zeros(0, self.s.num_classes)
            metrics = test_metrics(self.s.num_classes).to(member_probs.device)
            targets = torch.as_tensor(self.labels_np[member.fold.test], device=member_probs.device)
            metrics.update(member_probs, targets)
            self.results[i].test_results = {k: v.detach().cpu() for k, v in metrics.compute().items()}
            self.results[i].test_probs = member_probs.cpu()
            self.results[i].test_seconds = seconds
            self._write_best(i)

    # ----------------------------------------------------------------------------------------- checkpoints
    def _member_state(self, i: int) -> dict[str, Any]:
        return {
            "params": {n: p[i].detach().cpu().clone() for n, p in self.params.items()},
            "buffers": {n: b[i].cpu().clone() for n, b in self.buffers.items()},
            "best_params": {n: p[i].cpu().clone() for n, p in self.best_params.items()},
            "best_buffers": {n: b[i].cpu().clone() for n, b in self.best_buffers.items()},
            "optimizer": self.optimizer.state_of(i),
            "epoch": self.epoch[i],
            "done": self.done[i],
            "stopping": self.results[i].stopping.state(),
            "history": list(self.results[i].history),
            "failure": self.results[i].failure,
            "failed_epoch": self.results[i].failed_epoch,
        }

    def _checkpoint(self, force: bool = False) -> None:
        """Each model's whole state to ``<fold>/checkpoints/packed_last.pt`` (atomically): a killed pack resumes
        every model from it, exactly. Samplers are re-seeded from ``(seed, fold, epoch)``; dropout draws from the
        process's random streams, whose state at this moment every member's file carries."""
        if not force and time.monotonic() - self._last_checkpoint < CHECKPOINT_EVERY_S:
            return
        streams = random_streams()
        for i, member in enumerate(self.members):
            member.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            state = {**self._member_state(i), "random_streams": streams}
            write_atomic(member.checkpoint_dir / PACKED_LAST, lambda tmp, s=state: torch.save(s, tmp))
        self._last_checkpoint = time.monotonic()

    @torch.no_grad()
    def _resume(self) -> None:
        """Every member from its ``packed_last.pt``; the random streams from the members' files, all written at the
        same moment (a pack re-formed of members saved at different moments resumes each member's weights exactly,
        its dropout draws from whichever stream was saved last)."""
        streams = None
        for i, member in enumerate(self.members):
            path = member.checkpoint_dir / PACKED_LAST
            if not path.is_file():
                continue
            saved = load_weights(path, "pack resume state")  # weights-only: a planted file runs no code
            streams = saved.get("random_streams", streams)
            for n, t in saved["params"].items():
                self.params[n][i].copy_(t)
            for n, t in saved["buffers"].items():
                self.buffers[n][i].copy_(t)
            for n, t in saved["best_params"].items():
                self.best_params[n][i].copy_(t)
            for n, t in saved["best_buffers"].items():
                self.best_buffers[n][i].copy_(t)
            self.optimizer.load_state_of(i, saved["optimizer"])
            self.epoch[i], self.done[i] = saved["epoch"], saved["done"]
            old = {"best": saved.get("best_val"), "wait": saved.get("wait")}  # state files before "stopping"
            result = self.results[i]
            result.history = list(saved["history"])
            result.stopping.restore(saved.get("stopping", old), result.history)
            result.failure, result.failed_epoch = saved["failure"], saved["failed_epoch"]
            result.resumed = True
            if self.s.progress:
                self.s.progress(f"{member.name}: resumed after epoch {self.epoch[i]} from {path}")
        if streams is not None:
            restore_random_streams(streams)

    def best_state(self, i: int) -> dict[str, torch.Tensor]:
        """Model ``i``'s best (or, without validation, last) weights and buffers as a state dict of its PackNet."""
        state = {n: p[i].detach().cpu().clone() for n, p in self.best_params.items()}
        state.update({n: b[i].cpu().clone() for n, b in self.best_buffers.items()})
        return state

    def _write_best(self, i: int) -> None:
        """``best.ckpt`` in the form a solo run's has (``state_dict`` with ``model.``/``loss.`` keys; ``epoch``
        counted from 0, as Lightning saves it)."""
        state = self.best_state(i)
        payload = {"state_dict": state, "epoch": self.results[i].best_epoch - 1, "ferbench_packed": self.k}
        write_atomic(self.members[i].checkpoint_dir / BEST_CHECKPOINT, lambda tmp: torch.save(payload, tmp))


def _on_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The whole uint8 data set on the training device, where batches are gathered by index."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device)
