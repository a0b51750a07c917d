-- Unique keys (docs/design.md, "Unique jobs"): one row per (tenant_id, unique_key), the claim
-- of the job that holds it. The primary key is the constraint: two processes claiming one key
-- at once meet on it (INSERT ... ON CONFLICT waits for the other's commit), and a takeover of
-- an expired or released claim is an UPDATE of the row under its lock, never a second row.
CREATE TABLE unique_keys (
    tenant_id text NOT NULL,
    unique_key text NOT NULL,
    job_id text NOT NULL,               -- the claiming job, as in jobs.id (maybe not written yet)
    states text[] NOT NULL,             -- the statuses it counts in
    expires_at timestamptz,             -- NULL: no period
    PRIMARY KEY (tenant_id, unique_key)
);
CREATE INDEX unique_keys_by_job ON unique_keys (job_id, tenant_id);

-- A deleted (pruned) job holds no key.
CREATE FUNCTION nsai_work_drop_unique_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM unique_keys WHERE job_id = OLD.id AND tenant_id = OLD.tenant_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER unique_keys_of_deleted_jobs AFTER DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION nsai_work_drop_unique_keys();
