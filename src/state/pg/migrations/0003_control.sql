-- Live control of runs from any machine (`pony pause|continue|abort|approve RUN`): the
-- sender inserts a command and notifies `<schema>_control`; every live controller of the
-- run applies it, journals it and writes its answer, notifying `<schema>_control_answer`.

CREATE TABLE control (
    id         bigserial PRIMARY KEY,
    run_id     text NOT NULL,
    -- The command as the control socket carries it: {"command": "pause"} and so on.
    command    jsonb NOT NULL,
    -- Who sent it, as the sender's pony reports it; `db_user` is the role the database
    -- authenticated for the insert.
    username   text NOT NULL,
    machine    text NOT NULL,
    pid        integer NOT NULL,
    db_user    text NOT NULL DEFAULT session_user,
    -- A controller that forwards an answer given at its own terminal (an `approve:`
    -- question) names itself here: it has applied the command already.
    origin     text,
    sent       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX control_run ON control (run_id, id);

CREATE TABLE control_answers (
    control_id bigint NOT NULL REFERENCES control (id) ON DELETE CASCADE,
    controller text NOT NULL,
    accepted   boolean NOT NULL,
    message    text NOT NULL,
    answered   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (control_id, controller)
);
