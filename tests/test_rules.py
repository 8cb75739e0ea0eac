"""The stopping rule every loop shares: which epoch is best, and when patience runs out (with and without
``min_delta``)."""

from __future__ import annotations

import math

from ferbench.config import compose_config as compose
from ferbench.records.record import experiment_identity
from ferbench.training.rules import StoppingRule


def observe_all(rule: StoppingRule, losses: list[float]) -> list[int]:
    """Feed ``losses``; the 1-based epochs that were a new best, until the rule stops."""
    best = []
    for epoch, loss in enumerate(losses, start=1):
        if rule.observe(loss):
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
