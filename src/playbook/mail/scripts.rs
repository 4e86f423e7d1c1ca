//! The shell bodies of the mail actions (see [`super`]): POSIX `sh`, run with `set -eu`
//! in a subshell of their own after the arguments were assigned to shell variables of
//! the same names (each value quoted by `crate::shell::quote`). They are minijinja
//! template text too, so none of them may contain `{{`, `{%` or `{#` (a unit test checks).
//!
//! Every failure names the action and says what is kept: mail is never deleted or held
//! (no `postsuper`), a queue that cannot be read never counts as empty, and a daemon's
//! own words are part of the message.

/// Helpers every action body may call. `pony_action` names the action in messages.
pub const PRELUDE: &str = r#"pony_fail() { echo "mail $pony_action: $*" >&2; exit 1; }
pony_secs() {
  pony_n=${1%[smh]}
  case $pony_n in ''|*[!0-9]*) pony_fail "$2 must be a duration like 30, 30s, 5m or 1h, not '$1'";; esac
  case $1 in *m) echo $((pony_n * 60));; *h) echo $((pony_n * 3600));; *) echo "$pony_n";; esac
}
pony_count() {
  case $1 in ''|*[!0-9]*) pony_fail "$2 must be a whole number, not '$1'";; esac
  echo "$1"
}
# Postfix prints its errors only to a terminal: `script` gives it one. The output (its
# \r removed) is left in pony_out for the message.
pony_postfix() {
  if pony_out=$(SHELL=/bin/sh PONY_CONF="$1" script -qec "postfix -c \"\$PONY_CONF\" $2" /dev/null </dev/null 2>&1); then pony_rc=0; else pony_rc=$?; fi
  pony_out=$(printf '%s' "$pony_out" | tr -d '\r')
  return "$pony_rc"
}
pony_soft_bounce() {
  postconf -c "$1" -e "soft_bounce = $2" || pony_fail "cannot set soft_bounce = $2 in $1/main.cf"
}
pony_postfix_dir() {
  [ -f "$1/main.cf" ] || pony_fail "no main.cf in $1 (the postfix argument is Postfix's config directory)"
}
pony_ipv4() {
  case $1 in ''|*[!0-9.]*) pony_fail "address must be the store's IPv4 address as its MTAs reach it, not '$1'";; esac
}
# A store leaves its MTAs' LMTP rotation: new connections to address:port are refused
# (the MTAs pass to the next store at once); the sessions already open finish.
pony_lmtp_close() {
  pony_rule="INPUT -p tcp -d $address --dport $port --syn -m comment --comment pony-lmtp-drain -j REJECT --reject-with tcp-reset"
  iptables -w -C $pony_rule 2>/dev/null || iptables -w -I $pony_rule || pony_fail "iptables cannot refuse new connections to $address:$port"
  pony_waited=0
  pony_open=$(ss -Htn state established "( sport = :$port )" src "$address" | grep -c . || true)
  while [ "$pony_open" -gt 0 ]; do
    [ "$pony_waited" -lt "$pony_lmtp_limit" ] || pony_fail "$pony_open LMTP sessions still open on $address:$port after ${pony_lmtp_limit}s; failing (the store stays out of the rotation until the rollback puts it back)"
    sleep 1; pony_waited=$((pony_waited + 1))
    pony_open=$(ss -Htn state established "( sport = :$port )" src "$address" | grep -c . || true)
  done
}
pony_lmtp_open() {
  pony_rule="INPUT -p tcp -d $address --dport $port --syn -m comment --comment pony-lmtp-drain -j REJECT --reject-with tcp-reset"
  while iptables -w -D $pony_rule 2>/dev/null; do :; done
}
"#;

/// `drain_mta`: a 4xx for new mail, `soft_bounce = yes`, flush, wait for the queue.
pub const DRAIN_MTA: &str = r#"pony_postfix_dir "$postfix"
case $(postconf -c "$postfix" -n) in
  *"cidr:$map"*) ;;
  *) pony_fail "$postfix/main.cf does not read $map, so writing it would defer nothing: add 'smtpd_client_restrictions = check_client_access cidr:$map' to it" ;;
