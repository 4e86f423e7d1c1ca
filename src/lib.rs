//! pony: a deployment orchestrator for a global mail system.
//!
//! Modules, in the order data flows through them (docs/architecture.md draws it):
//!
//! - [`cli`]: the command line as clap types, nothing else.
//! - [`app`]: resolves the [`settings`] once, dispatches to [`commands`], and is the one
//!   place an outcome becomes an exit code.
//! - [`settings`]: what the command line and the environment ask for, as plain values.
//! - [`exit`]: the documented exit codes.
//! - [`hint`]: the pony commands messages tell a person to run, with the options that chose the state.
//! - [`commands`]: one module per subcommand; the glue that loads, runs and prints.
//! - [`diag`]: validation problems, collected, sorted, each naming file, thing and fix.
//! - [`inventory`]: the fleet (regions → clusters → hosts), ranges, inheritance, host patterns.
//! - [`playbook`]: steps and strategy (waves, gates, limits), loaded and validated.
//! - [`secret`]: secret vars, redacted wherever text is printed or journaled.
//! - [`plan`]: the sealed task graph (step × target) with wave gates, cluster limits and estimates.
//! - [`transport`]: how commands reach a host (local `sh`, or one OpenSSH master per host).
//! - [`exec`]: runs a plan; its scheduler owns all run state and alone emits events.
//! - [`events`]: the one vocabulary of what happened, and the sink the scheduler emits to.
//! - [`state`]: the run folder, the journal (the events' first consumer), replay, locks, past runs.
//! - [`report`]: the events' other consumers: terminal bars, plain lines, JSON, JUnit.
//! - [`term`]: the terminal that logs, prompts and reporters share (progress bars, colour).
//! - [`logging`]: tracing setup; log lines written around the progress bars.
//! - [`duration`]: durations as pony prints them for people.
//! - [`process`]: this process's identity (machine, pid, user) and other processes' liveness.
//! - [`shell`]: the one shell-quoting function.
//! - [`sys`]: safe functions over the libc calls pony makes; the crate's only `unsafe` code.
//! - [`serve`]: `pony serve`, the runs over HTTP: live run pages, gate buttons, metrics.
//! - [`lab`]: a local fleet of real sshd servers on loopback, for tests and `pony lab`.

// Standard output goes through `term::Stdout` (`outln!`), which a closed pipe cannot
// panic; `println!` would.
#![deny(clippy::print_stdout)]
// Every libc call that needs `unsafe` sits behind a safe function in `sys`, the one
// module allowed it.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod commands;
pub mod control;
pub mod diag;
pub mod duration;
pub mod events;
pub mod exec;
pub mod exit;
pub mod hint;
pub mod inventory;
pub mod lab;
pub mod logging;
pub mod notify;
pub mod plan;
pub mod playbook;
pub mod process;
pub mod report;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod shell;
pub mod sim;
pub mod state;
pub mod sys;
pub mod term;
pub mod transport;
pub mod vault;
