-- The first schema of the PostgreSQL store (docs/design.md, "Durable state", "Tables").
-- Applied once per database by stores/_pg/_migrate.py, in the transaction that holds the
-- migration lock (pg_advisory_xact_lock) and records it in schema_version. Later changes are
-- new numbered files; this one never changes.

-- One row: what identifies this database. cursor_key signs list cursors, so a cursor made by
-- another store (or for another query) is refused instead of paging through the wrong rows.
CREATE TABLE store_info (
    id integer PRIMARY KEY CHECK (id = 1),
    cursor_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO store_info (id, cursor_key)
VALUES (1, decode(md5(random()::text || clock_timestamp()::text), 'hex'));

-- Jobs. The key is (tenant_id, id), held by the primary key in the order (id, tenant_id): ids
-- are time-ordered UUIDs, so new keys land at the right edge of the index, and owners(id)
-- reads its prefix. seq is submission order, never reused: recovery order, the listing
-- cursor, and the last column of every index below. The other columns are copies of the
-- job's fields that queries filter on; body is the whole Job as msgspec JSON bytes
-- (stores/_codec.py), kept as bytea: the server never parses it (jsonb costs ~3x the insert
-- time of bytea and reorders keys).
CREATE TABLE jobs (
    id text NOT NULL,
    tenant_id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    status text NOT NULL,
    terminal boolean NOT NULL,          -- succeeded, failed, timeout or canceled
    namespace text NOT NULL,
    kind text NOT NULL,
    priority text NOT NULL,
    created_at timestamptz NOT NULL,
    finished_at timestamptz,            -- once terminal
    admitted boolean NOT NULL,          -- false: a client's submit the scheduler has not written
    cancel_requested text,              -- a client's cancel reason, until the job is terminal
    body bytea NOT NULL,
    PRIMARY KEY (id, tenant_id)
);

-- list(): a tenant's jobs newest first, narrowed by status, namespace or kind, straight from
-- an index (with two or three filters the planner walks one of these and filters).
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, seq);
CREATE INDEX jobs_by_status ON jobs (tenant_id, status, seq);
CREATE INDEX jobs_by_namespace ON jobs (tenant_id, namespace, seq);
CREATE INDEX jobs_by_kind ON jobs (tenant_id, kind, seq);

-- load(): the jobs a starting scheduler recovers; inbox(): what clients submitted and asked to
-- cancel; prune(): finished jobs by when they finished. Partial, so each holds only the few
-- rows it is for.
CREATE INDEX jobs_live ON jobs (seq) WHERE NOT terminal;
CREATE INDEX jobs_inbox ON jobs (seq) WHERE NOT admitted;
CREATE INDEX jobs_cancel_requested ON jobs (seq) WHERE cancel_requested IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at, seq) WHERE terminal;

-- The core's exported state (opaque bytes), as of the last write that carried it.
CREATE TABLE core_state (
    id integer PRIMARY KEY CHECK (id = 1),
    state bytea NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The scheduler lease. The lock itself is a session advisory lock held by the scheduler's
-- writer connection; this row names its holder for others and carries the fencing token that
-- every write checks. writes counts the scheduler's commits: after a connection is lost during
-- a COMMIT, it tells whether that commit happened.
CREATE TABLE lease (
    id integer PRIMARY KEY CHECK (id = 1),
    fence bigint NOT NULL,
    writes bigint NOT NULL,
    held boolean NOT NULL,
    pid integer,
    host text,
    since timestamptz
);
INSERT INTO lease (id, fence, writes, held) VALUES (1, 0, 0, false);

-- Rows that could not be read back as a job, moved out of jobs by load() or inbox() for a
-- human to look at.
CREATE TABLE quarantine (
    seq bigint PRIMARY KEY,             -- the row's seq in jobs
    tenant_id text NOT NULL,
    job_id text NOT NULL,
    reason text NOT NULL,
    body bytea NOT NULL,                -- the row's bytes as they were
    quarantined_at timestamptz NOT NULL DEFAULT now()
);

-- The fencing check of every scheduler write, in its transaction: counts the commit (the
-- count tells after a lost connection whether its COMMIT happened), or raises NW001 when the
-- lease has moved to another fence (another scheduler took over).
CREATE FUNCTION nsai_work_fence(expected bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    counted bigint;
BEGIN
    UPDATE lease SET writes = writes + 1 WHERE id = 1 AND fence = expected
    RETURNING writes INTO counted;
    IF counted IS NULL THEN
        RAISE EXCEPTION 'fenced out: the lease is no longer at fence %', expected
            USING ERRCODE = 'NW001';
    END IF;
    RETURN counted;
END
$$;

-- Raises NW002 unless a batch's UPDATE found every job it was given, so that the checks of a
-- write run in the server and its COMMIT can follow them in the same round trip.
CREATE FUNCTION nsai_work_expect_rows(updated bigint, given bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF updated <> given THEN
        RAISE EXCEPTION 'the batch updates % jobs the store does not hold', given - updated
            USING ERRCODE = 'NW002';
    END IF;
    RETURN updated;
END
$$;
