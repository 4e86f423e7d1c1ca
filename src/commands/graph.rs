//! `pony graph`: draw the plan as dot, mermaid or JSON.

use super::load_plan;
use crate::cli::PlanArgs;
use crate::exit::Exit;
use crate::plan::render::{render, GraphFormat, Level};

pub fn run(args: &PlanArgs, format: GraphFormat, tasks: bool) -> anyhow::Result<Exit> {
    let plan = load_plan(args)?.print_warnings();
    let level = if tasks { Level::Tasks } else { Level::Steps };
    crate::out!("{}", render(&plan, format, level));
    Ok(Exit::Success)
}
