-- Cron schedules (docs/workflows.md, "Cron"): one row per (tenant_id, name), what a schedule
-- declared in code keeps across restarts. settled_through moves by compare-and-set only
-- (UPDATE ... WHERE settled_through = the value read): of two processes settling the same
-- fires, the second's UPDATE waits for the first's commit, then matches no row.
CREATE TABLE schedules (
    tenant_id text NOT NULL,
    name text NOT NULL,
    settled_through timestamptz NOT NULL,  -- fires up to here are settled (fired or skipped)
    last_fire timestamptz,                 -- the last fire that submitted a job; NULL: none yet
    paused boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, name)
);
