"""What the client raises: an :class:`ApiError` carries the service's problem+json fields."""

from __future__ import annotations

from typing import Any

import httpx


class KilnClientError(Exception):
    """Base of everything the client raises on purpose."""


class ConnectionFailed(KilnClientError):
    """Kiln could not be reached (after the retries an idempotent call is allowed)."""


class ApiError(KilnClientError):
    """A service answered with an error: the fields of its ``application/problem+json``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",
        instance: str | None = None,
        extra: dict[str, Any] | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail != title else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.extra = extra or {}
        self.method = method
        self.url = url

    @property
    def slug(self) -> str:
        """The stable last part of ``type`` (``not-found``, ``conflict``…)."""
        return self.type.rsplit("/", 1)[-1]

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The problem in an error response; a body that is not one still gives status + text."""
        status = response.status_code
        body: Any = None
        try:
            body = response.json()
        except (ValueError, httpx.ResponseNotRead):
            body = None
        kind = ERRORS_BY_STATUS.get(status, ApiError)
        request = response.request
        method, url = request.method, str(request.url)
        if isinstance(body, dict) and ("title" in body or "detail" in body):
            known = {"type", "title", "status", "detail", "instance"}
            return kind(
                status,
                str(body.get("title") or response.reason_phrase),
                str(body.get("detail") or body.get("title") or ""),
                type=str(body.get("type") or "about:blank"),
                instance=body.get("instance"),
                extra={k: v for k, v in body.items() if k not in known},
                method=method,
                url=url,
            )
        if isinstance(body, dict) and "error" in body:  # the Open Inference Protocol's errors
            return kind(status, response.reason_phrase, str(body["error"]), method=method, url=url)
        try:
            text = response.text.strip()[:500]
        except httpx.ResponseNotRead:  # a streamed answer whose body was not read
            text = ""
        return kind(
            status, response.reason_phrase, text or response.reason_phrase, method=method, url=url
        )


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class ValidationFailed(ApiError):
    pass


class Unavailable(ApiError):
    pass


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    503: Unavailable,
}


class JobFailed(KilnClientError):
    """Long work ended in failure; ``job`` is its last state (``error`` says why)."""

    def __init__(self, what: str, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        reason = error.get("detail") if isinstance(error, dict) else error
        super().__init__(f"{what} {job.get('status')}: {reason or job.get('message') or ''}")
        self.job = job


class TimedOut(KilnClientError):
    """Waiting for something took longer than the caller allowed."""
