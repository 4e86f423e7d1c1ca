//! A controller fenced off (its lease lost or broken by `pony unlock --force`): what its
//! kills on the hosts came to, said at its terminal and to the state database.

/// A controller that lost its lease has stopped: it says how, at its terminal and (when
/// `pony unlock` broke the lease and waits for the answer) in the database.
pub(super) fn fenced_stop(held: &crate::state::backend::Held, journal: &std::path::Path) {
    let (killed, ended, unconfirmed) = kills_of_this_process(journal);
    let mut outcome = format!(
        "stopped; {killed} running command(s) killed on the hosts (confirmed), {ended} had ended"
    );
    if unconfirmed > 0 {
        outcome.push_str(&format!(
            ", {unconfirmed} could not be confirmed killed (see its journal)"
        ));
    }
    // A lock file is never fenced off.
    let Some(broken_by) = held.broken_by() else {
        return;
    };
    match broken_by {
        Ok(Some(by)) => {
            eprintln!("this controller's lease was broken with `pony unlock --force` by {by}: it {outcome}")
        }
        Ok(None) => eprintln!("this controller {outcome}"),
        Err(e) => tracing::warn!("{e}"),
    }
    if let Err(e) = held.confirm_stopped(&outcome) {
        tracing::warn!("could not tell the state database that this controller stopped: {e}");
    }
}

/// What this process's kills on a lost lease came to, from its journal (the local copy:
/// the database takes nothing from a fenced controller): tasks whose command was killed,
/// whose command had ended, and whose kill could not be confirmed.
fn kills_of_this_process(journal: &std::path::Path) -> (usize, usize, usize) {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let pid = u64::from(std::process::id());
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let start = records
        .iter()
        .rposition(|r| {
            matches!(r["type"].as_str(), Some("run_started" | "run_resumed"))
                && r["pid"].as_u64() == Some(pid)
        })
        .unwrap_or(0);
    let mut counts = (0, 0, 0);
    for record in &records[start..] {
        if record["state"] != "interrupted" {
            continue;
        }
        let error = record["error"].as_str().unwrap_or_default();
        if error.contains("(confirmed)") {
            counts.0 += 1;
        } else if error.contains("had ended") {
            counts.1 += 1;
        } else if error.contains("could not be confirmed") {
            counts.2 += 1;
        }
    }
    counts
}
