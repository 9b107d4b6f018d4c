"""`ShardDataset`: a shard dataset as a `torch.utils.data.Dataset`.

Kept in its own module so that `import shards` never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from .reader import Dataset, open_dataset


class ShardDataset(_TorchDataset):
    """Items are `transform(image)` for an RGB uint8 HxWx3 numpy image, or, without a
    transform, a uint8 CxHxW tensor. With `with_meta=True` an item is `(x, meta)`.

    Safe with DataLoader workers: each worker reopens the shards itself.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Dataset,
        transform: Callable[[np.ndarray], Any] | None = None,
        with_meta: bool = False,
    ) -> None:
        self.data = path if isinstance(path, Dataset) else open_dataset(path)
        self.transform = transform
        self.with_meta = with_meta

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        image, meta = self.data[index]
        x = self.transform(image) if self.transform else torch.from_numpy(image).permute(2, 0, 1).contiguous()
        return (x, meta) if self.with_meta else x
