"""Long work of the registry on Celery: compression of a version into a derived int8 version.

The job row is the source of truth: a redelivered task finds the job ``running`` and runs it
again from the start. The derived version and the job's success commit in one transaction, so
a job never registers two versions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kiln_core.catalog import ModelArtifact, ModelVersionLineage
from kiln_core.errors import KilnError
from kiln_core.jobs import LongWork, Progress, tracked_jobs
from kiln_core.service import ServiceRuntime
from kiln_registry import torchscript
from kiln_registry.models import Job, ModelVersion, RegisteredModel
from kiln_registry.versions import register_version, store_artifact

log = logging.getLogger(__name__)


async def compress_job(runtime: ServiceRuntime, job: Job, progress: Progress) -> None:
    """The one kind of registry job, run by :func:`kiln_core.jobs.run_job`."""
    await compress(runtime, job)


LONG_WORK: LongWork = tracked_jobs("kiln.registry.run_job", "registry", Job, compress_job)


async def compress(runtime: ServiceRuntime, job: Job) -> dict[str, Any]:
    """Dynamic int8 quantisation of a version into a derived version with its lineage.

    Accuracy on the evaluation set is out of reach here (the registry holds no data), so the
    change is reported as top-1 agreement with the original on seeded random inputs built from
    the signature, beside the size change.
    """
    async with runtime.db.session() as session:
        parent = await session.get(ModelVersion, job.version_id)
        model = await session.get(RegisteredModel, job.model_id)
    if parent is None or model is None:
        raise KilnError("the version to compress no longer exists")
    source = ModelArtifact.model_validate(parent.artifact)
    raw = await runtime.store.read_bytes(source.key)
    samples, seed = int(job.params.get("samples", 64)), int(job.params.get("seed", 0))
    quantized, agreement = await asyncio.to_thread(
        torchscript.compress_isolated, raw, source.signature, source.label_map, samples, seed
    )
    artifact = await store_artifact(
        runtime,
        quantized,
        signature=source.signature,
        label_map=source.label_map,
        preprocessing=source.preprocessing,
    )
    report = {
        "method": "dynamic-int8",
        "layers": "Linear (weights int8, activations quantised at run time)",
        "parent_version": parent.number,
        "original_size_bytes": parent.size_bytes,
        "compressed_size_bytes": artifact.size_bytes,
        "size_ratio": round(artifact.size_bytes / parent.size_bytes, 6),
        "size_change_bytes": artifact.size_bytes - parent.size_bytes,
        **agreement,
        "accuracy_change": (
            "not measured: the registry cannot reach the evaluation data; top1_agreement "
            "with the parent on random inputs is reported instead"
        ),
    }
    async with runtime.db.transaction() as session:
        version = await register_version(
            session,
            runtime,
            model,
            artifact=artifact,
            lineage=ModelVersionLineage(
                source="compression",
                dataset_id=parent.lineage.get("dataset_id"),
                dataset_version=parent.lineage.get("dataset_version"),
                training_job_id=parent.lineage.get("training_job_id"),
                parent_model_version_id=parent.id,
            ),
            lineage_extra={"parent_version": parent.number, "compression_job_id": job.id},
            actor=job.created_by,
            metrics={"top1_agreement": agreement["top1_agreement"]},
            params={**parent.params, "compression": "dynamic-int8"},
            evaluation_split=parent.evaluation_split,
            compression=report,
            tags=sorted({*parent.tags, "int8"}),
            description=f"dynamic int8 quantisation of version {parent.number}",
        )
        result = {**report, "version": version.number, "version_id": version.id}
        row = await session.get(Job, job.id)
        if row is not None:
            row.record_success(
                result,
                f"version {version.number}: {report['size_ratio']:.2f}x size, "
                f"top-1 agreement {agreement['top1_agreement']:.3f}",
            )
            session.add(row)
    return result
