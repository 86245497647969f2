"""Kiln registry service: Registered models, versions, aliases and stages, lineage, audit log and promotion policies."""

from kiln_registry.service import SERVICE

__all__ = ["SERVICE"]
