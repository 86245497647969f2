"""Property: whatever sequence of version creates, deletes and purges, no blob referenced by a
live version (or an open draft) is ever removed from the store."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from kiln_core.catalog import VersionLineage
from kiln_core.manifest import ManifestItem
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from kiln_core.storage import blob_key
from kiln_dataset.lifecycle import delete_version, purge, store_blobs
from kiln_dataset.models import Dataset, DatasetVersion, VersionBlob
from kiln_dataset.service import SERVICE
from kiln_dataset.versions import create_version

POOL = [f"blob-{i}".encode() for i in range(8)]

operation = st.one_of(
    st.tuples(st.just("create"), st.sets(st.integers(0, len(POOL) - 1), min_size=1, max_size=5)),
    st.tuples(st.just("delete"), st.integers(0, 20)),
    st.tuples(st.just("purge"), st.just(0)),
)


async def run_sequence(ops: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runtime = ServiceRuntime(
            SERVICE,
            Settings(
                database_url=f"sqlite+aiosqlite:///{tmp}/{{service}}.db",
                bus_url=f"embedded://p{uuid.uuid4().hex}",
                storage_url=f"file://{tmp}/store",
            ),
        )
        await runtime.start()
        try:
            async with runtime.db.transaction() as session:
                dataset = Dataset(name="prop", task_type="classification", owner="t")
                session.add(dataset)
            live: list[str] = []
            for op, arg in ops:
                if op == "create":
                    items = []
                    for index in sorted(arg):  # type: ignore[call-overload]
                        ref = await runtime.store.spool(POOL[index])
                        await store_blobs(runtime, [(ref, "image/png")])
                        items.append(
                            ManifestItem(
                                item_id=f"i{index}",
                                blob=ref.sha256,
                                media_type="image/png",
                                size_bytes=ref.size,
                            )
                        )
                    async with runtime.db.transaction() as session:
                        version = await create_version(
                            session,
                            runtime,
                            dataset.id,
                            items,
                            lineage=VersionLineage(source="test"),
                        )
                        live.append(version.id)
                elif op == "delete" and live:
                    victim = live.pop(int(arg) % len(live))  # type: ignore[call-overload]
                    async with runtime.db.transaction() as session:
                        row = await session.get(DatasetVersion, victim)
                        assert row is not None
                        await delete_version(session, runtime, row, "test")
                elif op == "purge":
                    await purge(runtime, grace=timedelta(0))
                # the invariant, after every step
                async with runtime.db.session() as session:
                    referenced = set(
                        (
                            await session.exec(
                                select(VersionBlob.blob).where(VersionBlob.version_id.in_(live))  # type: ignore[attr-defined]
                            )
                        ).all()
                    )
                for sha in referenced:
                    assert await runtime.store.exists(blob_key(sha)), f"live blob {sha} purged"
            # and a final purge leaves exactly the referenced blobs
            await purge(runtime, grace=timedelta(0))
            stored = {
                k.rsplit("/", 2)[-2] + k.rsplit("/", 1)[-1]
                for k in await runtime.store.list("blobs/")
            }
            assert stored == referenced
        finally:
            await runtime.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=12))
def test_no_live_blob_is_ever_purged(ops: list[tuple[str, object]]) -> None:
    asyncio.run(run_sequence(ops))
