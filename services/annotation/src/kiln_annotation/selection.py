"""Active learning beyond one threshold: the next batch of a dataset version's unlabelled items,
ranked by how unsure the current model is of them, becomes a project's tasks.

A selection job asks a serving endpoint (the project's ``prelabel_endpoint`` by default) for
every unlabelled item of the version the project has no task for yet (images, text and
tabular rows alike, see :func:`model_input`), scores each answer by
the chosen strategy, keeps the ``size`` most uncertain and makes them high-priority tasks
carrying the model's answer as a pre-label. The strategy, the item's score and its rank are
recorded on each task's audit entry and on the job.

Strategies (higher score = more uncertain, all in 0..1):

- ``least-confidence``: 1 − the top class's probability;
- ``margin``: 1 − (top probability − second probability);
- ``entropy``: the answer's entropy over the classes, divided by log(number of classes);
- ``random``: a uniform draw from the job's seed — the baseline the others must beat.

A detector's answer is scored by the box policy of :mod:`kiln_serving.detection` whatever the
strategy: 1 − the image's confidence (its least sure shown box; with no box shown, its best
score), so an image with one doubtful box ranks high.

Diversity (``diversity: true``): the most uncertain ``DIVERSITY_POOL`` × ``size`` items are
the candidates; the first pick is the most uncertain, each next one maximises uncertainty ×
its distance to the nearest pick so far (on 16×16 grey thumbnails, scaled to unit length), so
a batch is not twenty near-duplicates of one hard image.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlmodel import col, select

from kiln_annotation.handlers import untasked_items
from kiln_annotation.models import AuditEntry, Project, ProjectItem, SelectionJob
from kiln_annotation.prelabel import BATCH, box_suggestion, class_suggestion, model_source
from kiln_annotation.workflow import create_tasks, service_token
from kiln_core.db import utcnow
from kiln_core.errors import DependencyUnavailable, ValidationFailed
from kiln_core.jobs import Progress
from kiln_core.manifest import ManifestItem, read_manifest
from kiln_core.preprocessing import parse_tabular
from kiln_core.service import ServiceRuntime
from kiln_core.storage import blob_key

log = logging.getLogger(__name__)

STRATEGIES = ("least-confidence", "margin", "entropy", "random")
SELECTION_PRIORITY = 90  # before ordinary work, after inputs production flagged (100)
DIVERSITY_POOL = 4
THUMBNAIL = 16


def uncertainty(prediction: dict[str, Any], strategy: str) -> float:
    """How unsure one ``:predict`` answer is, 0..1 (see the module's strategies)."""
    if "detections" in prediction:
        return _clip(1.0 - float(prediction.get("confidence") or 0.0))
    probabilities = prediction.get("probabilities")
    if strategy == "least-confidence" and not probabilities:
        return _clip(1.0 - float(prediction.get("confidence") or 0.0))
    if not isinstance(probabilities, dict) or not probabilities:
        raise ValueError(f"{strategy} needs every class's probability in the answer")
    p = np.sort(np.asarray([float(v) for v in probabilities.values()], dtype=np.float64))[::-1]
    if strategy == "least-confidence":
        return _clip(1.0 - p[0])
    if strategy == "margin":
        return _clip(1.0 - (p[0] - (p[1] if len(p) > 1 else 0.0)))
    if strategy == "entropy":
        if len(p) < 2:
            return 0.0
        q = p[p > 0]
        return _clip(float(-(q * np.log(q)).sum() / math.log(len(p))))
    raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")


def _clip(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


@dataclass
class Candidate:
    item_id: str
    score: float
    feature: np.ndarray | None = None


def choose(
    candidates: Sequence[Candidate], size: int, diversity: bool, seed: int, strategy: str
) -> list[Candidate]:
    """The ``size`` items to label next, most uncertain first (see the module's docstring)."""
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))
        return [candidates[i] for i in order[:size]]
    ranked = sorted(candidates, key=lambda c: (-c.score, c.item_id))
    if not diversity or size <= 1:
        return ranked[:size]
    pool = [c for c in ranked[: DIVERSITY_POOL * size] if c.feature is not None]
    if len(pool) <= size:
        return ranked[:size]
    features = np.stack([c.feature for c in pool if c.feature is not None])
    scores = np.asarray([c.score for c in pool])
    picked = [0]
    nearest = np.linalg.norm(features - features[0], axis=1)
    while len(picked) < size:
        value = scores * nearest
        value[picked] = -1.0
        best = int(value.argmax())
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[best], axis=1))
    return [pool[i] for i in picked]


