"""The embedded data set: deterministic, balanced, any size, separate train and test faces."""

import numpy as np

from ferbench.data.synthetic import CLASSES, generate, load_synthetic


def test_deterministic_given_seed():
    a, ya = generate(21, 48, seed=3)
    b, yb = generate(21, 48, seed=3)
    c, _ = generate(21, 48, seed=4)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, c)


def test_balanced_labels_and_any_size():
    images, labels = generate(70, 64, seed=0)
    assert images.shape == (70, 64, 64) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [10] * len(CLASSES)


def test_source_has_official_split_and_no_shared_faces():
    source = load_synthetic(n_train=35, n_test=14)
    assert len(source) == 49 and source.classes == CLASSES
    split = source.samples["official_split"]
    assert (split == "train").sum() == 35 and (split == "test").sum() == 14
    train = source.pixels[split.eq("train").to_numpy()].reshape(35, -1)
    test = source.pixels[split.eq("test").to_numpy()].reshape(14, -1)
    assert not (train[:, None, :] == test[None, :, :]).all(axis=2).any()


def _zscore(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(float)
    return (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)


def test_expressions_are_told_apart_by_geometry_alone():
    """With pose and shape jitter off, a nearest-class-mean rule separates the seven expressions."""
    train, y_train = generate(140, 48, seed=1, difficulty=0.0)
    test, y_test = generate(70, 48, seed=2, difficulty=0.0)
    means = np.stack([_zscore(train)[y_train == k].mean(0) for k in range(len(CLASSES))])
    predicted = np.argmin(((_zscore(test)[:, None, :] - means[None]) ** 2).sum(2), axis=1)
    assert (predicted == y_test).mean() >= 0.95
