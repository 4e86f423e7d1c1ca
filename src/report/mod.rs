//! Reporters: turn the executor's events into what people and CI read. They run on
//! their own task, fed by an unbounded channel, so rendering never blocks the executor.

pub mod json;
pub mod plain;

use crate::events::Event;
use tokio::sync::mpsc::UnboundedReceiver;

/// Something that renders events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    fn finish(&mut self) {}
}

/// The reporters a run gets for the global options: JSON events on stdout with
/// `--output json`, otherwise plain lines (CI) on stdout.
pub fn for_run(global: &crate::cli::GlobalOptions) -> Vec<Box<dyn Reporter>> {
    match global.output {
        crate::cli::OutputFormat::Json => vec![Box::new(json::JsonReporter)],
        crate::cli::OutputFormat::Human => vec![Box::new(plain::PlainReporter::new(
            Box::new(std::io::stdout()),
            global.quiet,
        ))],
    }
}

/// Feeds every event to every reporter until the sender is dropped.
pub async fn drive(mut events: UnboundedReceiver<Event>, mut reporters: Vec<Box<dyn Reporter>>) {
    while let Some(event) = events.recv().await {
        for reporter in &mut reporters {
            reporter.event(&event);
        }
    }
    for reporter in &mut reporters {
        reporter.finish();
    }
}
