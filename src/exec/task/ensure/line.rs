//! `line:` (Ansible's `lineinfile`): the file is read from the host, edited here (one
//! regex engine, so a run and `--check --diff` agree to the byte), and written back
//! only when it changed, by a script that first checks that the file is still the one
//! read (else an edit on the host between the two would be lost), writes the new content
//! beside it with the old file's mode and owner, and moves it over the old one.

use crate::playbook::ensure::{Line, Presence};
use crate::shell::quote;

/// The new content of the file and what changed, when something does.
#[derive(Debug, PartialEq, Eq)]
pub struct Edit {
    pub content: Vec<u8>,
    /// E.g. `replaced line 3` or `appended a line` (the file is named by the caller).
    pub what: String,
}

/// The file's content after ensuring `line` (`old` is None when there is no file):
/// None when it is already as asked. A missing file without `create: true` is an error.
pub fn edit(old: Option<&[u8]>, line: &Line) -> Result<Option<Edit>, String> {
    let Some(old) = old else {
        return match (line.state, line.create) {
            (Presence::Absent, _) => Ok(None),
            (Presence::Present, false) => Err(format!(
                "{} does not exist (give `create: true` to create it)",
                line.path
            )),
            (Presence::Present, true) => Ok(Some(Edit {
                content: format!("{}\n", line.line.as_deref().unwrap_or_default()).into_bytes(),
                what: "created the file with the line".into(),
            })),
        };
    };
    let regexp = match &line.regexp {
        Some(re) => Some(regex::bytes::Regex::new(re).map_err(|e| format!("bad regexp: {e}"))?),
        None => None,
    };
    let ends_with_newline = old.last() == Some(&b'\n');
    let body = if ends_with_newline {
        &old[..old.len() - 1]
    } else {
        old
    };
    let mut lines: Vec<&[u8]> = if old.is_empty() {
        Vec::new()
    } else {
        body.split(|&b| b == b'\n').collect()
    };
    let wanted = line.line.as_deref().map(str::as_bytes);
    let matches = |l: &[u8]| match (&regexp, wanted) {
        (Some(re), _) => re.is_match(l),
        (None, Some(w)) => l == w,
        (None, None) => false,
    };
    let what = match line.state {
        Presence::Absent => {
            let before = lines.len();
            lines.retain(|l| !matches(l));
            match before - lines.len() {
                0 => return Ok(None),
                1 => "removed 1 line".to_string(),
                n => format!("removed {n} lines"),
            }
        }
        Presence::Present => {
            let wanted = wanted.unwrap_or_default();
            let last = regexp
                .as_ref()
                .and_then(|re| lines.iter().rposition(|l| re.is_match(l)));
            match last {
                Some(i) if lines[i] == wanted => return Ok(None),
                Some(i) => {
                    lines[i] = wanted;
                    format!("replaced line {}", i + 1)
                }
                None if lines.contains(&wanted) => return Ok(None),
                None => {
                    lines.push(wanted);
                    "appended the line".to_string()
                }
            }
        }
    };
    let mut content = lines.join(&b'\n');
    // A file keeps its last newline; one that gains a line ends with one.
    if !lines.is_empty() && (ends_with_newline || line.state == Presence::Present) {
        content.push(b'\n');
    }
    Ok(Some(Edit { content, what }))
}

/// The script that prints `absent`, or `file` and then the file's bytes.
pub fn read_script(path: &str) -> String {
    let f = quote(path);
    format!(
        "if [ ! -e {f} ]; then echo absent; elif [ ! -f {f} ]; then printf '%s is not a regular file\\n' {f} >&2; exit 1; \
         else echo file && cat -- {f}; fi"
    )
}

/// The script that writes `content` over `path`, if the file there still has the sha256
/// `old` (or is still absent), and says so on its last line.
pub fn write_script(path: &str, old: Option<&str>, content: &[u8]) -> String {
    let encoded = base64(content);
    format!(
        r#"f={f}; old={old}
[ -L "$f" ] && f=$(readlink -f -- "$f")
cur=absent; [ -e "$f" ] && cur=$(sha256sum < "$f" | cut -c1-64)
[ "$cur" = "$old" ] || {{ echo "$f changed on the host while pony edited it: run the step again" >&2; exit 1; }}
d=$(dirname -- "$f"); [ -d "$d" ] || mkdir -p -- "$d" || exit 1
t=$(mktemp "$d/.pony-line.XXXXXX") || exit 1
if ! base64 -d > "$t" <<'PONY_LINE_END'
{encoded}
PONY_LINE_END
then rm -f -- "$t"; exit 1; fi
if [ -e "$f" ]; then chmod --reference="$f" -- "$t" && {{ chown --reference="$f" -- "$t" 2>/dev/null || true; }}
else chmod 644 -- "$t"; fi || {{ rm -f -- "$t"; exit 1; }}
mv -f -- "$t" "$f" || {{ rm -f -- "$t"; exit 1; }}
echo "PONY-RESULT changed""#,
        f = quote(path),
        old = old.unwrap_or("absent"),
    )
}

/// Standard base64 with lines of 76 characters (what `base64 -d` reads).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 57 + 4);
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push(b'\n');
        }
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (j, &b)| n | (b as u32) << (16 - 8 * j));
        for j in 0..4 {
            out.push(if j <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * j) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(yaml: &str) -> Line {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn edited(old: &str, yaml: &str) -> Option<(String, String)> {
        edit(Some(old.as_bytes()), &line(yaml))
            .unwrap()
            .map(|e| (String::from_utf8(e.content).unwrap(), e.what))
    }

    #[test]
    fn present_replaces_the_last_match_else_appends_and_is_idempotent() {
        let yaml = r"{ path: /x, regexp: '^b\s*=', line: 'b = 3' }";
        assert_eq!(
            edited("a = 1\nb = 2\nc\nb=9\n", yaml),
            Some(("a = 1\nb = 2\nc\nb = 3\n".into(), "replaced line 4".into()))
        );
        assert_eq!(edited("a = 1\nb = 3\n", yaml), None);
        // No match: appended (a missing last newline is added first); then in place.
        assert_eq!(
            edited("a = 1", yaml),
            Some(("a = 1\nb = 3\n".into(), "appended the line".into()))
        );
        // No match but the exact line is there (elsewhere): nothing to do.
        assert_eq!(
            edited(
                "b = 3 \nb = 3\n",
                r"{ path: /x, regexp: '^z', line: 'b = 3' }"
            ),
            None
        );
        assert_eq!(
            edited("", "{ path: /x, line: hello }"),
            Some(("hello\n".into(), "appended the line".into()))
        );
    }

    #[test]
    fn absent_removes_every_match_and_a_missing_file_needs_create() {
        assert_eq!(
            edited("a\n#x\nb\n#y", "{ path: /x, regexp: '^#', state: absent }"),
            Some(("a\nb".into(), "removed 2 lines".into()))
        );
        assert_eq!(edited("a\n", "{ path: /x, line: b, state: absent }"), None);
        let missing = edit(None, &line("{ path: /etc/x, line: a }")).unwrap_err();
        assert_eq!(
            missing,
            "/etc/x does not exist (give `create: true` to create it)"
        );
        let created = edit(None, &line("{ path: /x, line: a, create: true }")).unwrap();
        assert_eq!(created.unwrap().content, b"a\n");
        assert_eq!(
            edit(None, &line("{ path: /x, line: a, state: absent }")),
            Ok(None)
        );
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let long = base64(&[0xffu8; 60]);
        assert_eq!(long.lines().next().unwrap().len(), 76);
        assert!(long.starts_with("////"));
    }
}
