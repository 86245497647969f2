"""Which services exist and how a process loads one by name (no service imports another)."""

from __future__ import annotations

import importlib

from kiln_core.events import SERVICES
from kiln_core.service import ServiceSpec

DEFAULT_PORTS = {
    "dataset": 8101,
    "annotation": 8102,
    "training": 8103,
    "registry": 8104,
    "serving": 8105,
}

# The event process and the worker of a service serve /metrics, /healthz and /readyz on a port
# of their own: the API's port plus these.
PROBE_PORT_OFFSETS = {"events": 100, "worker": 200}


def probe_port(service: str, process: str) -> int:
    """The default probe port of ``service``'s ``process`` (events or worker)."""
    return DEFAULT_PORTS[service] + PROBE_PORT_OFFSETS[process]


def load_spec(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of: {', '.join(SERVICES)}")
    # Loaded by name: the command depends on no service package.
    module = importlib.import_module(f"kiln_{name}.service")
    spec: ServiceSpec = module.SERVICE
    return spec
