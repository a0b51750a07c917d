-- The first schema of the SQLite store (docs/design.md, "Durable state", "Tables").
-- Applied once per database by stores/_sqlite_schema.py, inside the BEGIN IMMEDIATE that
-- records it in schema_version. Later changes are new numbered files; this one never changes.

-- One row: what identifies this database. cursor_key signs list cursors, so a cursor made by
-- another store (or for another query) is refused instead of paging through the wrong rows.
CREATE TABLE store_info (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cursor_key BLOB NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO store_info (id, cursor_key, created_at)
VALUES (1, randomblob(16), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- Jobs. seq is the rowid: submission order, never reused (AUTOINCREMENT), the listing cursor,
-- and the last column of every index below. (tenant_id, id) is the job's key, held by the
-- UNIQUE index on (id, tenant_id): id first, so owners(id) reads its prefix.
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    terminal INTEGER NOT NULL,          -- 1 for succeeded, failed, timeout and canceled
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority TEXT NOT NULL,
    created_at INTEGER NOT NULL,        -- microseconds since 1970-01-01 UTC
    finished_at INTEGER,                -- microseconds since 1970-01-01 UTC, once terminal
    admitted INTEGER NOT NULL,          -- 0: a client's submit the scheduler has not written
    cancel_requested TEXT,              -- a client's cancel reason, until the job is terminal
    job TEXT NOT NULL,                  -- the whole Job as msgspec JSON (stores/_codec.py)
    UNIQUE (id, tenant_id)
);

-- list(): a tenant's jobs newest first, narrowed by at most one of status, namespace, kind
-- straight from an index (two or three filters: SQLite walks one of these and filters).
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, seq);
CREATE INDEX jobs_by_status ON jobs (tenant_id, status, seq);
CREATE INDEX jobs_by_namespace ON jobs (tenant_id, namespace, seq);
CREATE INDEX jobs_by_kind ON jobs (tenant_id, kind, seq);

-- load(): the jobs a starting scheduler recovers; inbox(): what clients submitted and asked to
-- cancel; prune(): finished jobs by when they finished.
CREATE INDEX jobs_live ON jobs (seq) WHERE terminal = 0;
CREATE INDEX jobs_inbox ON jobs (seq) WHERE admitted = 0;
CREATE INDEX jobs_cancel_requested ON jobs (seq) WHERE cancel_requested IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE terminal = 1;

-- The core's exported state (opaque bytes), as of the last write that carried it.
CREATE TABLE core_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state BLOB NOT NULL,
    updated_at TEXT NOT NULL
);

-- The scheduler lease. The lock itself is an flock on "<database>.lock"; this row names its
-- holder for others (held = 1) and carries the fencing token that every write() checks.
CREATE TABLE lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fence INTEGER NOT NULL,
    held INTEGER NOT NULL,
    pid INTEGER,
    host TEXT,
    since TEXT
);
INSERT INTO lease (id, fence, held) VALUES (1, 0, 0);

-- Rows that could not be read back as a job, set aside by load() or inbox() for a human.
CREATE TABLE quarantine (
    seq INTEGER PRIMARY KEY,            -- the row's seq in jobs
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    job,                                -- the row's bytes as they were (no type: kept as is)
    quarantined_at TEXT NOT NULL
);
