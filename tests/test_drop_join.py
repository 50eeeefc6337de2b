"""The silent-drop join in checks.canary.verdict: MTA acceptances, the provider's DMARC count, the canaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from checks.canary.probe import Canary
from checks.canary.verdict import CanaryVerdict, DmarcCounts, drop_join, provider_finding
from checks.model import Status
from tests.helpers import english_words

DAY = date(2026, 11, 30)
IP = "192.0.2.25"


@dataclass
class ReportCounts:
    """A plain DmarcCounts, standing for the reports store (issue 14): (provider, day, ip) -> count."""

    counts: dict[tuple[str, date, str], int] = field(default_factory=dict)

    def dmarc_count(self, provider: str, day: date, source_ip: str) -> int | None:
        return self.counts.get((provider, day, source_ip))


def _verdict(kind: str, token: str) -> CanaryVerdict:
    sent = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    canary = Canary("outlook", token, f"<{token}@example.org>", "seed@outlook.com", "me@example.org", sent,
                    sent + timedelta(minutes=30), submitted=True, reply="250 2.0.0 Ok: queued as 4F1A")  # fmt: skip
    return CanaryVerdict(canary, kind, f"canary {kind}")


def test_all_three_sources_agree_on_a_drop_with_high_confidence() -> None:
    reports: DmarcCounts = ReportCounts({("microsoft-consumer", DAY, IP): 12})
    verdicts = [_verdict("missing-accepted", "a1"), _verdict("missing-accepted", "a2")]
    join = drop_join("microsoft-consumer", "Outlook", DAY, 40, reports, [IP], verdicts)
    assert join.suspected and join.confidence == "high" and join.missing == ()
    assert join.summary == (
        "Outlook accepted 40 messages from 192.0.2.25 on 2026-11-30. Its DMARC report counts 12. "
        "2 of 2 canaries missing after acceptance: suspected silent drop, high confidence."
    )


def test_a_missing_source_is_named_and_lowers_the_confidence() -> None:
    verdicts = [_verdict("missing-accepted", "a1"), _verdict("missing-accepted", "a2")]
    join = drop_join("microsoft-consumer", "Outlook", DAY, 40, None, [IP], verdicts)
    assert join.confidence == "medium" and join.missing == ("the DMARC aggregate report",)
    assert "Missing: the DMARC aggregate report (confidence lowered)." in join.summary
    alone = drop_join("microsoft-consumer", "Outlook", DAY, None, None, [IP], verdicts)
    assert alone.confidence == "low" and alone.missing == ("the MTA log", "the DMARC aggregate report")


def test_matching_counts_and_delivered_canaries_are_no_drop() -> None:
    reports = ReportCounts({("google", DAY, IP): 39, ("google", DAY, "2001:db8::25"): 1})
    join = drop_join("google", "Gmail", DAY, 40, reports, [IP, "2001:db8::25"], [_verdict("inbox", "b1")])
    assert not join.suspected and join.confidence == "none" and join.dmarc == 40
    assert join.summary.endswith("No sign of a silent drop.")


def test_a_report_shortfall_alone_is_a_suspicion_without_canaries() -> None:
    reports = ReportCounts({("yahoo", DAY, IP): 3})
    join = drop_join("yahoo", "Yahoo", DAY, 50, reports, [IP], [])
    assert join.suspected and join.confidence == "medium" and join.missing == ("canaries",)


def test_the_provider_verdict_carries_the_join() -> None:
    reports = ReportCounts({("microsoft-consumer", DAY, IP): 12})
    verdicts = [_verdict("inbox", "c1")]
    join = drop_join("microsoft-consumer", "Outlook", DAY, 40, reports, [IP], verdicts)
    finding = provider_finding("outlook", verdicts, join=join)
    assert "Its DMARC report counts 12" in finding.summary
    assert finding.evidence["join"]["accepted"] == 40
    assert finding.status is Status.WARN  # the canary arrived, but the report counts a third of the mail


def test_the_join_in_the_operators_language_keeps_its_json_english() -> None:
    import bot.context  # noqa: F401  # installs the bot's translation into the check library
    from bot.i18n import use_language

    reports = ReportCounts({("microsoft-consumer", DAY, IP): 12})
    dropped = [_verdict("missing-accepted", "a1"), _verdict("missing-accepted", "a2")]
    with use_language("es"):
        high = drop_join("microsoft-consumer", "Outlook", DAY, 40, reports, [IP], dropped)
        lowered = drop_join("microsoft-consumer", "Outlook", DAY, 1, None, [IP], dropped[:1])
        clear = drop_join("google", "Gmail", DAY, 40, ReportCounts({("google", DAY, IP): 40}), [IP], [])
        provider = provider_finding("outlook", dropped, join=high)
    assert high.summary == (
        "Outlook aceptó 40 mensajes de 192.0.2.25 el 2026-11-30. Su informe DMARC cuenta 12. "
        "2 de 2 canarios sin aparecer tras ser aceptados: se sospecha una pérdida silenciosa, confianza alta."
    )
    assert lowered.summary == (
        "Outlook aceptó 1 mensaje de 192.0.2.25 el 2026-11-30. 1 de 1 canario sin aparecer tras ser aceptado: "
        "se sospecha una pérdida silenciosa, confianza media. "
        "Fuentes que faltan: el informe agregado DMARC (confianza rebajada)."
    )
    assert clear.summary.endswith("Ningún indicio de pérdida silenciosa. Fuentes que faltan: canarios.")
    assert provider.summary.startswith(
        "canarios a outlook aceptados con 250 y nunca entregados: 2 de los últimos 2; probable bloqueo silencioso. "
        "Outlook aceptó 40 mensajes"
    )
    for join in (high, lowered, clear):
        assert not english_words(join.summary), join.summary
    assert not english_words(provider.summary), provider.summary
    assert lowered.missing == ("the DMARC aggregate report",) and lowered.to_json()["confidence"] == "medium"
