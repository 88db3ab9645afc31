"""PostgreSQL: executions and execution_logs partitioned by month (seed 004 section 4).

Ids are UUIDv7, which start with their creation time in milliseconds, so a month is a range of
ids: ``executions`` is partitioned by RANGE on ``id`` itself, ``execution_logs`` by RANGE on
``execution_id`` (a log line lives in the partition of its execution's month, so an execution's
logs are one partition and go with it). The primary key of executions stays ``(id)`` and every
foreign key to ``executions(id)`` stays valid (PostgreSQL 12+); execution_logs, which nothing
references, gets the primary key ``(id, execution_id)`` that partitioning requires. Each table
has a DEFAULT partition for ids outside the months that exist (ids made elsewhere);
``turbocat doctor`` reports rows there.

A unique index on a partitioned table must contain the partition key, which the idempotency key
``(organization_id, workflow_id, idempotency_key)`` cannot: its uniqueness moves to the table
``execution_idempotency_keys`` (primary key on those three columns), filled by an AFTER INSERT
trigger on executions in the inserting transaction. A duplicate insert fails with a unique
violation as before (a concurrent one waits for the first transaction, as the unique index made
it do), so ``services.executions.launch`` needs no change. Executions keep a plain index on the
three columns for the look-up.

The functions ``turbocat_create_partitions`` and ``turbocat_drop_partition`` (SECURITY DEFINER,
owned by the migration role) let the scheduler, which runs as the application role, create
months ahead and let retention drop old ones; ``db.partitions`` calls them. The migration
creates the months of the existing rows up to three months ahead and copies the rows over.

SQLite keeps plain tables (nothing changes there).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONED = (("executions", "id"), ("execution_logs", "execution_id"))
AHEAD_MONTHS = 3
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

UNIQUE_KEY = (
    "CREATE UNIQUE INDEX uq_executions_idempotency_key ON public.executions USING btree "
    "(organization_id, workflow_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)"
)
PLAIN_KEY = (
    "CREATE INDEX ix_executions_idempotency_key ON public.executions USING btree "
    "(organization_id, workflow_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)"
)

FUNCTIONS = r"""
CREATE FUNCTION turbocat_month_id(p_month timestamp) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT (lpad(to_hex((extract(epoch FROM p_month) * 1000)::bigint), 12, '0')
          || '00000000000000000000')::uuid
$$;

CREATE FUNCTION turbocat_create_partitions(p_first timestamptz, p_last timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET lock_timeout = '5s' AS $$
DECLARE
  m timestamp := date_trunc('month', p_first AT TIME ZONE 'UTC');
  last_month timestamp := date_trunc('month', p_last AT TIME ZONE 'UTC');
  parent text;
  key text;
  part text;
  lo uuid;
  hi uuid;
  clash boolean;
BEGIN
  -- One creator at a time, whatever the number of schedulers (the lock ends with the
  -- transaction).
  PERFORM pg_advisory_xact_lock(7312086642170339921);
  WHILE m <= last_month LOOP
    lo := turbocat_month_id(m);
    hi := turbocat_month_id(m + interval '1 month');
    FOREACH parent IN ARRAY ARRAY['executions', 'execution_logs'] LOOP
      key := CASE parent WHEN 'executions' THEN 'id' ELSE 'execution_id' END;
      part := parent || '_p' || to_char(m, 'YYYY_MM');
      IF to_regclass(part) IS NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                       parent || '_default', key, key)
          INTO clash USING lo, hi;
        IF clash THEN
          -- Rows of that month sit in the DEFAULT partition (made with explicit ids): the
          -- month cannot be created over them; doctor reports them.
          RAISE WARNING 'partition % not created: its rows are in %_default', part, parent;
        ELSE
          EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                         part, parent, lo, hi);
          RETURN NEXT part;
        END IF;
      END IF;
    END LOOP;
    m := m + interval '1 month';
  END LOOP;
END
$$;

