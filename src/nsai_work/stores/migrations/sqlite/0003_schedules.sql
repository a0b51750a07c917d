-- Cron schedules (docs/workflows.md, "Cron"): one row per (tenant_id, name), what a schedule
-- declared in code keeps across restarts. settled_through moves by compare-and-set only
-- (UPDATE ... WHERE settled_through = the value read), under the write lock.
CREATE TABLE schedules (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    settled_through INTEGER NOT NULL,   -- microseconds since 1970-01-01 UTC: fires up to here
                                        -- are settled (fired or skipped)
    last_fire INTEGER,                  -- the last fire that submitted a job; NULL: none yet
    paused INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, name)
);