esac
case $reply in 4.[0-9]*) ;; *) pony_fail "reply must be a temporary status and text such as '4.7.1 draining, try another MX', not '$reply'" ;; esac
case $reply in *"
"*) pony_fail "reply must be one line" ;; esac
limit=$(pony_secs "$wait" wait)
bound=$(pony_count "$queue_bound" queue_bound)
pony_soft_bounce "$postfix" yes
if [ -n "$next" ]; then pony_postfix_dir "$next"; pony_soft_bounce "$next" yes; fi
printf '0.0.0.0/0 DEFER %s\n' "$reply" > "$map.pony-tmp"
mv -f "$map.pony-tmp" "$map"
pony_postfix "$postfix" reload || pony_fail "postfix reload failed: $pony_out"
waited=0
while :; do
  postqueue -c "$postfix" -f >/dev/null 2>&1 || true
  listing=$(postqueue -c "$postfix" -j 2>&1) || pony_fail "cannot read the queue of $postfix, so the drain cannot be judged (the queue is kept): $listing"
  queued=$(printf '%s\n' "$listing" | grep -c queue_id || true)
  [ "$queued" -gt "$bound" ] || break
  [ "$waited" -lt "$limit" ] || pony_fail "$queued messages still queued after ${limit}s (queue_bound $bound); failing: the queue is kept, nothing is deleted or held"
  sleep 1; waited=$((waited + 1))
done
echo "mail drain_mta: new mail deferred with a 450 ($reply), soft_bounce = yes, $queued queued after ${waited}s"
"#;

/// `accept_mta`: the drain map emptied, `soft_bounce = no`, reloaded.
pub const ACCEPT_MTA: &str = r#"pony_postfix_dir "$postfix"
: > "$map.pony-tmp"
mv -f "$map.pony-tmp" "$map"
pony_soft_bounce "$postfix" no
if [ -n "$next" ] && [ -f "$next/main.cf" ]; then pony_soft_bounce "$next" no; fi
pony_postfix "$postfix" reload || pony_fail "postfix reload failed: $pony_out"
echo "mail accept_mta: taking mail again, soft_bounce = no"
"#;

/// `drain_imap`: the users denied, their sessions waited for, then kicked.
pub const DRAIN_IMAP: &str = r#"[ -f "$dovecot" ] || pony_fail "no Dovecot config at $dovecot"
users=$(echo $users)
[ -n "$users" ] || pony_fail "users is empty: give the users whose logins to deny, separated by spaces"
for user in $users; do
  case $user in *[!A-Za-z0-9._@+-]*) pony_fail "users must be user names separated by spaces (e.g. mail_users joined with ' '), not '$users'" ;; esac
done
limit=$(pony_secs "$wait" wait)
printf '%s\n' $users > "$deny.pony-tmp"
mv -f "$deny.pony-tmp" "$deny"
sessions() {
  pony_list=$(doveadm -c "$dovecot" who -1 2>&1) || pony_fail "cannot list the IMAP sessions (doveadm who): $pony_list"
  printf '%s\n' "$pony_list" | awk -v users=" $users " 'NR > 1 && index(users, " " $1 " ") { n++ } END { print n + 0 }'
}
waited=0
open=$(sessions)
while [ "$open" -gt 0 ] && [ "$waited" -lt "$limit" ]; do
  sleep 1; waited=$((waited + 1))
  open=$(sessions)
done
if [ "$open" -gt 0 ]; then
  for user in $users; do doveadm -c "$dovecot" kick "$user" >/dev/null 2>&1 || true; done
  kicked=$open; after=0
  open=$(sessions)
  while [ "$open" -gt 0 ]; do
    [ "$after" -lt 10 ] || pony_fail "$open IMAP sessions still open 10s after kicking them"
    sleep 1; after=$((after + 1))
    open=$(sessions)
  done
  echo "mail drain_imap: kicked the $kicked sessions left after ${limit}s"
