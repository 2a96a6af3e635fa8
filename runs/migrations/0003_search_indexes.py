"""Indexes for the run history's search and the run page's polling, on PostgreSQL only.

- Trigram GIN indexes over ``UPPER(params::text)`` and ``UPPER(idempotency_key::text)``:
  the expressions ``params_text__icontains`` / ``idempotency_key__icontains`` compile to
  (``UPPER(...) LIKE UPPER('%term%')``), so a search of 100,000 runs reads the index
  instead of every row's JSON.
- ``runs_runevent (run_id, id)``: the newest events of a run, and the events after the
  one a polling page last saw, without sorting all of the run's events.

Elsewhere (SQLite) this migration does nothing: the indexes are not part of the
models' state, so ``makemigrations`` never sees them.
"""

from __future__ import annotations

from django.db import migrations

CREATE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS run_params_trgm ON runs_run "
    "USING gin ((UPPER((params)::text)) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS run_key_trgm ON runs_run "
    "USING gin ((UPPER((idempotency_key)::text)) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS runevent_run_id_id ON runs_runevent (run_id, id)",
]
DROP = [
    "DROP INDEX IF EXISTS runevent_run_id_id",
    "DROP INDEX IF EXISTS run_key_trgm",
    "DROP INDEX IF EXISTS run_params_trgm",
]


def _run(statements: list[str]):  # type: ignore[no-untyped-def]
    def apply(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("runs", "0002_api_token")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP), elidable=False)]
