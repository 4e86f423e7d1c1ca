#!/bin/sh
# A pony notifier: mails each event to PONY_MAIL_TO through sendmail (Postfix, Exim and
# OpenSMTPD all install one). pony runs it with the event's JSON on stdin and the run's id
# in PONY_RUN_ID:
#
#   PONY_MAIL_TO=oncall@example.com pony deploy ... --notify examples/notify/mail.sh
#
# Needs jq. SENDMAIL overrides the sendmail binary (default /usr/sbin/sendmail).
set -eu
: "${PONY_MAIL_TO:?set PONY_MAIL_TO to the address to mail}"
event=$(cat)
kind=$(printf '%s\n' "$event" | jq -r .event)
{
  printf 'To: %s\n' "$PONY_MAIL_TO"
  printf 'Subject: [pony] run %s: %s\n' "${PONY_RUN_ID:-?}" "$kind"
  printf 'Content-Type: text/plain; charset=utf-8\n'
  printf '\n'
  printf '%s\n' "$event" | jq .
} | "${SENDMAIL:-/usr/sbin/sendmail}" -t -oi
