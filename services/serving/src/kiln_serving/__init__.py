"""The Kiln serving service (see ``service.py`` for its parts)."""

from kiln_serving.service import SERVICE

__all__ = ["SERVICE"]
