"""The work layer's board: tasks, runs and events on SQLite or PostgreSQL.

Nothing on the CLI's fast path imports this package (sqlite3, psycopg, dataclasses).
Start at `store.open_store`.
"""
