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


def load_spec(name: str) -> ServiceSpec:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of: {', '.join(SERVICES)}")
    # Loaded by name: the command depends on no service package.
    module = importlib.import_module(f"kiln_{name}.service")
    spec: ServiceSpec = module.SERVICE
    return spec
