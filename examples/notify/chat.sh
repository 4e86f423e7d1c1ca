#!/bin/sh
# A pony notifier: posts one line per event to a Slack or Microsoft Teams incoming
# webhook (both take {"text": "..."}). pony runs it with the event's JSON on stdin and the
# run's id in PONY_RUN_ID:
#
#   PONY_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/XXXX \
#     pony deploy ... --notify examples/notify/chat.sh
#
# Needs jq and curl. Exits non-zero when the webhook refuses the message (pony logs it
# in the run folder's notify.log and goes on).
set -eu
: "${PONY_WEBHOOK_URL:?set PONY_WEBHOOK_URL to the incoming webhook URL}"
run="${PONY_RUN_ID:-RUN}"
jq -c --arg run "$run" '{text: ("pony " + (
  if .event == "run_started" then "run \($run) of \(.playbook) on \(.inventory) started: \(.hosts) hosts"
  elif .event == "summary" then "run \($run) finished: \(.outcome) (exit \(.exit_code)); \(.ok) ok, \(.failed) failed, \(.rolled_back) rolled back"
  elif .event == "gate_waiting" then "run \($run): wave \(.wave) waits for approval: pony approve \($run) \(.wave)"
  elif .event == "task_failed" then "run \($run): host \(.task.host) (\(.task.region)) failed at step \(.task.step): \(.error)"
  elif .event == "rollback_finished" then "run \($run): rollback of \(.scope) " + (if .ok then "complete" else "INCOMPLETE, a person must look" end)
  elif .event == "verify_check" then "run \($run): check \(.check) of wave \(.wave) failed on \(.host): \(.detail)"
  elif .event == "wave_failed" then "run \($run): wave \(.wave) FAILED: \(.reason)"
  elif .event == "control" then "run \($run): \(.command) by \(.user)@\(.host): \(.message)"
  else "run \($run): \(.event)" end))}' |
  curl -sS --fail --max-time 8 -H 'Content-Type: application/json' --data-binary @- "$PONY_WEBHOOK_URL" >/dev/null