fi
echo "mail drain_imap: new logins denied ($users), no session open"
"#;

/// `accept_imap`: the deny list emptied.
pub const ACCEPT_IMAP: &str = r#": > "$deny.pony-tmp"
mv -f "$deny.pony-tmp" "$deny"
echo "mail accept_imap: logins allowed again"
"#;

/// `lmtp_out`: the store leaves its MTAs' LMTP rotation.
pub const LMTP_OUT: &str = r#"pony_ipv4 "$address"
port=$(pony_count "$port" port)
pony_lmtp_limit=$(pony_secs "$wait" wait)
pony_lmtp_close
echo "mail lmtp_out: $address:$port refuses new LMTP connections (its MTAs pass to the next store), no session open after ${pony_waited}s"
"#;

/// `lmtp_in`: the store back in the rotation.
pub const LMTP_IN: &str = r#"pony_ipv4 "$address"
port=$(pony_count "$port" port)
pony_lmtp_open
echo "mail lmtp_in: $address:$port takes LMTP again"
"#;

/// `check` (and the first half of `reload`): the daemons' own configuration tests.
pub const CHECK: &str = r#"[ -n "$postfix$dovecot" ] || pony_fail "postfix and dovecot are both empty: nothing to check"
if [ -n "$postfix" ]; then
  pony_postfix_dir "$postfix"
  pony_postfix "$postfix" check || pony_fail "Postfix rejects the config in $postfix (postfix check); nothing was reloaded: $pony_out"
fi
if [ -n "$dovecot" ]; then
  [ -f "$dovecot" ] || pony_fail "no Dovecot config at $dovecot"
  pony_out=$(doveconf -c "$dovecot" -n 2>&1 >/dev/null) || pony_fail "Dovecot rejects $dovecot (doveconf -n); nothing was reloaded: $pony_out"
fi
"#;

/// `reload`, after [`CHECK`]: Postfix, then Dovecot (a store out of the LMTP rotation
/// while its old LMTP processes end).
pub const RELOAD: &str = r#"if [ -n "$postfix" ]; then
  pony_postfix "$postfix" reload || pony_fail "postfix reload failed: $pony_out"
fi
if [ -n "$dovecot" ]; then
  pony_lmtp_limit=$(pony_secs "$wait" wait)
  if [ -n "$lmtp" ]; then
    address=$lmtp; port=$(pony_count "$lmtp_port" lmtp_port)
    pony_ipv4 "$address"
    pony_lmtp_close
  fi
  base=$(doveconf -c "$dovecot" -h base_dir) || pony_fail "doveconf cannot read base_dir from $dovecot"
  master=$(cat "$base/master.pid" 2>/dev/null) || pony_fail "Dovecot does not run with $dovecot (no $base/master.pid)"
  old=$(pgrep -P "$master" -x lmtp || true)
  doveadm -c "$dovecot" reload || pony_fail "doveadm reload failed (its error is above)"
  # `doveadm reload` returns at once; an LMTP process of the old config still running
  # could take a new session and end it with 421, so the store reopens once they are gone.
  ticks=0
  for pid in $old; do
    while kill -0 "$pid" 2>/dev/null; do
      [ "$ticks" -lt $((pony_lmtp_limit * 10)) ] || pony_fail "LMTP process $pid of the old config still runs ${pony_lmtp_limit}s after the reload"
      sleep 0.1; ticks=$((ticks + 1))
    done
  done
  if [ -n "$lmtp" ]; then pony_lmtp_open; fi
fi
echo "mail reload: the config test passed (${postfix:+postfix check}${postfix:+${dovecot:+, }}${dovecot:+doveconf -n}) and the daemons reloaded"
"#;

/// What `reload`'s rollback does first: `link` back at `previous`.
pub const RELINK: &str = r#"if [ -n "$link" ] && [ -n "$previous" ]; then
  ln -sfn "$previous" "$link.pony-tmp"
  mv -T "$link.pony-tmp" "$link"
  echo "mail reload: $link points at $previous again"
fi
"#;
