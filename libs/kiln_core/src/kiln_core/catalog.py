"""Every event type Kiln publishes. Importing this module registers them all."""

from __future__ import annotations

from datetime import datetime

from kiln_core.events import SERVICES, EventData, register_event


class PingSent(EventData):
    """A liveness ping one service sends to all others; proves the wiring end to end."""

    ping_id: str
    origin: str
    message: str = ""
    sent_at: datetime


def _ping_type(service: str) -> type[PingSent]:
    cls = type(
        f"{service.capitalize()}PingSent",
        (PingSent,),
        {
            "event_type": f"kiln.{service}.ping.sent",
            "description": f"The {service} service sent a ping to every other service.",
            "__module__": __name__,
        },
    )
    return register_event(cls)


PING_EVENTS: dict[str, type[PingSent]] = {service: _ping_type(service) for service in SERVICES}
