"""The LMDB shard dataset format: writer, reader, manifest, verify, export.

    from shards import open_dataset
    ds = open_dataset("data/processed/faces-64")
    image, meta = ds[0]          # RGB uint8 HxWx3, dict

Importing this package loads neither torch nor prefect; `shards.torch.ShardDataset`
adapts a dataset to torch.
"""

from .export import export_dataset
from .format import FORMAT_VERSION, ImageSpec, Manifest, ShardError, ShardInfo, decode_image, encode_image
from .reader import Dataset, Record, open_dataset, read_manifest
from .verify import VerifyReport, dataset_fingerprint, verify_dataset
from .writer import ShardWriter, is_complete, write_shards

__all__ = [
    "FORMAT_VERSION",
    "Dataset",
    "ImageSpec",
    "Manifest",
    "Record",
    "ShardError",
    "ShardInfo",
    "ShardWriter",
    "VerifyReport",
    "dataset_fingerprint",
    "decode_image",
    "encode_image",
    "export_dataset",
    "is_complete",
    "open_dataset",
    "read_manifest",
    "verify_dataset",
    "write_shards",
]
