"""Shared fixtures: each real local server lives in its own module under tests/fixtures/."""

pytest_plugins = [
]
