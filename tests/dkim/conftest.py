"""A real authoritative DNS server on loopback for the DKIM and DNS tests (Debian's nsd).

``dns_zone(records)`` writes a zone for example.com (and any other origin named in the
records) into tmp_path, starts ``nsd -d`` on a free loopback port and returns "127.0.0.1:PORT";
the server is stopped after the test. Records are (owner, type, value) with owner relative to
the zone or absolute with a final dot; TXT values longer than 255 octets are split into strings
as a zone file needs. Tests skip, saying so, only where nsd is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from newsletter.delivery.dkim_keys import DkimKey, generate_key
from tests.servers import free_port

NSD = shutil.which("nsd") or ("/usr/sbin/nsd" if Path("/usr/sbin/nsd").exists() else None)
Record = tuple[str, str, str]


def zone_value(rtype: str, value: str) -> str:
    if rtype != "TXT":
        return value
    return " ".join(
        '"' + value[i : i + 255].replace('"', '\\"') + '"' for i in range(0, max(len(value), 1), 255)
    )


def write_zone(path: Path, origin: str, records: Sequence[Record]) -> None:
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 60",
        f"@ IN SOA ns1.{origin}. hostmaster.{origin}. 1 3600 600 86400 60",
        f"@ IN NS ns1.{origin}.",
        "ns1 IN A 127.0.0.1",
    ]
    lines += [f"{owner} IN {rtype} {zone_value(rtype, value)}" for owner, rtype, value in records]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


@pytest.fixture
def dns_zone(tmp_path: Path) -> Iterator[Callable[[Sequence[Record]], str]]:
    if NSD is None:
        pytest.skip("Debian's nsd is not installed (apt-get install nsd; .ci/run installs it)")
    started: list[subprocess.Popen[bytes]] = []
    count = [0]

    def start(records: Sequence[Record], origin: str = "example.com") -> str:
        count[0] += 1
        work = tmp_path / f"nsd{count[0]}"
        work.mkdir()
        write_zone(work / "zone", origin, records)
        port = free_port(udp=True)
        (work / "nsd.conf").write_text(
            "server:\n"
            f"  ip-address: 127.0.0.1@{port}\n"
            '  username: ""\n  chroot: ""\n  database: ""\n'
            f'  zonesdir: "{work}"\n  pidfile: "{work}/nsd.pid"\n  logfile: "{work}/nsd.log"\n'
            f'  xfrdfile: "{work}/xfrd.state"\n  zonelistfile: "{work}/zone.list"\n'
            "  server-count: 1\n  verbosity: 1\n"
            "remote-control:\n  control-enable: no\n"
            f'zone:\n  name: {origin}\n  zonefile: "{work}/zone"\n',
            encoding="ascii",
        )
        proc = subprocess.Popen(
            [str(NSD), "-d", "-c", str(work / "nsd.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        _wait_answering(port, origin, proc, work)
        return f"127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_answering(port: int, origin: str, proc: subprocess.Popen[bytes], work: Path) -> None:
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], port
    resolver.timeout = resolver.lifetime = 0.5
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (work / "nsd.log").read_text() if (work / "nsd.log").exists() else ""
            raise RuntimeError(f"nsd exited with {proc.returncode}: {log[-800:]}")
        try:
            resolver.resolve(origin, "SOA")
            return
        except dns.exception.DNSException:
            time.sleep(0.1)
    raise RuntimeError(f"nsd on port {port} did not answer within 20 s")


@pytest.fixture(scope="session")
def ed_key() -> DkimKey:
    return DkimKey("ed2026", generate_key("ed25519"))


@pytest.fixture(scope="session")
def rsa_key() -> DkimKey:
    return DkimKey("rsa2026", generate_key("rsa"))
