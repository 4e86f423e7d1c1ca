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
