"""The Kiln dataset service (see ``service.py`` for its parts)."""

from kiln_dataset.service import SERVICE

__all__ = ["SERVICE"]
