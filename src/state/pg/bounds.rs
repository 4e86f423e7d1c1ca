//! The bounds every connection to the state database carries, so that a database that
//! is hung rather than down (a stopped server, a held lock, a link that drops packets)
//! cannot freeze a controller:
//!
//! - `connect_timeout` (the TCP connect) and, around the whole connection with its
//!   startup and authentication, [`super::PgStore::bounded`];
//! - `tcp_user_timeout` (data the server's host never acknowledges) and TCP keepalives
//!   (a peer that went away while the connection was idle);
//! - on the server, `lock_timeout` (a write waiting behind `LOCK TABLE` or another
//!   session's row lock), `statement_timeout` and `idle_in_transaction_session_timeout`
//!   (a session left in a transaction by a stopped controller frees its locks).
//!
//! None of these notices a server process that is stopped (SIGSTOP): its host's kernel
//! acknowledges data and keepalives. What a run must never wait on past its bound is
//! waited on through [`super::PgStore::bounded`] or a thread that may fall behind (the
//! journal's sender, the heartbeat), and the lease is counted on the controller's own
//! clock ([`super::deadline`]). A value the URL gives (`?connect_timeout=…`,
//! `?options=-c statement_timeout=…`) is kept.

use std::time::Duration;

/// How long one call may take before pony stops waiting for it: a third of the lease
/// (so that a hung call costs at most one heartbeat), between 1 and 10 seconds.
pub fn call_bound(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// How long a statement may run on the server: a whole journal or a run's files are
/// read and written in one, so it is generous; it only ends statements nobody will
/// ever see the end of.
pub fn statement_timeout(lease: Duration) -> Duration {
    (lease * 2).clamp(Duration::from_secs(30), Duration::from_secs(600))
}

/// Sets the bounds the URL left unset on `config`.
pub fn apply(config: &mut postgres::Config, lease: Duration) {
    let bound = call_bound(lease);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(bound);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(lease.max(Duration::from_secs(1)));
    }
    if config.get_keepalives_interval().is_none() {
        config
            .keepalives(true)
            .keepalives_idle(bound)
            .keepalives_interval((bound / 3).max(Duration::from_secs(1)))
            .keepalives_retries(3);
    }
    // The URL's own `-c` settings come after these, so they win.
    let ours = format!(
        "-c lock_timeout={} -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        bound.as_millis(),
        statement_timeout(lease).as_millis(),
        statement_timeout(lease).as_millis()
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    config.options(&options);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_lease_and_keep_the_urls_own() {
        assert_eq!(call_bound(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(call_bound(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(call_bound(Duration::from_secs(9)), Duration::from_secs(3));
        let mut config: postgres::Config =
            "postgres://u@h/d?connect_timeout=7&options=-c%20lock_timeout%3D5"
                .parse()
                .unwrap();
        apply(&mut config, Duration::from_secs(30));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(7)));
        let options = config.get_options().unwrap();
        assert!(
            options.starts_with("-c lock_timeout=10000 -c statement_timeout=60000"),
            "{options}"
        );
        assert!(options.ends_with("-c lock_timeout=5"), "{options}");
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(30))
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));
    }
}
