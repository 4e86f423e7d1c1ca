-- Several controllers sharing one run, split by region (`--regions`): one lease per
-- region of a run, renewed by its controller's heartbeat exactly as the inventory lease
-- is, and the controller that wrote each journal row (NULL for a run with one controller).

CREATE TABLE region_leases (
    -- No foreign key: a new run takes its leases before its snapshot is stored.
    run_id     text NOT NULL,
    region     text NOT NULL,
    holder     text NOT NULL,
    controller text NOT NULL,
    pid        integer NOT NULL,
    machine    text NOT NULL,
    started    timestamptz NOT NULL DEFAULT now(),
    expires    timestamptz NOT NULL,
    PRIMARY KEY (run_id, region)
);

ALTER TABLE journal ADD COLUMN controller text;
