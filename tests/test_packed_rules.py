"""The shared rules in the packed loop: without validation the last epoch is the best, as solo; a bad step loss
fails one model in the words a solo run uses."""

from __future__ import annotations

import torch

from ferbench.run import run
from ferbench.training.packed.trainer import PackedTrainer
from test_packed import NO_DROPOUT, _members, _settings


def test_without_validation_packed_and_solo_both_test_and_name_the_last_epoch(make_cfg, tmp_path):
    """No validation part: the last epoch's weights are tested, and both loops' records and best.ckpt say so
    (a pack's best.ckpt said epoch 0)."""
    common = [*NO_DROPOUT, "split=kfold", "split.k=2", "split.val_ratio=0", "trainer.max_epochs=2"]
    packed = run(make_cfg(*common, "trainer.pack=2", f"results_dir={tmp_path / 'packed'}"))
    solo = run(make_cfg(*common, "trainer.pack=off", f"results_dir={tmp_path / 'solo'}"))
    assert set(packed.metrics["packed"]) == {2} and set(solo.metrics["packed"]) == {1}
    for record in (packed, solo):
        assert list(record.metrics["n_val"]) == [0, 0] and list(record.metrics["best_epoch"]) == [2, 2]
        for fold in (0, 1):
            best = torch.load(record.run_dir / f"fold_{fold}" / "checkpoints" / "best.ckpt", weights_only=False)
            assert best["epoch"] == 1


def test_a_non_finite_step_loss_fails_a_packed_model_in_the_solo_run_s_words(tmp_path):
    members, images, labels = _members(tmp_path)
    trainer = PackedTrainer(members, images, labels, _settings())
    real_step, calls = trainer.step, {"n": 0}

    def nan_for_model_2_at_batch_1(batches, active, lr):
        losses, correct = real_step(batches, active, lr)
        calls["n"] += 1
        if calls["n"] == 6:  # 4 batches an epoch: epoch 2, batch 1
            losses = losses.clone()
            losses[2] = float("nan")
        return losses, correct

    trainer.step = nan_for_model_2_at_batch_1
    results = trainer.train()
    assert results[2].failure == "loss became nan at epoch 2, batch 1" and results[2].failed_epoch == 2
    assert [len(r.history) for r in results] == [3, 3, 1]
