//! A real terminal for the tests of what a person at one sees: a detached tmux session
//! running one shell line, killed when dropped (also when the test fails).

use std::process::Command;
use std::time::{Duration, Instant};

/// `tmux ARGS`; its stdout.
pub fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed for terminal tests: apt-get install -y tmux");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A tmux session of the test's own.
pub struct Session {
    pub name: String,
    join_wrapped: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.name]);
    }
}

impl Session {
    /// Starts `command` (a shell line) in a new detached session `name`, `width` columns
    /// by 50 lines.
    pub fn start(name: &str, width: u16, command: &str) -> Session {
        let session = Session {
            name: name.to_string(),
            join_wrapped: false,
        };
        let width = width.to_string();
        tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &width,
            "-y",
            "50",
            &super::clean_shell_line(command),
        ]);
        session
    }

    /// The screen shows lines wrapped at the session's width joined again (`tmux -J`).
    pub fn joining_wrapped_lines(mut self) -> Session {
        self.join_wrapped = true;
        self
    }

    /// The screen with its last 200 lines of history.
    pub fn screen(&self) -> String {
        let mut args = vec!["capture-pane", "-p"];
        if self.join_wrapped {
            args.push("-J");
        }
        args.extend(["-t", &self.name, "-S", "-200"]);
        tmux(&args)
    }

    /// Waits until the screen shows `needle` and returns the screen; fails showing it
    /// after 30 s (a bound for a hung test, not a speed).
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?} on the terminal:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `y` and Enter.
    pub fn answer_yes(&self) {
        tmux(&["send-keys", "-t", &self.name, "y", "Enter"]);
    }
}
