"""Training data access for Kiln dataset versions.

:class:`VersionDataset` reads a version's manifest and serves ``(image, target)`` pairs from a
local content-addressed blob cache, fetching from the object store on a miss; :func:`make_loader`
wraps it in a DataLoader with seeded shuffling and prefetching.
"""

from kiln_data.cache import BlobCache, CorruptBlob
from kiln_data.dataset import VersionDataset, load_manifest, read_manifest, to_tensor
from kiln_data.fetch import BlobFetcher
from kiln_data.loader import ShuffleSampler, collate_labels, make_loader, seed_worker

__all__ = [
    "BlobCache",
    "BlobFetcher",
    "CorruptBlob",
    "ShuffleSampler",
    "VersionDataset",
    "collate_labels",
    "load_manifest",
    "make_loader",
    "read_manifest",
    "seed_worker",
    "to_tensor",
]
