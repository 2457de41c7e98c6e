"""Datasets (registry, loaders), splits and forget-set selection."""

from bench.data.datasets import (
    DATASETS,
    DatasetBundle,
    Locations,
    data_root,
    load_dataset,
    register_dataset,
)
from bench.data.forget import Carved, carve, retain_positions, select_forget
from bench.data.splits import FileSplit, Split, TensorSplit, View

__all__ = [
    "DATASETS",
    "DatasetBundle",
    "Locations",
    "data_root",
    "load_dataset",
    "register_dataset",
    "Carved",
    "carve",
    "retain_positions",
    "select_forget",
    "FileSplit",
    "Split",
    "TensorSplit",
    "View",
]
