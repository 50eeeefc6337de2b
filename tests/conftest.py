"""Shared fixtures: each real local server lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.https",
    "tests.fixtures.smtp",
    "tests.fixtures.dnsserver",
    "tests.fixtures.synapse",
    "tests.fixtures.dovecot",
    "tests.fixtures.http_providers",
    "tests.fixtures.mta",
]
