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
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &envelope);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}
