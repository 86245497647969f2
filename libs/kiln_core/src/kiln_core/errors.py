"""One error hierarchy for every service; the HTTP layer renders it as problem+json (RFC 9457)."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://kiln.dev/problems/"


class KilnError(Exception):
    """Base of every error Kiln reports on purpose. ``type`` is a stable slug for clients."""

    status: int = 500
    type: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def failure_problem(exc: BaseException) -> dict[str, Any]:
    """The problem background work (a Celery job) records when it fails: a :class:`KilnError`'s
    own, else an internal error naming the exception, never a traceback."""
    if isinstance(exc, KilnError):
        return exc.problem()
    return {
        "type": PROBLEM_BASE + "internal-error",
        "title": "Job failed",
        "status": 500,
        "detail": f"{type(exc).__name__}: {exc}"[:2000],
    }


class BadRequest(KilnError):
    status, type, title = 400, "bad-request", "Bad request"


class ValidationFailed(KilnError):
    status, type, title = 422, "validation-failed", "Request validation failed"


class InvalidValue(ValidationFailed):
    """A value the store cannot hold (a number out of its column's range, a NUL in text)."""

    type, title = "invalid-value", "Invalid value"


class Unauthorized(KilnError):
    status, type, title = 401, "unauthorized", "Authentication required"


class Forbidden(KilnError):
    status, type, title = 403, "forbidden", "Not allowed for your role"


class NotFound(KilnError):
    status, type, title = 404, "not-found", "Resource not found"


class Conflict(KilnError):
    status, type, title = 409, "conflict", "Conflict with the current state"


class QuotaExceeded(KilnError):
    """A team's quota would be exceeded; the problem names the quota, usage and limit."""

    status, type, title = 409, "quota-exceeded", "Quota exceeded"


class PayloadTooLarge(KilnError):
    status, type, title = 413, "payload-too-large", "Payload too large"


class DependencyUnavailable(KilnError):
    status, type, title = 503, "dependency-unavailable", "A dependency is unavailable"


class EventRejected(KilnError):
    """An event that can never be handled: it goes to the dead-letter topic, never retried."""

    status, type, title = 422, "event-rejected", "Event rejected"


class MalformedEvent(EventRejected):
    type, title = "malformed-event", "Not a CloudEvents 1.0 structured JSON event"


class UnknownEventType(EventRejected):
    type, title = "unknown-event-type", "Unknown event type"


class EventSchemaViolation(EventRejected):
    type, title = "event-schema-violation", "Event data does not match its schema"
