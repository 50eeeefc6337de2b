"""`repbot check DOMAIN` against checkdmarc, on the same local servers, in the same run.

The domain has a realistic setup: SPF with 3 nested includes, 2 MX with STARTTLS, DMARC, 2 DKIM
selectors, MTA-STS and TLS-RPT. A local DNS server (another process) delays every answer by `--delay`,
so the wall time is dominated by how many look-ups wait on each other. Both tools run as whole processes,
start-up included, with the DNS server at 127.0.0.2:53 (checkdmarc cannot take a port), HTTPS on
127.0.0.1:443 and SMTP on 127.0.0.1:25 and 127.0.0.3:25: run it as root.

The critical path (look-ups that must wait for each other) is 4 deep: the SPF include chain
(TXT, include, include, include) and MX -> A -> PTR -> A (forward-confirmed reverse DNS).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PATH = os.environ.get("PATH", "")
DOMAIN = "bench-mail.org"
DNS_HOST = "127.0.0.2"
CRITICAL_PATH_DEPTH = 4


def dkim_key() -> str:
    """A real 2048-bit public key in DKIM's p= form."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def zone(policy_ip: str) -> dict[str, object]:
    key = dkim_key()

    def txt(text: str) -> str:
        # DNS TXT strings hold 255 bytes at most: longer values (the DKIM key) go in several strings.
        return " ".join('"' + text[i : i + 255] + '"' for i in range(0, len(text), 255))

    records = [
        [DOMAIN, "TXT", txt(f"v=spf1 include:_spf1.{DOMAIN} -all")],
        [f"_spf1.{DOMAIN}", "TXT", txt(f"v=spf1 ip4:192.0.2.0/28 include:_spf2.{DOMAIN} -all")],
        [f"_spf2.{DOMAIN}", "TXT", txt(f"v=spf1 ip4:198.51.100.0/28 include:_spf3.{DOMAIN} -all")],
        [f"_spf3.{DOMAIN}", "TXT", txt("v=spf1 ip4:203.0.113.0/28 ip6:2001:db8::/64 -all")],
        [DOMAIN, "MX", f"10 mx1.{DOMAIN}."],
        [DOMAIN, "MX", f"20 mx2.{DOMAIN}."],
        [DOMAIN, "A", policy_ip],
        [DOMAIN, "NS", f"ns1.{DOMAIN}."],
        [DOMAIN, "SOA", f"ns1.{DOMAIN}. hostmaster.{DOMAIN}. 2026112801 3600 600 86400 300"],
        [f"ns1.{DOMAIN}", "A", "127.0.0.2"],
        [f"mx1.{DOMAIN}", "A", "127.0.0.1"],
        [f"mx2.{DOMAIN}", "A", "127.0.0.3"],
        ["1.0.0.127.in-addr.arpa", "PTR", f"mx1.{DOMAIN}."],
        ["3.0.0.127.in-addr.arpa", "PTR", f"mx2.{DOMAIN}."],
        [f"_dmarc.{DOMAIN}", "TXT", txt(f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}; adkim=s")],
        [f"s1._domainkey.{DOMAIN}", "TXT", txt(f"v=DKIM1; k=rsa; p={key}")],
        [f"s2._domainkey.{DOMAIN}", "TXT", txt(f"v=DKIM1; k=rsa; p={key}")],
        [f"_mta-sts.{DOMAIN}", "TXT", txt("v=STSv1; id=2026112801")],
        [f"mta-sts.{DOMAIN}", "A", policy_ip],
        [f"_smtp._tls.{DOMAIN}", "TXT", txt(f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}")],
        # The blocklists' test points, so the domain lists count as healthy.
        ["dbltest.com.dbl.spamhaus.org", "A", "127.0.1.2"],
        ["test.surbl.org.multi.surbl.org", "A", "127.0.0.2"],
        ["test.uribl.com.multi.uribl.com", "A", "127.0.0.2"],
    ]
    return {"records": records}


POLICY = f"version: STSv1\nmode: enforce\nmx: mx1.{DOMAIN}\nmx: mx2.{DOMAIN}\nmax_age: 604800\n".encode()


class _PolicyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(POLICY)))
        self.end_headers()
        self.wfile.write(POLICY)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def dns_server(delay: float, workdir: Path) -> Iterator[None]:
    zone_file = workdir / "zone.json"
    zone_file.write_text(json.dumps(zone("127.0.0.1")))
    command = [sys.executable, "-m", "tests.fixtures.dnsserver", "--host", DNS_HOST, "--port", "53"]
    command += ["--delay", str(delay), "--zone", str(zone_file)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"the DNS server did not start: {line!r}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def mail_servers(ca: trustme.CA) -> Iterator[None]:
    cert = ca.issue_cert(f"mx1.{DOMAIN}", f"mx2.{DOMAIN}", f"mta-sts.{DOMAIN}")
    smtp_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(smtp_context)
    controllers = []
    for host, name in (("127.0.0.1", "mx1"), ("127.0.0.3", "mx2")):
        controller = Controller(
            object(), hostname=host, port=25, server_hostname=f"{name}.{DOMAIN}", tls_context=smtp_context
        )
        controller.start()
        controllers.append(controller)
    https_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(https_context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 443), _PolicyHandler)
    server.socket = https_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        for controller in controllers:
            controller.stop()


def timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return time.perf_counter() - started, done


def run(delay: float, rounds: int) -> None:
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ca_file = workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        config = workdir / "repbot.toml"
        config.write_text(f'[domains."{DOMAIN}"]\ndkim_selectors = ["s1", "s2"]\n')
        env = dict(os.environ, SSL_CERT_FILE=str(ca_file), REQUESTS_CA_BUNDLE=str(ca_file))
        ours = [sys.executable, "-m", "bot", "check", DOMAIN, "--nameserver", f"{DNS_HOST}:53", "-c", str(config)]
        ours += ["--json", "--timeout", "5"]
        # Beside this interpreter first: a venv's scripts are not on PATH unless it is activated.
        checkdmarc = shutil.which("checkdmarc", path=os.pathsep.join([str(Path(sys.executable).parent), PATH]))
        if checkdmarc is None:
            raise SystemExit("checkdmarc is not installed: pip install -e '.[bench]'")
        theirs = [checkdmarc, DOMAIN, "--nameserver", DNS_HOST, "--check-mx-tls", "--timeout", "5"]
        with dns_server(delay, workdir), mail_servers(ca):
            timed(ours, env)  # warm the page cache for both interpreters before timing
            timed(theirs, env)
            our_times, their_times = [], []
            for _ in range(rounds):
                seconds, done = timed(ours, env)
                our_times.append(seconds)
                seconds, _ = timed(theirs, env)
                their_times.append(seconds)
            findings = json.loads(done.stdout)["targets"][0]["findings"]
    report(delay, our_times, their_times, findings)


def report(delay: float, our_times: list[float], their_times: list[float], findings: list[dict[str, str]]) -> None:
    ours, theirs = statistics.median(our_times), statistics.median(their_times)
    bound = CRITICAL_PATH_DEPTH * delay
    print(f"domain check of {DOMAIN}, DNS delay {delay * 1000:.0f} ms per answer, median of {len(our_times)} runs")
    print(f"  repbot check : {ours:6.3f} s wall ({len(findings)} findings, whole process)")
    print(f"  checkdmarc   : {theirs:6.3f} s wall (whole process, --check-mx-tls)")
    print(f"  checkdmarc / repbot       = {theirs / ours:5.1f}x  (target >= 5x)")
    print(f"  critical path bound       = {CRITICAL_PATH_DEPTH} x {delay * 1000:.0f} ms = {bound:.3f} s")
    print(f"  repbot / bound            = {ours / bound:5.2f}x  (target <= 1.5x)")
    statuses: dict[str, int] = {}
    for finding in findings:
        statuses[finding["status"]] = statuses.get(finding["status"], 0) + 1
    print(f"  repbot statuses: {statuses}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="seconds added to every DNS answer (default 0.2)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each tool (default 5)")
    parser.add_argument("--smoke", action="store_true", help="one quick round, for CI")
    args = parser.parse_args()
    run(args.delay, 1 if args.smoke else args.rounds)


if __name__ == "__main__":
    main()
