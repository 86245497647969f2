"""Kiln training service: Training jobs, trials, quotas, the fair-share queue, checkpoints and metrics history."""

from kiln_training.service import SERVICE

__all__ = ["SERVICE"]