CREATE FUNCTION turbocat_drop_partition(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET lock_timeout = '5s' AS $$
DECLARE
  parent text;
  related text;
  locked boolean := false;
BEGIN
  SELECT i.inhparent::regclass::text INTO parent
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
   WHERE c.oid = to_regclass(p_name)
     AND i.inhparent IN (to_regclass('executions'), to_regclass('execution_logs'));
  IF parent IS NULL OR p_name !~ '^(executions|execution_logs)_p[0-9]{4}_[0-9]{2}$' THEN
    RAISE EXCEPTION 'not a monthly partition of executions or execution_logs: %', p_name;
  END IF;
  IF parent = 'executions' THEN
    -- What ON DELETE CASCADE would do, which dropping a partition does not.
    EXECUTE format('DELETE FROM execution_idempotency_keys k USING %I e'
                   ' WHERE k.execution_id = e.id', p_name);
  END IF;
  -- DETACH and DROP lock, one after the other, the parent and every table a foreign key links
  -- to it (organizations, workflows, step_runs, ...). Waiting for each in turn would deadlock
  -- with a transaction reading them in another order, so take them all at once without
  -- waiting, and try again shortly while any is in use (about 10 s, then give up).
  SELECT string_agg(format('%s', rel::regclass), ', ' ORDER BY rel) INTO related FROM (
    SELECT to_regclass(parent)::oid AS rel
    UNION SELECT confrelid FROM pg_constraint
     WHERE conrelid = to_regclass(parent) AND contype = 'f' AND conparentid = 0
    UNION SELECT conrelid FROM pg_constraint
     WHERE confrelid = to_regclass(parent) AND contype = 'f' AND conparentid = 0
  ) AS r;
  FOR attempt IN 1..200 LOOP
    BEGIN
      EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', related);
      locked := true;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      PERFORM pg_sleep(0.05);
    END;
  END LOOP;
  IF NOT locked THEN
    RAISE EXCEPTION 'tables in use: could not lock % to drop %', related, p_name
      USING ERRCODE = 'lock_not_available';
  END IF;
  EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, p_name);
  EXECUTE format('DROP TABLE %I', p_name);
END
$$;

