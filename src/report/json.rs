//! `--output json`: one JSON object per event per line on stdout (schema in docs/events.md).

use super::Reporter;
use crate::events::{Envelope, Event, SCHEMA_VERSION};
use std::io::Write;

/// Prints events; `controller` names this controller in a run split by region.
pub struct JsonReporter {
    pub controller: Option<String>,
}

impl Reporter for JsonReporter {
    fn event(&mut self, event: &Event) {
        let envelope = Envelope {
            schema: SCHEMA_VERSION,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            controller: self.controller.as_deref(),
            event,
        };
        // One write per line, so that a line is whole even if stdout is shared.
        let Ok(mut line) = serde_json::to_vec(&envelope) else {
            return;
        };
        line.push(b'\n');
        let mut out = crate::term::Stdout;
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }
}
