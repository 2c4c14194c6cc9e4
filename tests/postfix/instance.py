"""A private Postfix instance for one test module: its own config, queue and data directories
under a temporary folder, an smtpd on a free loopback port, started with ``postfix -c DIR start``
and stopped after. Debian's postfix package (installed by .ci/run) provides the programs; the
system instance's configuration is never read or touched.

Mail for the relay domains goes, by ``transport_maps``, to loopback servers of the test (the
project's SMTP sink for readers, a ``BounceReceiver`` for the VERP bounce domain), so every DSN
Postfix writes comes back to the service exactly as it would in production.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.servers import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"

# The services a relay needs; chroot off (nothing to copy into the queue directory).
MASTER_CF = """\
{port_line}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_version() -> str | None:
    """Postfix's mail_version, or None when Debian's postfix is not installed (or we are not root)."""
    if not os.path.exists(POSTFIX) or os.geteuid() != 0:
        return None
    try:
        out = subprocess.run(
            [POSTCONF, "-d", "mail_version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"=\s*(\S+)", out)
    return match.group(1) if match else None


class PrivatePostfix:
    """One Postfix instance; ``configure`` then ``start``; ``stop`` when done."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.maillog = root / "maillog"
        self.port = free_port()
        self.running = False
        for d in (self.config_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        # Postfix insists that its data directory belongs to mail_owner.
        shutil.chown(self.data_dir, user="postfix", group="postfix")

    def configure(
        self,
        main: Mapping[str, str],
        *,
        smtpd_options: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        """Write main.cf (``main`` over the relay basics) and master.cf;
        ``files`` go into the config directory."""
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "meta_directory": "/etc/postfix",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": "relay.test",
            "mydomain": "relay.test",
            "myorigin": "relay.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "smtputf8_enable": "yes",
            "notify_classes": "",
            "default_destination_concurrency_limit": "4",
        }
        settings.update(main)
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8"
        )
        options = "".join(f"\n  -o {k}={v}" for k, v in (smtpd_options or {}).items())
        port_line = f"127.0.0.1:{self.port} inet n - n - - smtpd{options}"
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(port_line=port_line), encoding="utf-8")
        for name, text in (files or {}).items():
            (self.config_dir / name).write_text(text, encoding="utf-8")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def start(self) -> None:
        result = self._run("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"postfix would not start: {result.stderr.strip()} {self.log()[-2000:]}")
        self.running = True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not answer on 127.0.0.1:{self.port}: {self.log()[-2000:]}")

    def reload(self) -> None:
        self._run("reload")

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now."""
        subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-f"], capture_output=True, timeout=30, check=False
        )

    def queue_size(self) -> int:
        out = subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        return len([line for line in out.splitlines() if line.strip()])

    def stop(self) -> None:
        if self.running:
            self._run("stop", check=False)
            self.running = False

    def log(self) -> str:
        return self.maillog.read_text(encoding="utf-8", errors="replace") if self.maillog.exists() else ""
