"""``digits``: scikit-learn's built-in UCI handwritten digits (1,797 images, 8×8, 10 classes).

Nothing to download: the data ships inside scikit-learn. There is no official split, so a fixed
stratified 25 % of every class (seed 0) is the test set — the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exdistill.data.base import DATASETS, DatasetSpec, RawData, stratified_split

TEST_FRACTION = 0.25
SPLIT_SEED = 0


def load_digits(data_dir: Path | None = None, **_: object) -> RawData:
    """Load the digits as uint8 ``(N, 8, 8)``; pixel values 0..16 map to 0..255."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return RawData(
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        class_names=[str(c) for c in range(10)],
        source="sklearn.datasets.load_digits",
    )


DATASETS.add(
    "digits",
    DatasetSpec(
        name="digits",
        load=load_digits,
        description="built-in UCI handwritten digits from scikit-learn (8×8, 10 classes)",
        default_dir=None,
        needs_dir=False,
        image_size=8,
    ),
)
