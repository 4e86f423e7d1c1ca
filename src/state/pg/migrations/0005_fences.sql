-- Holders fenced off by `pony unlock` (see state/pg/fence.rs): one row per lease token
-- the unlock deleted. The holder writes `stopped` and `outcome` once it has stopped and
-- killed its commands on the hosts; `pony unlock --force` waits for that.

CREATE TABLE fences (
    holder     text PRIMARY KEY,
    run_id     text NOT NULL,
    inventory  text NOT NULL,
    -- The `--controller` name of a split run's controller (NULL for a whole run's).
    controller text,
    machine    text NOT NULL,
    pid        integer NOT NULL,
    was_live   boolean NOT NULL,
    fenced     timestamptz NOT NULL DEFAULT now(),
    -- Who broke the lease: user@machine (pid N).
    fenced_by  text NOT NULL,
    stopped    timestamptz,
    outcome    text
);
CREATE INDEX fences_run ON fences (run_id);
