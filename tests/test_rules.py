"""The rules every loop shares: which epoch is best and when patience runs out (with and without ``min_delta``),
the step-loss watch, and the epoch's end."""

from __future__ import annotations

import math

import pytest
import torch

from ferbench.config import compose_config as compose
from ferbench.errors import RunFailed
from ferbench.records.record import experiment_identity
from ferbench.training.rules import BadLoss, LossWatch, StoppingRule, close_epoch, stopped_early


def observe_all(rule: StoppingRule, losses: list[float]) -> list[int]:
    """Feed ``losses``; the 1-based epochs that were a new best, until the rule stops."""
    best = []
    for epoch, loss in enumerate(losses, start=1):
        if rule.observe(epoch, loss):
            best.append(epoch)
        if rule.stopped:
            break
    return best


def test_strict_improvement_keeps_patience_alive_on_creeping_losses():
    creeping = [1.0, 0.5, 0.499, 0.498, 0.497, 0.496, 0.495]
    rule = StoppingRule(patience=3)
    assert observe_all(rule, creeping) == [1, 2, 3, 4, 5, 6, 7]
    assert not rule.stopped


def test_min_delta_stops_a_creep_but_the_best_checkpoint_follows_every_lower_loss():
    creeping = [1.0, 0.5, 0.4995, 0.499, 0.4985, 0.498]
    rule = StoppingRule(patience=3, min_delta=0.002)
    assert observe_all(rule, creeping) == [1, 2, 3, 4, 5]  # three epochs without 0.002 under 0.5: stops at 5
    assert rule.stopped and rule.best == 0.4985 and rule.ref == 0.5


def test_an_improvement_of_min_delta_resets_patience():
    rule = StoppingRule(patience=2, min_delta=0.01)
    observe_all(rule, [1.0, 0.995, 0.98, 0.975])
    assert not rule.stopped and rule.ref == 0.98 and rule.wait == 1


def test_a_non_finite_loss_stops_at_once_and_is_never_best():
    rule = StoppingRule(patience=0)
    assert observe_all(rule, [1.0, math.nan, 0.1]) == [1]
    assert rule.stopped and rule.best == 1.0


def test_patience_zero_never_stops():
    rule = StoppingRule(patience=0, min_delta=0.5)
    observe_all(rule, [1.0] * 50)
    assert not rule.stopped


def test_min_delta_at_zero_stays_out_of_the_run_identity():
    """Runs recorded before ``early_stopping_min_delta`` existed keep their ids; a set one is another experiment."""
    plain = experiment_identity(compose([]))
    assert "early_stopping_min_delta" not in plain["trainer"]
    assert experiment_identity(compose(["trainer.early_stopping_min_delta=0.0"])) == plain
    assert experiment_identity(compose(["trainer.early_stopping_min_delta=0.002"])) != plain


def test_the_rule_resumes_from_its_state_and_from_a_state_before_min_delta():
    rule = StoppingRule(patience=3, min_delta=0.01)
    observe_all(rule, [1.0, 0.5, 0.495])
    again = StoppingRule(patience=3, min_delta=0.01)
    again.restore(rule.state())
    assert (again.best, again.ref, again.wait) == (0.495, 0.5, 1)
    old = StoppingRule(patience=3)
    old.restore({"best": 0.4, "wait": 2})  # a checkpoint written before min_delta: the reference was the best
    assert (old.best, old.ref, old.wait) == (0.4, 0.4, 2)


def test_the_rule_keeps_its_best_epoch_and_when_it_stopped_across_a_restore():
    rule = StoppingRule(patience=2)
    observe_all(rule, [1.0, 0.5, 0.7, 0.6, 0.4])
    assert (rule.best_epoch, rule.stopped_epoch, rule.stopped) == (2, 4, True)
    again = StoppingRule(patience=2)
    again.restore(rule.state())
    assert (again.best_epoch, again.stopped_epoch, again.stopped) == (2, 4, True)
    assert stopped_early({"callbacks": {"ValLossStopping": rule.state()}})


def test_a_state_saved_before_the_best_epoch_was_kept_takes_it_from_the_history():
    history = [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.3}, {"epoch": 3, "val_loss": 0.3}]
    rule = StoppingRule(patience=5)
    rule.restore({"best": 0.3, "wait": 1}, history)
    assert rule.best_epoch == 2 and not rule.stopped  # the first of equal lows, as the checkpoint kept it
    unvalidated = StoppingRule(patience=0)
    unvalidated.restore({"best": math.inf, "wait": 0}, [{"epoch": 1}, {"epoch": 2}])
    assert unvalidated.best_epoch == 2


def test_without_validation_the_best_epoch_is_the_last():
    """A fold without a validation part tests its last weights: the rule says so (a pack used to say epoch 0)."""
    rule, history = StoppingRule(patience=3), []
    for epoch in (1, 2, 3):
        close_epoch(history, rule, [], epoch, 1.0, 2.0 - epoch / 10, 0.1)
    assert rule.best_epoch == 3 and not rule.stopped
    assert [set(row) for row in history] == [{"epoch", "epoch_seconds", "train_loss", "lr"}] * 3


class Logger:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def log_metrics(self, metrics, step):
        self.steps.append(step)


def test_close_epoch_writes_the_row_logs_it_and_feeds_the_rule():
    rule, history, logger = StoppingRule(patience=1), [], Logger()
    close_epoch(history, rule, [logger], 1, 2.0, 0.8, 0.01, train_acc=0.5, val_loss=0.7, val_acc=0.6)
    row = close_epoch(history, rule, [logger], 2, 2.0, 0.6, 0.01, train_acc=0.6, val_loss=0.9, val_acc=0.5)
    assert history[-1] is row and row["val_loss"] == 0.9 and logger.steps == [1, 2]
    assert rule.best_epoch == 1 and rule.stopped and rule.stopped_epoch == 2


@pytest.mark.parametrize("key", ["train_loss", "val_loss"])
def test_a_diverged_epoch_raises_and_is_neither_recorded_nor_observed(key):
    rule, history = StoppingRule(patience=1), []
    values = {"train_loss": 0.5, "val_loss": 0.5, key: math.nan}
    with pytest.raises(RunFailed, match=f"{key.replace('_', ' ')} became nan at epoch 1"):
        close_epoch(history, rule, [], 1, 1.0, values["train_loss"], 0.1, val_loss=values["val_loss"])
    assert history == [] and rule.best_epoch == 0 and not rule.stopped


def test_the_loss_watch_names_each_models_first_bad_batch():
    watch = LossWatch()
    assert watch.add(torch.tensor([1.0, 2.0]), 0) == []
    found = watch.add(torch.tensor([float("inf"), 1.0]), 1)  # on a CPU every step is looked at
    assert found == [BadLoss(0, math.inf, 1)] and found[0].reason(3) == "loss became inf at epoch 3, batch 1"
    assert watch.add(torch.tensor(float("nan")), 2)[0].batch == 2  # a scalar: one model
    assert watch.check() == []  # nothing left to look at


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_loss_watch_looks_every_few_steps_and_at_the_end():
    watch = LossWatch(every=4)
    losses = [1.0, float("nan"), float("inf"), 2.0, 3.0, float("nan")]
    seen = [watch.add(torch.tensor(v, device="cuda"), b) for b, v in enumerate(losses)]
    assert seen[:3] == [[], [], []] and [(b.model, b.batch) for b in seen[3]] == [(0, 1)]  # one look, first bad
    assert math.isnan(seen[3][0].value) and seen[4] == [] and [b.batch for b in watch.check()] == [5]
