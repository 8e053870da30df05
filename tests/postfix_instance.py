"""A private Debian Postfix instance on loopback, for interoperability tests and benchmarks.

Own config directory, queue and data directory under a fresh temp dir (0755: Postfix's
unprivileged daemons must reach it), its smtpd on a free 127.0.0.1 port, log in
`ROOT/postfix.log`. Needs root and the `postfix` package (`make test` installs it).

    with PostfixInstance(main_extra="relayhost = [127.0.0.1]:2525\\n") as postfix:
        smtplib.SMTP("127.0.0.1", postfix.port)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from harness import free_port, wait_for_port

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
alias_maps =
alias_database =
local_transport = error:no local delivery
smtputf8_enable = no
smtp_host_lookup = native
lmtp_host_lookup = native
"""


def available() -> bool:
    return shutil.which("postfix") is not None and os.geteuid() == 0


class PostfixInstance:
    """Start with `start()` (or as a context manager); `main_extra`/`master_extra` are
    appended to main.cf/master.cf and may use `{root}`; `files` are written to ROOT/etc."""

    def __init__(self, main_extra: str = "", master_extra: str = "",
                 files: dict[str, str] | None = None, prefix: str = "mailyard-postfix-"):
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(self.root, 0o755)
        for sub in ("etc", "spool", "data"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", "postfix", "postfix")
        self.etc = self.root / "etc"
        self.port = free_port()
        self.main_extra, self.master_extra = main_extra, master_extra
        self.files = dict(files or {})

    def start(self, timeout: float = 30.0) -> Self:
        for name, text in self.files.items():
            (self.etc / name).write_text(text)
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port)
                                            + self.master_extra.format(root=self.root))
        (self.etc / "main.cf").write_text(MAIN_CF.format(root=self.root)
                                          + self.main_extra.format(root=self.root))
        check = subprocess.run(["postfix", "-c", str(self.etc), "check"], check=False, capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stderr}")
        started = subprocess.run(["postfix", "-c", str(self.etc), "start"], check=False,
                                 capture_output=True, text=True)
        if started.returncode != 0:
            raise RuntimeError(f"postfix did not start: {started.stderr}")
        wait_for_port("127.0.0.1", self.port, timeout)
        return self

    def log_text(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False,
                       capture_output=True)
        time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