def thumbnail(data: bytes) -> np.ndarray | None:
    """A 16×16 grey thumbnail as a unit vector (mean removed), or None for a non-image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    except (OSError, ValueError):
        return None
    x = np.asarray(small, dtype=np.float64).ravel()
    x -= x.mean()
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 0 else x


async def select_batch(runtime: ServiceRuntime, job: SelectionJob, progress: Progress) -> None:
    """Run a selection job (claimed by :func:`kiln_core.jobs.run_job`). A redelivered job
    finds the items it tasked before recorded and does not task them twice."""
    try:
        items = [i for i in await read_manifest(runtime.store, job.manifest_key) if not i.labels]
    except ValueError as exc:
        raise ValidationFailed(f"manifest_key: not a readable manifest ({exc})"[:500]) from None
    async with runtime.db.session() as session:
        pool = await _untasked(session, job.project_id, items)
    by_id = {i.item_id: i for i in pool}
    answers: dict[str, dict[str, Any]] = {}
    features: dict[str, np.ndarray | None] = {}
    token = await service_token(runtime, job.project_id)
    failed = 0
    async with httpx.AsyncClient(
        base_url=runtime.settings.serving_url,
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    ) as client:
        for start in range(0, len(pool), BATCH):
            batch = pool[start : start + BATCH]
            blobs = [await runtime.store.read_bytes(blob_key(i.blob)) for i in batch]
            for item, data in zip(batch, blobs, strict=True):
                features[item.item_id] = thumbnail(data) if job.diversity else None
            if job.strategy == "random":
                continue  # the baseline needs no model
            try:
                inputs = [model_input(i.media_type, d) for i, d in zip(batch, blobs, strict=True)]
            except ValueError:
                failed += len(batch)
                continue
            predictions = await _predict(client, job.endpoint, inputs)
            if predictions is None:
                failed += len(batch)
            else:
                answers.update(zip((i.item_id for i in batch), predictions, strict=False))
            await progress(min(start + BATCH, len(pool)), len(pool), "scoring")
    candidates = []
    for item in pool:
        if job.strategy == "random":
            candidates.append(Candidate(item.item_id, 0.0, features.get(item.item_id)))
            continue
        answer = answers.get(item.item_id)
        if answer is None:
            continue
        try:
            score = uncertainty(answer, job.strategy)
        except ValueError as exc:
            raise ValidationFailed(f"endpoint {job.endpoint!r}: {exc}") from None
        candidates.append(Candidate(item.item_id, score, features.get(item.item_id)))
    chosen = choose(candidates, job.size, job.diversity, job.seed, job.strategy)
    await _task(runtime, job, [by_id[c.item_id] for c in chosen], chosen, answers, failed)


async def _untasked(session: Any, project_id: str, items: list[ManifestItem]) -> list[ManifestItem]:
    # Read-only here: the items become tasked only in _task's transaction, with the tasks.
    tasked = set(
        (
            await session.exec(
                select(ProjectItem.item_id).where(ProjectItem.project_id == project_id)
            )
        ).all()
    )
    return [i for i in items if i.item_id not in tasked]


def model_input(media_type: str | None, data: bytes) -> Any:
    """An item's blob as ``:predict`` takes it: an image base64-encoded, text as a string, a
    tabular row (JSON array or CSV line) as numbers."""
    kind = (media_type or "").split(";")[0].strip()
    if kind in ("text/csv", "application/json"):
        return [float(v) for v in parse_tabular(data)]
    if kind.startswith("text/"):
        return data.decode("utf-8")
    return base64.b64encode(data).decode()


async def _predict(
    client: httpx.AsyncClient, endpoint: str, inputs: list[Any]
) -> list[dict[str, Any]] | None:
    """The endpoint's answers for a batch (every class's probability asked for), or None when
    the model refused the batch; an unreachable endpoint fails the job."""
    try:
        response = await client.post(
            f"/v1/endpoints/{endpoint}:predict",
            params={"probabilities": "true"},
            json={"inputs": inputs},
        )
    except httpx.HTTPError as exc:
        raise DependencyUnavailable(f"the serving service is unreachable: {exc}") from None
    if response.status_code in (404, 503):
        raise DependencyUnavailable(
            f"endpoint {endpoint!r} cannot predict ({response.status_code}): {response.text[:300]}"
        )
    if response.status_code != 200:
        return None
    answer = response.json()
    source = model_source(answer.get("model_name"), answer.get("version"))
    return [{**p, "_source": source} for p in answer.get("predictions", [])]


async def _task(
    runtime: ServiceRuntime,
    job: SelectionJob,
    items: list[ManifestItem],
    chosen: list[Candidate],
    answers: dict[str, dict[str, Any]],
    failed: int,
) -> None:
    """Tasks for the chosen items (one transaction with the job's result), most uncertain
    first, each with the model's answer as a pre-label and the selection on its audit."""
    rank = {c.item_id: (n + 1, c.score) for n, c in enumerate(chosen)}
    async with runtime.db.transaction() as session:
        project = await session.get(Project, job.project_id)
        row = await session.get(SelectionJob, job.id)
        if project is None or row is None:
            return
        fresh = await untasked_items(session, project.id, items)

        def suggest(payload: list[dict[str, Any]]) -> dict[str, Any] | None:
            found = {
                e["item_id"]: s for e in payload if (s := _suggestion(answers.get(e["item_id"])))
            }
            return found or None

        tasks = await create_tasks(
            session,
            project,
            job.dataset_version,
            fresh,
            priority=SELECTION_PRIORITY,
            source=f"selection:{job.strategy}",
            prelabels=suggest,
        )
        for task in tasks:
            session.add(
                AuditEntry(
                    task_id=task.id,
                    actor=f"selection:{job.id}",
                    action="selected",
                    detail={
                        "job_id": job.id,
                        "strategy": job.strategy,
                        "diversity": job.diversity,
                        "endpoint": job.endpoint if job.strategy != "random" else None,
                        "items": {
                            e["item_id"]: {
                                "rank": rank[e["item_id"]][0],
                                "uncertainty": round(rank[e["item_id"]][1], 6),
                            }
                            for e in task.items
                        },
                    },
                )
            )
        row.selected = [
            {"item_id": c.item_id, "uncertainty": round(c.score, 6)}
            for c in chosen
            if c.item_id in {i.item_id for i in fresh}
        ]
        row.tasks_created = len(tasks)
        row.failed_items = failed
        row.record_success({}, "")
        row.updated_at = utcnow()
        session.add(row)


def _suggestion(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    source = str(answer.get("_source", "model"))
    if "detections" in answer:
        return box_suggestion(answer["detections"], answer.get("confidence"), source)
    if answer.get("label") is None:
        return None
    return class_suggestion(answer["label"], answer.get("confidence"), source)


async def latest_selections(runtime: ServiceRuntime, project_id: str) -> list[SelectionJob]:
    async with runtime.db.session() as session:
        return list(
            (
                await session.exec(
                    select(SelectionJob)
                    .where(SelectionJob.project_id == project_id)
                    .order_by(col(SelectionJob.created_at).desc())
                    .limit(50)
                )
            ).all()
        )
