"""Schemathesis against every service's OpenAPI document, signed in as an administrator so the
generated requests reach the handlers: no 5xx, and every response matches what the document
declares for it."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.security.conftest import SERVICES, Stack

# Examples per operation: the whole security suite stays within minutes on two cores.
MAX_EXAMPLES = int(os.environ.get("KILN_SECURITY_FUZZ_EXAMPLES", "6"))


def run_operation(
    stack: Stack, operation: Any, base_url: str, headers: dict[str, str]
) -> list[str]:
    """Fuzz one operation; its distinct failures (by kind), each with a reproducing call and
    what the server logged about it."""
    failures: dict[str, str] = {}
    # Valid requests (must be served) and invalid ones (must be refused with a 4xx).
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        try:
            case.call_and_validate(
                base_url=base_url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation gets its turn
            kinds = [str(e).splitlines()[0] for e in getattr(exc, "exceptions", [exc])]
            key = f"{operation.label}: {', '.join(kinds)}"
            if key not in failures:
                logged = [line for line in stack.logs.lines[seen:] if "Traceback" in line]
                failures[key] = f"{key}\n{str(exc)[:1500]}\n{''.join(logged[-1:])[-2500:]}"

    seen = len(stack.logs.lines)
    fuzz()
    return list(failures.values())


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_requests_never_break_the_service_or_its_schema(stack: Stack, service: str) -> None:
    base_url = stack.urls[service]
    doc = httpx.get(f"{base_url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    headers = stack.headers("fuzzer", "admin")
    failures: list[str] = []
    for result in schema.get_all_operations():
        # An operation schemathesis cannot even read is a broken document: that fails too.
        operation = result.ok()  # type: ignore[union-attr]
        failures += run_operation(stack, operation, base_url, headers)
    assert failures == [], "\n\n".join(failures)
