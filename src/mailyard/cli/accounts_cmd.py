"""`mailyard domain|user|alias` — filled in by the accounts package."""

COMMANDS: list = []
