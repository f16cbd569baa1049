"""The event ledger: one append-only record of everything that happens in the container."""
