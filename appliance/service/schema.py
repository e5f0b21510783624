"""Versioned schema steps for the tables a service module adds to the daemon's database.

The meetings tables (store.py) are created as they are; each module that adds tables of its own
(tokens, API transcriptions) names itself a part and lists its steps, and every step runs once,
in order, in its own transaction, so a database made by an older version is brought up to date.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.store import Database, StoreError


def migrate(db: Database, part: str, steps: Sequence[str]) -> None:
    """Run the steps of `part` that this database has not had yet."""
    db.db.execute(
        "CREATE TABLE IF NOT EXISTS schema_parts (part TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    with db.tx() as tx:
        row = tx.execute("SELECT version FROM schema_parts WHERE part = ?", (part,)).fetchone()
        version = row[0] if row else 0
        if version > len(steps):
            raise StoreError(
                f"{db.path}: the {part} tables are at version {version}, newer than this "
                f"program knows ({len(steps)}); upgrade the appliance"
            )
        for step in steps[version:]:
            for statement in step.split(";"):
                if statement.strip():
                    tx.execute(statement)
        tx.execute(
            "INSERT INTO schema_parts (part, version) VALUES (?, ?) "
            "ON CONFLICT(part) DO UPDATE SET version = excluded.version",
            (part, len(steps)),
        )
