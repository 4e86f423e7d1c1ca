//! pony: a deployment orchestrator for a global mail system.
//!
//! Components, in the order data flows through them:
//! - [`inventory`]: the fleet (regions → clusters → hosts), ranges, inheritance, host patterns.
//! - [`playbook`]: steps and strategy, their loading and validation.
//! - [`plan`]: the sealed task graph (step × target) with wave gates.
//! - [`lab`]: a local fleet of real sshd servers on loopback, for tests and `pony lab`.
//! - [`cli`] / [`app`] / [`commands`]: the command line.

pub mod app;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod events;
pub mod exec;
pub mod exit;
pub mod inventory;
pub mod lab;
pub mod logging;
pub mod plan;
pub mod playbook;
pub mod report;
pub mod secret;
pub mod state;
pub mod term;
pub mod transport;
