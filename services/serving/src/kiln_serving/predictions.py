"""Prediction logging off the request path: sampled predictions and low-confidence ones (their
input stored in the object store, for active learning) are queued in memory and written in
batches, one transaction of outbox events per batch."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from kiln_core.catalog import PredictionFlagged, PredictionSampled
from kiln_core.db import new_id
from kiln_core.metrics import PREDICTIONS_FLAGGED
from kiln_core.service import ServiceRuntime
from kiln_serving.traffic import ServingVersion

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000
BATCH = 500


@dataclass
class LoggedPrediction:
    endpoint: str
    version: ServingVersion
    label: str | None
    confidence: float
    latency_ms: float
    sampled: bool
    threshold: float
    flagged_input: bytes | None  # set when the prediction is under the confidence threshold
    content_type: str
    boxes: list[dict[str, Any]] | None = None  # a detector's answered boxes


class PredictionLog:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.queue: asyncio.Queue[LoggedPrediction] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    def offer(
        self,
        endpoint: str,
        version: ServingVersion,
        label: str | None,
        confidence: float,
        latency_ms: float,
        *,
        sample_rate: float,
        threshold: float,
        raw_input: bytes | None,
        content_type: str,
        boxes: list[dict[str, Any]] | None = None,
    ) -> None:
        """Queue a prediction if it is sampled or flagged (never blocks, drops when full)."""
        flagged = confidence < threshold and raw_input is not None
        if flagged:
            PREDICTIONS_FLAGGED.labels(endpoint, str(version.version)).inc()
        sampled = sample_rate > 0 and random.random() < sample_rate
        if not (flagged or sampled):
            return
        item = LoggedPrediction(
            endpoint,
            version,
            label,
            confidence,
            latency_ms,
            sampled,
            threshold,
            raw_input if flagged else None,
            content_type,
            boxes,
        )
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                first = await asyncio.wait_for(self.queue.get(), 0.5)
            except TimeoutError:
                continue
            batch = [first]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self.write(batch)
            except Exception:  # noqa: BLE001 - logging must never take serving down
                log.exception("prediction log batch lost", extra={"size": len(batch)})
        if not self.queue.empty():  # flush what is left on shutdown
            rest = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
            try:
                await self.write(rest)
            except Exception:  # noqa: BLE001
                log.exception("prediction log batch lost at shutdown")

    async def write(self, batch: list[LoggedPrediction]) -> None:
        """Store flagged inputs, then emit every event of the batch in one transaction."""
        store = self.runtime.store
        keys: dict[int, str] = {}
        for i, p in enumerate(batch):
            if p.flagged_input is not None:
                keys[i] = (await store.put_blob(p.flagged_input)).key
        async with self.runtime.db.transaction() as session:
            for i, p in enumerate(batch):
                v = p.version
                prediction_id = new_id()
                if i in keys:
                    flagged = PredictionFlagged(
                        prediction_id=prediction_id,
                        endpoint=p.endpoint,
                        model_name=v.model_name,
                        version=v.version,
                        version_id=v.version_id,
                        dataset_id=v.dataset_id,
                        input_key=keys[i],
                        input_uri=store.uri(keys[i]),
                        content_type=p.content_type,
                        predicted_label=p.label,
                        confidence=p.confidence,
                        threshold=p.threshold,
                        predicted_boxes=p.boxes,
                    )
                    await self.runtime.emit(session, flagged, subject=p.endpoint)
                if p.sampled:
                    sampled = PredictionSampled(
                        prediction_id=prediction_id,
                        endpoint=p.endpoint,
                        model_name=v.model_name,
                        version=v.version,
                        version_id=v.version_id,
                        predicted_label=p.label,
                        confidence=p.confidence,
                        latency_ms=p.latency_ms,
                    )
                    await self.runtime.emit(session, sampled, subject=p.endpoint)
