"""Kiln annotation service: Labelling projects, schemas, tasks, assignments, reviews, annotator statistics and pre-labels."""

from kiln_annotation.service import SERVICE

__all__ = ["SERVICE"]
