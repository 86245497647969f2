"""The Kiln registry service (see ``service.py`` for its parts)."""

from kiln_registry.service import SERVICE

__all__ = ["SERVICE"]
