use super::*;

/// Every environment variable the command line reads, and `PONY_PROGRESS`, is one
/// of pony's own settings that no child of pony gets ([`crate::secret::OWN_SETTINGS`]).
#[test]
fn the_withheld_settings_are_the_command_lines_variables() {
    fn collect(command: &clap::Command, names: &mut std::collections::BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, names);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    collect(&<Cli as clap::CommandFactory>::command(), &mut names);
    names.insert(crate::settings::PROGRESS_ENV.to_string());
    let listed: std::collections::BTreeSet<String> = crate::secret::OWN_SETTINGS
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert_eq!(names, listed);
}
