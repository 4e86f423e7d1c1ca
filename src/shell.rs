//! POSIX shell words: the one quoting function for every command pony builds for `sh`
//! (task commands, uploads, the dead man's switch, transport wrappers) and for the
//! commands its messages tell a person to type.
//!
//! Not the `shlex` crate: its `try_quote` picks double quotes or `'"'"'` splices for a
//! single quote, while templates' `quote` filter promises (and playbooks' tests pin) the
//! classic `'it'\''s'` form.

/// `text` as one shell word: as is when every byte is plain (letters, digits and
/// `-_./=:,@%+`), else single-quoted, a `'` inside becoming `'\''` (`it's` → `'it'\''s'`;
/// the empty word is `''`).
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn plain_words_stay_and_the_rest_is_single_quoted() {
        assert_eq!(quote("/srv/mail"), "/srv/mail");
        assert_eq!(quote("a=b,c:d@e%f+g"), "a=b,c:d@e%f+g");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("/srv/pony state"), "'/srv/pony state'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        // What sh reads back is the text itself.
        for text in [
            "it's here",
            "a\"b\\c",
            "*?[x]",
            "tab\there",
            "new\nline",
            "'",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(text)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
        }
    }
}
