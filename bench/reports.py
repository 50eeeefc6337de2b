"""DMARC aggregate report parsing: repbot's checks.reports against parsedmarc, on the same files, in one run.

1. The real 2,286-record report of parsedmarc's samples (909 KB of XML, tests/data/reports): the best of
   `--repeat` parses, CPU time, for each tool.
2. A backfill: `--files` reports written to a temporary folder, shaped like the real ones (Google zip,
   Microsoft plain XML, Yahoo and Fastmail gzip, 1 to 40 records each), read as a stream into the SQLite
   store with progress in the log; its wall time, the peak RSS
   before and after (it must not grow with the number of files), and parsedmarc's time on
   the same files (offline, no DNS, local files only).

Both tools must count the same records; the figure that matters is the ratio. Run: python bench/reports.py
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import random
import resource
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from checks.reports import DmarcReport, read_bytes, read_paths  # noqa: E402
from checks.reports.model import Report  # noqa: E402
from checks.reports.store import ReportStore  # noqa: E402

BATCH = 200  # reports per store transaction, as `repbot reports --record` would commit a file at a time
LARGE = ROOT / "tests/data/reports/parsedmarc/samples/aggregate/!large-example.com!1711897200!1711983600.xml"
SHAPES = (
    ("google.com", "noreply-dmarc-support@google.com", "zip"),
    ("Outlook.com", "dmarcreport@microsoft.com", "xml"),
    ("Yahoo", "dmarchelp@yahooinc.com", "gz"),
    ("FastMail Pty Ltd", "dmarc@fastmail.com", "gz"),
)


def _report(number: int, rng: random.Random) -> tuple[str, bytes, int]:
    org, email, wrap = SHAPES[number % len(SHAPES)]
    begin = 1764547200 - 86400 * (number // len(SHAPES) % 365)
    records = rng.randint(1, 40)
    body = "".join(
        f"<record><row><source_ip>198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}</source_ip><count>"
        f"{rng.randint(1, 500)}</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim>"
        f"<spf>{rng.choice(('pass', 'fail'))}</spf></policy_evaluated></row><identifiers><header_from>example.org"
        f"</header_from></identifiers><auth_results><dkim><domain>example.org</domain><selector>s1</selector>"
        f"<result>pass</result></dkim><spf><domain>example.org</domain><result>pass</result></spf></auth_results>"
        f"</record>"
        for _ in range(records)
    )
    xml = (
        f'<?xml version="1.0" encoding="UTF-8" ?><feedback><version>1.0</version><report_metadata><org_name>{org}'
        f"</org_name><email>{email}</email><report_id>bench-{number}</report_id><date_range><begin>{begin}</begin>"
        f"<end>{begin + 86399}</end></date_range></report_metadata><policy_published><domain>example.org</domain>"
        f"<adkim>r</adkim><aspf>r</aspf><p>quarantine</p><sp>quarantine</sp><pct>100</pct></policy_published>"
        f"{body}</feedback>"
    ).encode()
    name = f"{org.split()[0].lower()}!example.org!{begin}!{begin + 86399}!{number}.xml"
    if wrap == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, xml)
        return name + ".zip", buffer.getvalue(), records
    if wrap == "gz":
        return name + ".gz", gzip.compress(xml), records
    return name, xml, records


def _best(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        started = time.process_time()
        count = run()
        times.append(time.process_time() - started)
    return min(times), count


def _parsedmarc() -> Callable[[Path], int] | None:
    try:
        import parsedmarc
    except ImportError:
        return None
    logging.getLogger("parsedmarc").setLevel(logging.CRITICAL)

    def parse(path: Path) -> int:
        parsed = parsedmarc.parse_report_file(str(path), offline=True, always_use_local_files=True)
        return len(parsed["report"]["records"])

    return parse


def large(repeat: int, peer: Callable[[Path], int] | None) -> None:
    data = LARGE.read_bytes()
    ours, ours_records = _best(repeat, lambda: len(read_bytes(data, str(LARGE)).reports[0].records))
    print(f"large report: {len(data) / 1024:.0f} KB, {ours_records} records")
    print(f"  repbot     {ours * 1000:8.1f} ms CPU (best of {repeat})")
    if peer is not None:
        theirs, their_records = _best(repeat, lambda: peer(LARGE))
        same = "same record count" if their_records == ours_records else f"DIFFERENT: {their_records}"
        print(f"  parsedmarc {theirs * 1000:8.1f} ms CPU (best of {repeat}); {same}")
        print(f"  ratio      {theirs / ours:8.1f}x faster")


def backfill(files: int, peer_files: int, store_them: bool = True) -> None:
    rng = random.Random(14)
    with tempfile.TemporaryDirectory(prefix="repbot-bench-") as folder:
        written = 0
        for number in range(files):
            name, data, records = _report(number, rng)
            (Path(folder) / name).write_bytes(data)
            written += records
        store = ReportStore(Path(folder) / "state" / "reports.sqlite3")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started, cpu = time.perf_counter(), time.process_time()
        reports = records = 0
        batch: list[Report] = []
        for extracted in read_paths([folder]):
            for report in extracted.reports:
                reports += 1
                records += len(report.records)  # type: ignore[union-attr]
            batch += extracted.reports if store_them else []
            if len(batch) >= BATCH:
                store.add_many(batch)
                batch = []
        store.add_many(batch)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"backfill: {files} files, {written} records written")
        print(
            f"  repbot     {wall:8.2f} s wall, {cpu:.2f} s CPU, {reports} reports, {records} records read"
            + (", stored" if store_them else "")
        )
        rss = f"peak RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after"
        print(f"             {reports / wall:.0f} reports/s; {rss}")
        peer = _parsedmarc()  # imported only now, so that the RSS above is repbot's alone
        if peer is not None and peer_files:
            compare(sorted(p for p in Path(folder).iterdir() if p.is_file())[:peer_files], peer)


def _records(path: Path) -> int:
    return sum(len(r.records) for r in read_bytes(path.read_bytes(), str(path)).reports if isinstance(r, DmarcReport))


def compare(sample: list[Path], peer: Callable[[Path], int]) -> None:
    ours, ours_count = _best(1, lambda: sum(_records(p) for p in sample))
    theirs, their_count = _best(1, lambda: sum(peer(p) for p in sample))
    same = "same record count" if their_count == ours_count else f"DIFFERENT: {their_count} vs {ours_count}"
    print(f"  the same {len(sample)} files, parsing only: repbot {ours:.2f} s CPU, parsedmarc {theirs:.2f} s CPU")
    print(f"  {same} ({ours_count}); ratio {theirs / ours:.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="reports in the backfill (default 10000)")
    parser.add_argument("--peer-files", type=int, default=10_000, help="of those, how many parsedmarc reads too")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-store", action="store_true", help="read the backfill without storing it (memory)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (tests/test_bench_smoke.py)")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.peer_files, args.repeat = 40, 8, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("parsedmarc").setLevel(logging.CRITICAL)
    backfill(args.files, args.peer_files, not args.no_store)
    peer = _parsedmarc()
    if peer is None:
        print("parsedmarc is not installed (pip install parsedmarc): repbot's figures only")
    large(args.repeat, peer)


if __name__ == "__main__":
    main()
