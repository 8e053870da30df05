"""The content filter (the AMaViS stage): scan, tag, quarantine, reinject.

`service.py` is the SMTP listener and the two-phase hand-off; `worker.py` runs both engines
in the process pool; `policy.py` decides per recipient; `headers.py` rewrites headers;
`quarantine.py` keeps what was not delivered.
"""
