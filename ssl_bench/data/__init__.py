"""Data sets and label-budget splits: the first two boxes of the data flow.

    load_dataset(name, root=None, download=True) -> ImageDataset
        load.py (dispatch, data root), cifar.py + download.py, npz.py, embedded.py
    make_split(y_train, num_labels, num_classes, seed) -> LabelSplit
        splits.py
"""

from .base import ChecksumError, DatasetFormatError, DatasetNotFoundError, ImageDataset
from .load import DATA_ROOT_ENV, list_datasets, load_dataset, resolve_data_root
from .splits import TABLE6_BUDGETS, LabelSplit, make_split

__all__ = [
    "DATA_ROOT_ENV",
    "TABLE6_BUDGETS",
    "ChecksumError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDataset",
    "LabelSplit",
    "list_datasets",
    "load_dataset",
    "make_split",
    "resolve_data_root",
]
