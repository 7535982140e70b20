"""Observability tests reuse the service tests' database and client fixtures."""

from tests.service.conftest import (  # noqa: F401 - fixtures are found by name
    _no_humwatch_environment,
    client,
    db_url,
    make_client,
)
