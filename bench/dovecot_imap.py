"""A private Debian Dovecot IMAP instance on a loopback port, for side-by-side benchmarks.

    with dovecot_imap(workdir, maildir_to_copy, "bench@example.test", "benchpass") as port:
        ...   # IMAP on 127.0.0.1:port, serving a copy of the Maildir

Config modelled on ../shared/bench/seedstack/setup.sh (passwd-file auth with PLAIN passwords,
mail owned by the `vmail` user when it exists, else root). Dovecot's own index files are
built at first SELECT, as they would be for a mailbox copied in. Stopped with
`doveadm -c CONF stop` (and by PID if that fails). Needs root (it runs the master process).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import free_port, wait_for_port

CONF = """\
instance_name = benchimap{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 20000
default_client_limit = 20000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
  default_fields = uid={uid} gid={gid} home={root}/home
}}
namespace inbox {{
  inbox = yes
  separator = .
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = 500
}}
service imap {{
  process_limit = 4000
}}
service anvil {{
  client_limit = 20000
}}
service stats {{
  client_limit = 20000
}}
"""


@contextlib.contextmanager
def dovecot_imap(root: Path, maildir: Path, user: str, password: str):
    """Yield the port of a running private Dovecot serving a copy of `maildir` for `user`."""
    root.mkdir(parents=True, exist_ok=True)
    # Dovecot's auth and mail processes run as unprivileged users: they must traverse the
    # (private, 0700) temp dirs above `root`.
    for parent in (root, *root.parents):
        if parent == Path(tempfile.gettempdir()) or parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(exist_ok=True)
    shutil.copytree(maildir, root / "home" / "Maildir",
                    ignore=shutil.ignore_patterns("mailyard-*"))
    try:
        owner = pwd.getpwnam("vmail")
        uid, gid = owner.pw_uid, owner.pw_gid
    except KeyError:
        uid, gid = 0, 0
    for dirpath, _dirs, files in os.walk(root / "home"):
        os.chown(dirpath, uid, gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), uid, gid)
    (root / "users").write_text(f"{user}:{{PLAIN}}{password}::::::\n")
    os.chmod(root / "users", 0o644)
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(CONF.format(root=root, port=port, uid=uid, gid=gid))
    subprocess.run(["dovecot", "-c", str(conf)], check=True, stdin=subprocess.DEVNULL)
    pid_file = root / "run" / "master.pid"
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
        subprocess.run(["doveadm", "-c", str(conf), "stop"], check=False, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
