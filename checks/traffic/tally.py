"""Count what the MTA log says of outbound mail: per provider, recipient domain and day, with the replies explained.

A `Tally` is fed raw lines (bytes or text) in log order and keeps counts only: recipient addresses are used to
follow a message through the queue and never stored (its `to_json` holds domains, provider keys and counts).
Each counted attempt also comes out as an `Outcome`, so the live follower can keep its sliding window and spot
the first block-class reply. The same counting serves `repbot traffic` offline and the monitor live.

What counts, as pflogsumm counts it: every `status=sent` (not `forwarded as`), every `status=deferred` attempt,
every `status=bounced`; an expiry (Postfix's qmgr `status=expired`, or a per-recipient `status=expired`) counts
once per recipient still deferred, apart from bounces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from checks.canary.ndr import Explanation, explain
from checks.traffic.lines import GARBAGE, OTHER_DAEMON, Delivery, Expiry, Removed, line_day, parse_line, redact
from checks.traffic.model import Outcome, ProviderSummary, Reply, reply_code
from checks.traffic.providers import Families, Route

__all__ = ["OUTCOMES", "Outcome", "ProviderSummary", "Reply", "Tally"]

OUTCOMES = ("sent", "deferred", "bounced", "expired")
SKIP_REASONS = ("garbage", "other-daemon", "partial", "non-utf8")
MAX_PENDING = 50_000
MAX_LINE = 4096


class _ReplyStat:
    __slots__ = ("block", "count", "entry", "explanation", "line")

    def __init__(self, explanation: str, line: str, block: bool, entry: str = "") -> None:
        self.count = 0
        self.explanation = explanation
        self.line = line
        self.block = block
        self.entry = entry  # the ndr.toml row's id, so the explanation can be worded in any language later


class Tally:
    """Counts of one or many log files (or a live follow), fed line by line in order."""

    def __init__(self, families: Families, today: date, *, keep_domains: bool = True) -> None:
        self.families = families
        self.today = today
        # Per recipient domain (pflogsumm's table): the offline summary wants it; a live follower, whose state is
        # written every poll, need not keep every domain it ever saw.
        self.keep_domains = keep_domains
        self.lines = 0
        self.skipped: Counter[str] = Counter()
        self.providers: dict[str, Counter[str]] = {}
        self.domains: dict[str, Counter[str]] = {}
        self.days: dict[tuple[str, str], Counter[str]] = {}
        self.replies: dict[tuple[str, str], _ReplyStat] = {}
        self.reply_days: Counter[tuple[str, str, str]] = Counter()  # (day, provider, code) -> count
        # qid -> {domain|provider|route: recipients still deferred}; what a qmgr expiry counts.
        self.pending: dict[str, Counter[str]] = {}
        self._deferred: dict[str, dict[str, str]] = {}  # qid -> recipient -> key, in this process only, never stored
        self._explained: dict[tuple[str, str], Explanation | None] = {}
        self._days: dict[str, str] = {}

    # -- feeding ---------------------------------------------------------------------------------------------

    def feed_bytes(self, raw: bytes) -> list[Outcome]:
        """Count one raw line (without its newline); non-UTF-8 and over-long lines are skipped and counted."""
        self.lines += 1
        if len(raw) > MAX_LINE:
            self.skipped["garbage"] += 1
            return []
        if b" postfix" in raw and b" status=" not in raw:
            # Most lines of a busy log: cleanup, qmgr, smtpd, TLS. Only a removal matters, and only while a
            # message is pending (its deferred recipients would otherwise count as expired later).
            if self.pending and raw.endswith(b": removed"):
                qid = raw[:-9].rpartition(b" ")[2].decode("ascii", "replace")
                self.pending.pop(qid, None)
                self._deferred.pop(qid, None)
            return []
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped["non-utf8"] += 1
            return []
        return self._feed(text.rstrip("\r"))

    def feed(self, line: str) -> list[Outcome]:
        """Count one text line (without its newline)."""
        self.lines += 1
        return self._feed(line)

    def feed_all(self, lines: Iterable[bytes], *, collect: bool = True) -> list[Outcome]:
        """Count every line; the outcomes counted (none kept with `collect=False`: the offline summary)."""
        found: list[Outcome] = []
        feed = self.feed_bytes
        for raw in lines:
            outcomes = feed(raw)
            if outcomes and collect:
                found.extend(outcomes)
        return found

    def skip_partial(self, count: int = 1) -> None:
        """Count lines cut off at a rotation (their start was never completed)."""
        self.lines += count
        self.skipped["partial"] += count

    def _feed(self, line: str) -> list[Outcome]:
        parsed = parse_line(line)
        if isinstance(parsed, Delivery):
            outcome = self._delivery(parsed)
            return [outcome] if outcome is not None else []
        if isinstance(parsed, Expiry):
            return self._expiry(parsed)
        if isinstance(parsed, Removed):
            self.pending.pop(parsed.queue_id, None)
            self._deferred.pop(parsed.queue_id, None)
        elif parsed == GARBAGE:
            self.skipped["garbage"] += 1
        elif parsed == OTHER_DAEMON:
            self.skipped["other-daemon"] += 1
        return []

    # -- counting --------------------------------------------------------------------------------------------

    def _delivery(self, delivery: Delivery) -> Outcome | None:
        if delivery.forwarded:
            return None
        status, domain = delivery.status, delivery.domain
        route = self.families.route(delivery, domain)
        self._count_domain(domain, status)
        key = f"{domain}|{route.provider}|{route.kind}"
        if status == "deferred":
            self._defer(delivery.queue_id, delivery.recipient.lower(), key)
        else:
            self._settle(delivery.queue_id, delivery.recipient.lower(), key)
        code = reply_code(delivery) if status != "sent" or delivery.reply is None else delivery.reply[:3]
        explanation = self._explain(route, delivery) if status != "sent" else None
        return self._count(route, status, delivery.stamp, code, explanation, delivery, delivery.remote_accepted)

    def _defer(self, qid: str, recipient: str, key: str) -> None:
        mine = self._deferred.setdefault(qid, {})
        if recipient in mine:
            return
        mine[recipient] = key
        pending = self.pending.setdefault(qid, Counter())
        # After a restart the stored count may already include this recipient: never count past it.
        pending[key] = max(pending[key], sum(1 for each in mine.values() if each == key))
        while len(self.pending) > MAX_PENDING:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            self._deferred.pop(oldest, None)

    def _settle(self, qid: str, recipient: str, key: str) -> None:
        pending = self.pending.get(qid)
        if pending is None or pending[key] <= 0:
            return
        mine = self._deferred.get(qid, {})
        if mine.pop(recipient, None) is None and sum(1 for each in mine.values() if each == key) >= pending[key]:
            return  # this recipient was never deferred: the pending ones are others
        pending[key] -= 1
        if pending[key] <= 0:
            del pending[key]

    def _expiry(self, expiry: Expiry) -> list[Outcome]:
        pending = self.pending.pop(expiry.queue_id, None) or Counter()
        self._deferred.pop(expiry.queue_id, None)
        found = []
        for key, count in pending.items():
            domain, provider, kind = key.split("|")
            route = Route(
                kind, provider, self.families.by_key[provider].ndr if provider in self.families.by_key else None
            )
            for _ in range(count):
                self._count_domain(domain, "expired")
                found.append(self._count(route, "expired", expiry.stamp, "expired", None, None, False))
        return found

    def _count_domain(self, domain: str, status: str) -> None:
        if not self.keep_domains:
            return
        counts = self.domains.get(domain)
        if counts is None:
            counts = self.domains[domain] = Counter()
        counts[status] += 1

    def _count(
        self,
        route: Route,
        status: str,
        stamp: str,
        code: str,
        explanation: Explanation | None,
        delivery: Delivery | None,
        accepted: bool,
    ) -> Outcome:
        provider = route.provider
        counts = self.providers.get(provider)
        if counts is None:
            counts = self.providers[provider] = Counter()
        counts[status] += 1
        day = self._day(stamp)
        if day:
            per_day = self.days.get((day, provider))
            if per_day is None:
                per_day = self.days[(day, provider)] = Counter()
            per_day[status] += 1
            if accepted:
                per_day["accepted"] += 1
        if accepted:
            counts["accepted"] += 1
        raw = delivery.line if delivery is not None else ""
        if status != "sent":
            stat = self.replies.get((provider, code))
            if stat is None:
                meaning, entry = (explanation.line(), explanation.entry_id) if explanation is not None else ("", "")
                block = explanation is not None and explanation.block
                stat = self.replies[(provider, code)] = _ReplyStat(meaning, redact(raw), block, entry)
            stat.count += 1
            if day:
                self.reply_days[(day, provider, code)] += 1
        return Outcome(provider, route.kind, status, stamp, code, explanation, raw)

    def _day(self, stamp: str) -> str:
        """The stamp's UTC day as ISO text ('' when unreadable); cached per minute of a syslog stamp (local time: the
        UTC day changes at a local hour and minute), or per whole ISO stamp."""
        key = stamp if stamp[:1].isdigit() else stamp[:12]
        cached = self._days.get(key)
        if cached is None:
            if len(self._days) > 4096:
                self._days.clear()
            day = line_day(stamp, self.today)
            cached = self._days[key] = day.isoformat() if day is not None else ""
        return cached

    def _explain(self, route: Route, delivery: Delivery) -> Explanation | None:
        text = delivery.reply or ""
        if not text:
            return None
        key = (route.provider, reply_code(delivery))
        if key not in self._explained:
            self._explained[key] = explain(text, route.ndr or delivery.relay_host or None)
        return self._explained[key]

    # -- results ---------------------------------------------------------------------------------------------

    def summaries(
        self, include_local: bool = False, since: str | None = None, until: str | None = None
    ) -> list[ProviderSummary]:
        """Per provider (local only when asked), the busiest first; `since`/`until`: ISO days, both included."""
        totals, replies = self._counts(since, until)
        found = []
        for provider, counts in totals.items():
            if provider == "local" and not include_local:
                continue
            mine = sorted(
                (self._reply(owner, code, count) for (owner, code), count in replies.items() if owner == provider),
                key=lambda reply: (-reply.count, reply.code),
            )
            found.append(
                ProviderSummary(
                    provider, self.families.name(provider), counts["sent"], counts["deferred"], counts["bounced"],
                    counts["expired"], counts["accepted"], tuple(mine),
                )
            )  # fmt: skip
        return sorted(found, key=lambda summary: (-summary.attempts, summary.provider))

    def _reply(self, provider: str, code: str, count: int) -> Reply:
        stat = self.replies.get((provider, code))
        if stat is None:
            return Reply(code, count, "", "")
        return Reply(code, count, stat.explanation, stat.line, stat.block, stat.entry)

    def _counts(self, since: str | None, until: str | None) -> tuple[dict[str, Counter[str]], Counter[tuple[str, str]]]:
        if since is None and until is None:
            return self.providers, Counter({key: stat.count for key, stat in self.replies.items()})
        totals: dict[str, Counter[str]] = {}
        first, last = since or "", until or "9999"
        for (day, provider), counts in self.days.items():
            if first <= day <= last:
                totals.setdefault(provider, Counter()).update(counts)
        per_code: Counter[tuple[str, str]] = Counter()
        for (day, provider, code), count in self.reply_days.items():
            if first <= day <= last:
                per_code[(provider, code)] += count
        return totals, per_code

    def to_json(self) -> dict[str, Any]:
        """Counts only (domains, provider keys, codes, redacted lines): what a restart needs to go on."""
        return {
            "lines": self.lines,
            "skipped": dict(self.skipped),
            "providers": {key: dict(counts) for key, counts in self.providers.items()},
            "domains": {key: dict(counts) for key, counts in self.domains.items()},
            "days": {f"{day}|{provider}": dict(counts) for (day, provider), counts in self.days.items()},
            "replies": {
                f"{provider}|{code}": {
                    "count": s.count,
                    "explanation": s.explanation,
                    "line": s.line,
                    "block": s.block,
                    "entry": s.entry,
                }
                for (provider, code), s in self.replies.items()
            },
            "reply_days": {"|".join(key): count for key, count in self.reply_days.items()},
            "pending": {qid: dict(counts) for qid, counts in self.pending.items()},
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        """Restore what `to_json` wrote (unknown or malformed parts are ignored, never fatal)."""
        self.lines = int(data.get("lines", 0))
        self.skipped = Counter({str(k): int(v) for k, v in dict(data.get("skipped", {})).items()})
        self.providers = {str(k): Counter(v) for k, v in dict(data.get("providers", {})).items()}
        self.domains = {str(k): Counter(v) for k, v in dict(data.get("domains", {})).items()}
        self.days = {}
        for key, counts in dict(data.get("days", {})).items():
            day, _, provider = str(key).partition("|")
            self.days[(day, provider)] = Counter(counts)
        self.replies = {}
        for key, value in dict(data.get("replies", {})).items():
            provider, _, code = str(key).partition("|")
            stat = _ReplyStat(
                str(value.get("explanation", "")),
                str(value.get("line", "")),
                bool(value.get("block")),
                str(value.get("entry", "")),
            )
            stat.count = int(value.get("count", 0))
            self.replies[(provider, code)] = stat
        self.reply_days = Counter()
        for key, count in dict(data.get("reply_days", {})).items():
            parts = str(key).split("|", 2)
            if len(parts) == 3:
                self.reply_days[(parts[0], parts[1], parts[2])] = int(count)
        self.pending = {str(qid): Counter(counts) for qid, counts in dict(data.get("pending", {})).items()}

    def prune_days(self, keep_since: date) -> None:
        """Forget per-day counts older than `keep_since` (the live state keeps a few weeks)."""
        cutoff = keep_since.isoformat()
        self.days = {key: counts for key, counts in self.days.items() if key[0] >= cutoff}
        self.reply_days = Counter({key: n for key, n in self.reply_days.items() if key[0] >= cutoff})
