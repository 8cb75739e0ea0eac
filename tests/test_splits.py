"""Split protocols: sizes, stratification, disjointness, subject independence, validation from train."""

import numpy as np
import pandas as pd
import pytest

from ferbench.data.splits import make_folds
from ferbench.errors import ConfigError, DataError


@pytest.fixture
def samples() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(n)],
            "label": np.arange(n) % 4,
            "subject": [f"S{s:03d}" for s in rng.integers(0, 40, n)],
            "sequence": None,
            "official_split": ["train"] * 300 + ["test"] * 100,
        }
    )


def _disjoint(fold) -> bool:
    parts = [set(fold.train), set(fold.val), set(fold.test)]
    return all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1 :])


def test_official_uses_given_test_and_carves_val_from_train(samples):
    (fold,) = make_folds(samples, "official", seed=0, val_ratio=0.1)
    assert fold.test.tolist() == list(range(300, 400))
    assert len(fold.val) == 30 and set(fold.val) < set(range(300)) and _disjoint(fold)


@pytest.mark.parametrize("ratio", [0.1, 0.2])
def test_holdout_is_stratified_and_seeded(samples, ratio):
    (fold,) = make_folds(samples, "holdout", seed=0, ratio=ratio)
    assert len(fold.test) == int(400 * ratio)
    assert np.bincount(samples.label[fold.test]).tolist() == [int(100 * ratio)] * 4
    (again,) = make_folds(samples, "holdout", seed=0, ratio=ratio)
    (other,) = make_folds(samples, "holdout", seed=1, ratio=ratio)
    assert np.array_equal(fold.test, again.test) and not np.array_equal(fold.test, other.test)
    assert _disjoint(fold)


def test_kfold_tests_every_image_once(samples):
    folds = make_folds(samples, "kfold", seed=0, k=5)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(400))
    assert all(_disjoint(f) for f in folds)


def test_subject_kfold_keeps_subjects_on_one_side(samples):
    folds = make_folds(samples, "subject_kfold", seed=0, k=5)
    subject = samples["subject"].to_numpy()
    for f in folds:
        train_side = set(subject[f.train]) | set(subject[f.val])
        assert not train_side & set(subject[f.test])
        assert not set(subject[f.train]) & set(subject[f.val])
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(400))


def test_subject_kfold_needs_subjects(samples):
    with pytest.raises(DataError, match="subject"):
        make_folds(samples.assign(subject=None), "subject_kfold", seed=0, k=5)
    with pytest.raises(ConfigError, match="only 40 subjects"):
        make_folds(samples, "subject_kfold", seed=0, k=50)


def test_official_without_official_split_says_what_to_use(samples):
    with pytest.raises(ConfigError, match="holdout"):
        make_folds(samples.assign(official_split=None), "official", seed=0)
