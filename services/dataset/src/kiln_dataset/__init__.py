"""Kiln dataset service: Datasets, immutable versions, content-addressed items, splits, lineage, augmentation and quality reports."""

from kiln_dataset.service import SERVICE

__all__ = ["SERVICE"]
