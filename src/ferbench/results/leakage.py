"""A run's recorded train/test overlap (``leakage.json``, written by ``data.leakage``) in words, for table notes."""

from __future__ import annotations


def describe(figures: dict) -> str:
    """'981 test images: 981 share a subject with training, 975 a sequence, 120 near-duplicates (3 exact)'."""

    def shared(key: str, text: str, unknown: str) -> str:  # a data set without subjects (or sequences) cannot say
        return unknown if figures.get(key) is None else f"{figures[key]} {text}"

    subject = shared("subject_overlap", "share a subject with the training side", "subjects unknown")
    sequence = shared("sequence_overlap", "a sequence", "sequences unknown")
    return (
        f"{figures['test_images']} test images: {subject}, {sequence}, {figures['near_duplicates']} have a "
        f"near-duplicate there ({figures['exact_duplicates']} exact)"
    )
