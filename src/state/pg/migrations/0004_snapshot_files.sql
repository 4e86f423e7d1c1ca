-- A run is self-contained: its template and upload sources (and its playbook and
-- inventory) as they were at the start, content-addressed and shared by every run.

-- The run folder's files.json: each source as the playbook names it -> its sha256.
ALTER TABLE runs ADD COLUMN files_json text;

-- One row per distinct content, named by its sha256 (the local blobs/sha256/ folder).
CREATE TABLE blobs (
    sha256  text PRIMARY KEY,
    content bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
