"""A bounded schemathesis run over the whole OpenAPI, with keys on: no request the schema
allows (or one it does not) gets a 500, and every answer matches its documented schema.

The seed is printed in the summary (and in the failure message); replay a failure with
``HUMWATCH_SCHEMATHESIS_SEED=<seed> pytest tests/service/test_schemathesis.py``.
"""

from __future__ import annotations

import os
import random

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from detectors.embedders.aisfx import CHECKPOINT_NAME
from tests.detectors.aisfx_weights import save_checkpoint
from tests.service.conftest import ADMIN_TOKEN, API_KEY, SUMMARY_LINES, enroll


@schemathesis.serializer("audio/wav", "audio/flac", "audio/ogg")
def _audio(_ctx, value) -> bytes:
    """Generated audio bodies are bytes already (format: binary)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return getattr(value, "data", str(value).encode())


SEED = int(os.environ.get("HUMWATCH_SCHEMATHESIS_SEED") or random.randrange(2**32))
EXAMPLES_PER_OPERATION = 12


@pytest.fixture
def keyed_app(make_client, tmp_path):
    # Random aisfx weights of the real architecture: machines generated with the aisfx
    # embedder are registered for real (a server without weights answers 503 by design,
    # tests/service/test_aisfx_machines.py).
    models = tmp_path / "models"
    save_checkpoint(models / "aisfx" / CHECKPOINT_NAME)
    client = make_client(api_keys=API_KEY, admin_token=ADMIN_TOKEN, models_dir=models)
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    enroll(client, "fan-01")  # something real to find: windows, a baseline
    return client.app


def test_schemathesis_finds_no_server_error_or_schema_violation(keyed_app):
    SUMMARY_LINES.append(f"schemathesis seed: {SEED} (HUMWATCH_SCHEMATHESIS_SEED)")
    print(f"schemathesis seed: {SEED}")
    schema = schemathesis.openapi.from_asgi("/openapi.json", keyed_app)
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12  # the whole API, not an empty schema

    # The admin token may call every operation, so nothing stops at 401/403.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def check(operation, case) -> None:
        nonlocal calls
        calls += 1
        response = case.call(headers=headers)
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"{operation.label}: {exc}\n  {case.as_curl_command()}")

    for operation in operations:

        @hypothesis.seed(SEED)
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def exercise(case):
            check(operation, case)  # noqa: B023 - called before the loop moves on

        exercise()
    SUMMARY_LINES.append(f"schemathesis: {calls} calls over {len(operations)} operations")
    assert calls >= len(operations)
    assert not failures, f"seed {SEED}: " + "\n".join(failures[:10])
