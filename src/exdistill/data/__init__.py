"""Datasets: loaders per on-disk format, registered in ``DATASETS``, all producing ``ImageDataset``.

Importing this package registers every loader module (one per format).
"""

from exdistill.data import cifar, digits, idx, imagefolder, npz, parquet  # noqa: F401  (register)
from exdistill.data.base import DATASETS, DatasetSpec, ImageDataset, RawData, Split, build_dataset
from exdistill.data.load import cache_root, describe_datasets, load_dataset

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageDataset",
    "RawData",
    "Split",
    "build_dataset",
    "cache_root",
    "describe_datasets",
    "load_dataset",
]
