//! Checks of option values that a split run's controllers share (`--regions`,
//! `--controller`), as clap value parsers.

/// `--regions`: at least one glob. An empty value (an unset CI variable) or only commas
/// and blanks would otherwise select every region.
pub(super) fn parse_regions(text: &str) -> Result<String, String> {
    if text.split(',').all(|glob| glob.trim().is_empty()) {
        return Err(format!(
            "{text:?} names no region: give one or more region globs, e.g. 'cn-*' or 'eu-*,us-*' (leave --regions out to work on every region)"
        ));
    }
    Ok(text.to_string())
}

/// The longest `--controller` name.
pub const MAX_CONTROLLER_NAME: usize = 64;

/// `--controller`: a short name of printable characters, since other operators' `pony
/// status` prints it (a newline or an escape sequence would forge their lines).
pub(super) fn parse_controller(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the controller name is empty".into());
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the controller name holds the control character {:?}: use printable characters only",
            c
        ));
    }
    let length = text.chars().count();
    if length > MAX_CONTROLLER_NAME {
        return Err(format!(
            "the controller name is {length} characters long: give at most {MAX_CONTROLLER_NAME}"
        ));
    }
    Ok(text.to_string())
}
