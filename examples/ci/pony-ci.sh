#!/bin/sh
# pony-ci.sh STAGE: the shell of the CI examples (github-actions.yml, gitlab-ci.yml), one
# stage per pipeline job, so both pipelines run the same commands (docs/ci.md).
#
#   check   pony check and pony plan (a merge request; nothing is contacted)
#   canary  pony deploy: the first wave, up to its approve: gate
#   rest    pony resume RUN --approve WAVE: run once a person approved (a manual job,
#           a protected environment), it deploys the rest of the fleet
#
# Each stage ends with pony's exit code mapped to the job's result (README "Exit codes"):
# 0 succeeded and 10 (stopped at an approval gate: awaiting a person, not a failure) pass;
# 1 (failed, rolled back), 2 (invalid input), 3 (needs a person), 4 (locked by another
# run) and 130 (interrupted) fail the job with pony's code.
#
# Files, in $PONY_REPORTS (kept as the jobs' artifacts):
#   plan.txt                   pony plan's output
#   STAGE.xml                  the JUnit report (--junit): a suite per region, a case per host
#   STAGE.jsonl                the JSON events (--output json, docs/events.md)
#   pony.env                   PONY_RUN and PONY_AWAITING (the wave awaiting approval, empty
#                              if none) for the next job (GitLab: a dotenv report)
#   state.tgz                  the state folder (journal, snapshot; local hosts' folders),
#                              for the next job's runner; not written with PONY_STATE
#                              (postgres://…), where the run lives in the database
#
# Needs: pony on PATH, a POSIX sh, grep, sed, tar.
set -u

stage=${1:?usage: pony-ci.sh check|canary|rest}
: "${PONY_INVENTORY:=inventories/local.yaml}"
: "${PONY_PLAYBOOK:=examples/ci/release.yaml}"
: "${PONY_REPORTS:=pony-reports}"
: "${PONY_STATE_DIR:=.pony}"
export PONY_INVENTORY PONY_STATE_DIR
mkdir -p "$PONY_REPORTS"

say() { echo "pony-ci: $stage: $*"; }

# pony's exit code -> the job's: `return` gives the job its result.
job_result() {
    code=$1
    case $code in
    0) say "succeeded" ;;
    10) say "run ${PONY_RUN:-} awaits a person's approval of wave ${PONY_AWAITING:-} (exit 10, not a failure): the approval job goes on with it" ;;
    1) say "FAILED, rolled back: every failed host is back on the old release (exit 1); see the JUnit report" ;;
    2) say "invalid input or usage: nothing ran (exit 2); pony's message above names the fix" ;;
    3) say "FAILED and needs a person: rollback incomplete or the run halted (exit 3): pony status ${PONY_RUN:-RUN}" ;;
    4) say "another run holds the inventory's lock (exit 4)" ;;
    130) say "interrupted (exit 130): pony resume ${PONY_RUN:-RUN} goes on" ;;
    *) say "pony ended with exit $code" ;;
    esac
    case $code in
    0 | 10) return 0 ;;
    *) return "$code" ;;
    esac
}

# FIELD of the last EVENT in the JSON events (one compact object a line; run ids and wave
# names have no quotes): grep and sed, so the image needs no JSON tool.
field() {
    grep "\"event\":\"$1\"" ${3:+"$3"} | sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" | tail -n 1
}

# The run's id and the wave it stopped at, from its JSON events, for the next job.
hand_on() {
    events=$1
    PONY_RUN=$(field run_started run_id "$events")
    [ -n "$PONY_RUN" ] || PONY_RUN=${PONY_RUN_BEFORE:-}
    PONY_AWAITING=""
    if [ "$2" = 10 ]; then
        PONY_AWAITING=$(grep '"reason":"approve"' "$events" | field gate_waiting wave)
    fi
    printf 'PONY_RUN=%s\nPONY_AWAITING=%s\n' "$PONY_RUN" "$PONY_AWAITING" >"$PONY_REPORTS/pony.env"
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
        printf 'run=%s\nawaiting=%s\n' "$PONY_RUN" "$PONY_AWAITING" >>"$GITHUB_OUTPUT"
    fi
    if [ -z "${PONY_STATE:-}" ] && [ -d "$PONY_STATE_DIR" ]; then
        tar -czf "$PONY_REPORTS/state.tgz" "$PONY_STATE_DIR"
    fi
}

case $stage in
check)
    pony check -i "$PONY_INVENTORY" "$PONY_PLAYBOOK" || job_result $? || exit
    pony plan -i "$PONY_INVENTORY" "$PONY_PLAYBOOK" >"$PONY_REPORTS/plan.txt" || job_result $? || exit
    cat "$PONY_REPORTS/plan.txt"
    ;;
canary)
    PONY_RUN=""
    pony deploy -i "$PONY_INVENTORY" "$PONY_PLAYBOOK" --yes --output json \
        --junit "$PONY_REPORTS/canary.xml" >"$PONY_REPORTS/canary.jsonl"
    code=$?
    hand_on "$PONY_REPORTS/canary.jsonl" "$code"
    [ -z "$PONY_RUN" ] || pony status "$PONY_RUN"
    job_result "$code" || exit
    ;;
rest)
    if [ -f "$PONY_REPORTS/state.tgz" ] && [ -z "${PONY_STATE:-}" ]; then
        tar -xzf "$PONY_REPORTS/state.tgz"
    fi
    # GitLab gives pony.env's values as variables (dotenv); elsewhere read the file.
    if [ -z "${PONY_RUN:-}" ] && [ -f "$PONY_REPORTS/pony.env" ]; then
        . "./$PONY_REPORTS/pony.env"
    fi
    if [ -z "${PONY_AWAITING:-}" ]; then
        say "nothing awaits approval (run ${PONY_RUN:-none}): nothing to do"
        exit 0
    fi
    PONY_RUN_BEFORE=$PONY_RUN
    pony resume "$PONY_RUN" --approve "$PONY_AWAITING" --output json \
        --junit "$PONY_REPORTS/rest.xml" >"$PONY_REPORTS/rest.jsonl"
    code=$?
    hand_on "$PONY_REPORTS/rest.jsonl" "$code"
    pony status "$PONY_RUN"
    job_result "$code" || exit
    ;;
*)
    echo "pony-ci.sh: unknown stage '$stage': check, canary or rest" >&2
    exit 2
    ;;
esac
