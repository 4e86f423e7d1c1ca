-- Runs with their snapshot, the journal (one row per record) and one lease per inventory.
-- Runs in the installation's schema (search_path is set by pony).

CREATE TABLE runs (
    run_id         text PRIMARY KEY,
    inventory      text NOT NULL,
    playbook       text NOT NULL,
    created        timestamptz NOT NULL DEFAULT now(),
    -- The snapshot, byte for byte as the run folder holds it.
    inventory_yaml bytea NOT NULL,
    playbook_yaml  bytea NOT NULL,
    vars_json      text NOT NULL,
    origin_json    text NOT NULL
);

CREATE TABLE journal (
    seq    bigserial PRIMARY KEY,
    run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    -- The record as a journal.jsonl line holds it; `type` is its kind.
    record jsonb NOT NULL
);
CREATE INDEX journal_run ON journal (run_id, seq);

-- One run at a time per inventory. `expires` is renewed by the holder's heartbeat and
-- compared with the database's clock only; NULL while the run is paused for approval
-- (the lease is kept until that run is resumed or `pony unlock` breaks it).
CREATE TABLE leases (
    inventory         text PRIMARY KEY,
    run_id            text NOT NULL,
    holder            text NOT NULL,
    pid               integer NOT NULL,
    machine           text NOT NULL,
    username          text NOT NULL,
    started           timestamptz NOT NULL DEFAULT now(),
    expires           timestamptz,
    awaiting_approval boolean NOT NULL DEFAULT false
);
