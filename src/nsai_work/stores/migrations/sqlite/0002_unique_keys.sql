-- Unique keys (docs/design.md, "Unique jobs"): one row per (tenant_id, unique_key), the claim
-- of the job that holds it. The primary key is the constraint: a second claim of a key is an
-- UPDATE of this row under the write lock, never a second row.
CREATE TABLE unique_keys (
    tenant_id TEXT NOT NULL,
    unique_key TEXT NOT NULL,
    job_id TEXT NOT NULL,               -- the claiming job (maybe not written yet)
    states TEXT NOT NULL,               -- the statuses it counts in, comma-separated
    expires_at INTEGER,                 -- microseconds since 1970-01-01 UTC; NULL: no period
    PRIMARY KEY (tenant_id, unique_key)
);
CREATE INDEX unique_keys_by_job ON unique_keys (job_id, tenant_id);

-- A deleted (pruned) job holds no key.
CREATE TRIGGER unique_keys_of_deleted_jobs AFTER DELETE ON jobs BEGIN
    DELETE FROM unique_keys WHERE job_id = old.id AND tenant_id = old.tenant_id;
END;
