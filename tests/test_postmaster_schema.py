"""repbot's Postmaster v2 request, the local server's answers and repbot's tables, checked against Google's
discovery document (an excerpt in tests/data/postmaster_v2, see its SOURCES.md)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from checks.providers import postmaster
from checks.providers._postmaster_parse import ERROR_REASONS, METRICS, query_body
from tests.fixtures.http_providers import BATCH_DENIED, COMPLIANCE_V2, POSTMASTER_V2, _v2_stats

DISCOVERY = json.loads((Path(__file__).parent / "data" / "postmaster_v2" / "discovery-excerpt.json").read_text())
SCHEMAS: dict[str, dict[str, Any]] = DISCOVERY["schemas"]
PRIMITIVES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "number": (int, float), "object": dict}


def conform(value: Any, kind: Any, where: str = "$") -> None:
    """Fail unless `value` has only the properties, types and enum values the document gives `kind`."""
    if isinstance(kind, list):
        assert value in kind, f"{where}: {value!r} is not one of {kind}"
    elif kind.endswith("[]"):
        assert isinstance(value, list), f"{where}: not a list"
        for n, item in enumerate(value):
            conform(item, kind[:-2], f"{where}[{n}]")
    elif kind in PRIMITIVES:
        assert isinstance(value, PRIMITIVES[kind]) and not isinstance(value, bool), f"{where}: not {kind}: {value!r}"
    else:
        assert isinstance(value, dict), f"{where}: not an object ({kind})"
        properties = SCHEMAS[kind]
        for key, item in value.items():
            assert key in properties, f"{where}: {kind} has no field {key!r}"
            conform(item, properties[key], f"{where}.{key}")


def filters(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+) = "([^"]*)"', text))


def test_the_query_request_is_as_documented() -> None:
    body = query_body(date(2026, 6, 27), date(2026, 7, 4), 200, "2026-07-01/spam_rate")
    conform(body, "QueryDomainStatsRequest")
    conform({"requests": [{"parent": "domains/example.org", **body}]}, "BatchQueryDomainStatsRequest")
    documented = DISCOVERY["filters"]
    for name, metric, text in METRICS:
        conform(metric, SCHEMAS["BaseMetric"]["standardMetric"], name)
        for key, value in filters(text).items():
            allowed = documented[metric].get(key) or documented[metric][f"{key}.{filters(text)['error_type']}"]
            assert value in allowed, (name, key, value)


def test_the_error_reasons_are_the_documented_ones() -> None:
    documented = DISCOVERY["filters"]["DELIVERY_ERROR_RATE"]
    assert list(ERROR_REASONS) == documented["error_type"]
    assert {kind: list(reasons) for kind, reasons in ERROR_REASONS.items()} == {
        kind: documented[f"error_reason.{kind}"] for kind in documented["error_type"]
    }


def test_every_requirement_and_reason_has_words() -> None:
    requirements = set(SCHEMAS["ComplianceRowData"]["requirement"]) - {"COMPLIANCE_REQUIREMENT_UNSPECIFIED"}
    assert set(postmaster.REQUIREMENTS) == requirements
    reasons = {*SCHEMAS["OneClickUnsubscribeVerdict"]["reason"], *SCHEMAS["HonorUnsubscribeVerdict"]["reason"]}
    assert set(postmaster.REASONS) == reasons - {"REASON_UNSPECIFIED"}


@pytest.mark.parametrize("domain", sorted(POSTMASTER_V2))
def test_the_local_server_answers_as_documented(domain: str) -> None:
    body = query_body(date(2026, 6, 27), date(2026, 7, 4), 5)
    page = _v2_stats(domain, body)
    conform(page, "QueryDomainStatsResponse")
    while page.get("nextPageToken"):
        page = _v2_stats(domain, {**body, "pageToken": page["nextPageToken"]})
        conform(page, "QueryDomainStatsResponse")


def test_the_local_compliance_and_error_answers_are_as_documented() -> None:
    for answer in COMPLIANCE_V2.values():
        conform(answer, "DomainComplianceStatus")
    conform({"results": [{"error": BATCH_DENIED}]}, "BatchQueryDomainStatsResponse")
