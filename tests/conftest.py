"""Shared fixtures: each real local server lives in its own module under tests/fixtures/."""

from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.https",
    "tests.fixtures.smtp",
    "tests.fixtures.dnsserver",
    "tests.fixtures.synapse",
    "tests.fixtures.dovecot",
    "tests.fixtures.http_providers",
    "tests.fixtures.mta",
]


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """The registry of secret values is process-wide: a value one test registered ("expired", say) must not
    mask another test's words."""
    from bot import secrets

    saved = secrets._values
    yield
    secrets._values = saved
