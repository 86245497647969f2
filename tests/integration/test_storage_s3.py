"""The object store contract against real MinIO over the S3 API."""

from __future__ import annotations

import pytest

from kiln_core.storage import open_store
from tests.unit.test_storage import store_contract

pytestmark = pytest.mark.integration


async def test_s3_store_contract(s3_url: str, unique: str) -> None:
    store = open_store(s3_url)
    await store.check()
    await store_contract(store, f"test-{unique}")
