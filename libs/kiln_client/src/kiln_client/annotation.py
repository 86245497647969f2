"""Annotation: projects, tasks, and lease / submit / review for scripted labelling."""

from __future__ import annotations

from typing import Any

from kiln_client.transport import Transport
from kiln_client.types import Project, Task


class Annotation:
    """``client.annotation``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create_project(
        self,
        name: str,
        dataset_id: str,
        labels: list[str],
        *,
        kind: str = "classification",
        **fields: Any,
    ) -> Project:
        body = {
            "name": name,
            "dataset_id": dataset_id,
            "label_schema": {"kind": kind, "labels": [{"name": label} for label in labels]},
            **fields,
        }
        return await self._t.json("annotation", "POST", "/v1/projects", json=body)  # type: ignore[no-any-return]

    async def project(self, project_id: str) -> Project:
        return await self._t.json("annotation", "GET", f"/v1/projects/{project_id}")  # type: ignore[no-any-return]

    async def projects(self, limit: int = 100) -> list[Project]:
        page = await self._t.json("annotation", "GET", "/v1/projects", params={"limit": limit})
        return page["items"] if isinstance(page, dict) else page  # type: ignore[no-any-return]

    async def tasks(
        self, project_id: str, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Task]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        path = f"/v1/projects/{project_id}/tasks"
        page = await self._t.json("annotation", "GET", path, params=params)
        return page["items"]  # type: ignore[no-any-return]

    async def task(self, task_id: str) -> Task:
        return await self._t.json("annotation", "GET", f"/v1/tasks/{task_id}")  # type: ignore[no-any-return]

    async def lease(self, project_id: str) -> Task | None:
        """The next task for the caller to label, or None when the queue is empty."""
        response = await self._t.request(
            "annotation", "POST", f"/v1/projects/{project_id}/lease", ok=(204,)
        )
        return None if response.status_code == 204 else response.json()

    async def submit(self, task_id: str, labels: dict[str, list[dict[str, Any]]]) -> Task:
        """Labels per item id, e.g. ``{"a.png": [{"type": "class", "label": "cat"}]}``."""
        path = f"/v1/tasks/{task_id}/submission"
        return await self._t.json("annotation", "POST", path, json={"labels": labels})  # type: ignore[no-any-return]

    async def review(self, task_id: str, accept: bool, comment: str = "") -> Task:
        path = f"/v1/tasks/{task_id}/review"
        body = {"accept": accept, "comment": comment}
        return await self._t.json("annotation", "POST", path, json=body)  # type: ignore[no-any-return]
