"""The Kiln training service (see ``service.py`` for its parts)."""

from kiln_training.service import SERVICE

__all__ = ["SERVICE"]
