"""MNIST-format data sets: reading, checking, downloading, resizing, batching."""
from .idx import IDXError, read_idx
from .datasets import (DATASETS, DataNotFoundError, dataset_info, load_split, locate,
                       train_val_split)
from .transforms import prepare_batch, resize_bilinear
from .loader import BatchLoader

__all__ = ["IDXError", "read_idx", "DATASETS", "DataNotFoundError", "dataset_info", "load_split",
           "locate", "train_val_split", "prepare_batch", "resize_bilinear", "BatchLoader"]