CREATE FUNCTION turbocat_record_idempotency_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO execution_idempotency_keys (organization_id, workflow_id, idempotency_key,
                                          execution_id)
  VALUES (NEW.organization_id, NEW.workflow_id, NEW.idempotency_key, NEW.id);
  RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    role = _app_role()
    for function in FUNCTIONS.split("\n\nCREATE FUNCTION"):
        function = function.strip()
        op.execute(function if function.startswith("CREATE") else "CREATE FUNCTION " + function)
    for name in ("turbocat_create_partitions(timestamptz, timestamptz)",
                 "turbocat_drop_partition(text)", "turbocat_record_idempotency_key()"):  # fmt: skip
        op.execute(f"REVOKE ALL ON FUNCTION {name} FROM PUBLIC")
    for name in ("turbocat_create_partitions(timestamptz, timestamptz)",
                 "turbocat_drop_partition(text)"):  # fmt: skip
        op.execute(f'GRANT EXECUTE ON FUNCTION {name} TO "{role}"')
    first = _first_month()
    saved = {table: _rebuild(table, key) for table, key in PARTITIONED}
    now = dt.datetime.now(dt.UTC)
    op.execute(
        text("SELECT count(*) FROM turbocat_create_partitions(:first, :last)").bindparams(
            first=min(first, now), last=now + dt.timedelta(days=31 * AHEAD_MONTHS)
        )
    )
    for table, _key in PARTITIONED:
        _refill(table, saved[table], {UNIQUE_KEY: PLAIN_KEY})
    op.execute(
        """
        CREATE TABLE execution_idempotency_keys (
          organization_id uuid NOT NULL,
          workflow_id uuid NOT NULL,
          idempotency_key varchar(255) NOT NULL,
          execution_id uuid NOT NULL,
          CONSTRAINT pk_execution_idempotency_keys
            PRIMARY KEY (organization_id, workflow_id, idempotency_key),
          CONSTRAINT fk_execution_idempotency_keys_execution_id_executions
            FOREIGN KEY (execution_id) REFERENCES executions (id)
            ON DELETE CASCADE ON UPDATE CASCADE
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_execution_idempotency_keys_execution_id"
        " ON execution_idempotency_keys (execution_id)"
    )
    op.execute(
        "INSERT INTO execution_idempotency_keys"
        " SELECT organization_id, workflow_id, idempotency_key, id FROM executions"
        " WHERE idempotency_key IS NOT NULL"
    )
    op.execute(
        "CREATE TRIGGER record_idempotency_key AFTER INSERT ON executions FOR EACH ROW"
        " WHEN (NEW.idempotency_key IS NOT NULL)"
        " EXECUTE FUNCTION turbocat_record_idempotency_key()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER record_idempotency_key ON executions")
    op.execute("DROP TABLE execution_idempotency_keys")
    saved = {table: _rebuild(table, None) for table, _key in PARTITIONED}
    for table, _key in PARTITIONED:
        _refill(table, saved[table], {PLAIN_KEY: UNIQUE_KEY})
    op.execute(
        "DROP FUNCTION turbocat_create_partitions(timestamptz, timestamptz),"
        " turbocat_drop_partition(text), turbocat_record_idempotency_key(),"
        " turbocat_month_id(timestamp)"
    )


class Saved:
    """What a table had before it was rebuilt: put back on the new table by ``_refill``."""

    def __init__(self, table: str, key: str | None) -> None:
        conn = op.get_bind()
        self.table = table
        self.key = key
        self.indexes = [
            str(d).replace(" ON ONLY ", " ON ")
            for (d,) in conn.execute(
                text(
                    "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x"
                    " WHERE x.indrelid = CAST(:t AS regclass) AND NOT x.indisprimary"
                    " ORDER BY 1"
                ),
                {"t": table},
            )
        ]
        self.own_fks = list(
            conn.execute(
                text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = CAST(:t AS regclass) AND contype = 'f'"
                    " AND conparentid = 0 ORDER BY 1"
                ),
                {"t": table},
            )
        )
        self.incoming_fks = list(
            conn.execute(
                text(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                    " FROM pg_constraint WHERE confrelid = CAST(:t AS regclass)"
                    " AND contype = 'f' AND conrelid <> CAST(:t AS regclass)"
                    " AND conparentid = 0 ORDER BY 1, 2"
                ),
                {"t": table},
            )
        )
        self.policies = list(
            conn.execute(
                text(
                    "SELECT policyname, permissive, cmd, qual, with_check FROM pg_policies"
                    " WHERE schemaname = current_schema() AND tablename = :t ORDER BY 1"
                ),
                {"t": table},
            )
        )
        self.grants = list(
            conn.execute(
                text(
                    "SELECT grantee, string_agg(privilege_type, ', ')"
                    " FROM information_schema.role_table_grants"
                    " WHERE table_schema = current_schema() AND table_name = :t"
                    " AND grantee <> (SELECT tableowner FROM pg_tables"
                    "                 WHERE schemaname = current_schema() AND tablename = :t)"
                    " GROUP BY grantee ORDER BY 1"
                ),
                {"t": table},
            )
        )


def _rebuild(table: str, key: str | None) -> Saved:
    """Replace ``table`` by an empty copy of its columns and checks, partitioned by RANGE on
    ``key`` with a DEFAULT partition (``key`` None: a plain table); the old one is renamed to
    ``<table>_old`` for ``_refill``. Foreign keys pointing at the table are dropped."""
    saved = Saved(table, key)
    for referrer, name, _definition in saved.incoming_fks:
        op.execute(f"ALTER TABLE {referrer} DROP CONSTRAINT {name}")
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    partitioning = f" PARTITION BY RANGE ({key})" if key else ""
    op.execute(
        f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        + partitioning
    )
    if key:
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    return saved


def _refill(table: str, saved: Saved, replace: dict[str, str]) -> None:
    """Copy the rows over, drop the old table, then put back the primary key, foreign keys
    (own and incoming), indexes (``replace`` swaps definitions), row-level security, policies
    and grants."""
    op.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
    op.execute(f"DROP TABLE {table}_old")
    primary = "id" if saved.key in (None, "id") else f"id, {saved.key}"
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({primary})")
    for name, definition in saved.own_fks:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    for definition in saved.indexes:
        op.execute(replace.get(definition, definition))
    for referrer, name, definition in saved.incoming_fks:
        op.execute(f"ALTER TABLE {referrer} ADD CONSTRAINT {name} {definition}")
    if saved.policies:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    for name, permissive, command, using, check in saved.policies:
        sql = f"CREATE POLICY {name} ON {table} AS {permissive} FOR {command}"
        if using is not None:
            sql += f" USING ({using})"
        if check is not None:
            sql += f" WITH CHECK ({check})"
        op.execute(sql)
    for grantee, privileges in saved.grants:
        op.execute(f'GRANT {privileges} ON {table} TO "{grantee}"')


def _first_month() -> dt.datetime:
    """The earliest month of the existing executions' ids (UUIDv7 ones; others, and times
    before 2000, are left to the DEFAULT partition)."""
    found = (
        op.get_bind()
        .execute(
            text(
                "SELECT id FROM executions WHERE substr(id::text, 15, 1) = '7'"
                " AND id >= turbocat_month_id('2000-01-01') ORDER BY id LIMIT 1"
            )
        )
        .scalar_one_or_none()
    )
    if found is None:
        return dt.datetime.now(dt.UTC)
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=found.int >> 80)


def _app_role() -> str:
    config = op.get_context().config
    role = config.attributes.get("app_role") if config is not None else None
    if not role:
        from turbocat.config import Settings

        role = Settings().database.app_role
    if not _ROLE_NAME.match(role):
        raise ValueError(f"invalid application role name {role!r}")
    return str(role)
