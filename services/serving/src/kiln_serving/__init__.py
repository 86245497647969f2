"""Kiln serving service: Deployments, traffic splits, Triton model state and prediction logs."""

from kiln_serving.service import SERVICE

__all__ = ["SERVICE"]
