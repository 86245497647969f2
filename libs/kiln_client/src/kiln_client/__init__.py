"""Kiln's Python client: ``Kiln`` (sync) and ``AsyncKiln`` over the gateway's public APIs."""

from kiln_client.client import AsyncKiln, Kiln
from kiln_client.errors import (
    ApiError,
    ConnectionFailed,
    JobFailed,
    KilnClientError,
    NotFound,
    TimedOut,
)
from kiln_client.settings import ClientSettings
from kiln_client.training import Progress, Status

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncKiln",
    "ClientSettings",
    "ConnectionFailed",
    "JobFailed",
    "Kiln",
    "KilnClientError",
    "NotFound",
    "Progress",
    "Status",
    "TimedOut",
    "__version__",
]
