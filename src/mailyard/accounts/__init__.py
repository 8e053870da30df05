"""Domains, users, password hashes, aliases and quotas (SQLite under data_dir).

`AccountStore.open(settings)`; see `store.py` for how recipients resolve.
"""

from mailyard.accounts.addresses import AddressError, normalize_address, normalize_domain
from mailyard.accounts.store import AccountError, AccountStore, Alias, User, parse_size

__all__ = ["AccountError", "AccountStore", "AddressError", "Alias", "User",
           "normalize_address", "normalize_domain", "parse_size"]
