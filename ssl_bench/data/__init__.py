"""Data sets and label-budget splits: the first two boxes of the data flow.

    load_dataset(name, root=None, download=True) -> ImageDataset
        load.py (dispatch, data root); registry.py (every named data set and family); cifar.py, svhn.py,
        stl10.py + download.py (official files); npz.py, imagefolder.py (your own data); embedded.py
    split_for(dataset, num_labels, seed) -> LabelSplit      (registry.py: the reference's rule per data set)
    make_split(y_train, num_labels, num_classes, seed) -> LabelSplit
        splits.py
    published.py: the FixMatch paper's Table 2 (SVHN, STL-10) as reference data
"""

from .base import ChecksumError, DatasetFormatError, DatasetNotFoundError, ImageDataset
from .load import DATA_ROOT_ENV, list_datasets, load_dataset, resolve_data_root
from .registry import DATASETS, FAMILIES, family_of, split_for
from .splits import TABLE6_BUDGETS, LabelSplit, make_split

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "FAMILIES",
    "TABLE6_BUDGETS",
    "ChecksumError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDataset",
    "family_of",
    "LabelSplit",
    "list_datasets",
    "load_dataset",
    "make_split",
    "resolve_data_root",
    "split_for",
]
