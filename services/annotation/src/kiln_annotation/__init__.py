"""The Kiln annotation service (see ``service.py`` for its parts)."""

from kiln_annotation.service import SERVICE

__all__ = ["SERVICE"]
