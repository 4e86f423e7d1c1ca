//! Host ranges: `mx-gz-[01:40]` expands to `mx-gz-01` … `mx-gz-40`, zero padding kept,
//! and `10.20.1.[11:50]` to forty addresses. Letters work too: `web-[a:c]`.

use std::fmt;

/// Why a range could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    pub text: String,
    pub reason: String,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad range `{}`: {}", self.text, self.reason)
    }
}

/// Expands every `[start:end]` in `text`; text without brackets is returned as is.
pub fn expand(text: &str) -> Result<Vec<String>, RangeError> {
    let fail = |reason: &str| RangeError {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let Some(open) = text.find('[') else {
        if text.contains(']') {
            return Err(fail("`]` without `[`"));
        }
        return Ok(vec![text.to_string()]);
    };
    let close = text[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| fail("`[` is never closed; write it as `[01:40]`"))?;
    let inner = &text[open + 1..close];
    let (start, end) = inner
        .split_once(':')
        .ok_or_else(|| fail("expected `[start:end]`, e.g. `[01:40]`"))?;
    let items = range_items(start, end).map_err(|reason| fail(&reason))?;
    let prefix = &text[..open];
    let suffixes = expand(&text[close + 1..]).map_err(|e| RangeError {
        text: text.to_string(),
        reason: e.reason,
    })?;
    let mut out = Vec::with_capacity(items.len() * suffixes.len());
    for item in &items {
        for suffix in &suffixes {
            out.push(format!("{prefix}{item}{suffix}"));
        }
    }
    Ok(out)
}

fn range_items(start: &str, end: &str) -> Result<Vec<String>, String> {
    if start.is_empty() || end.is_empty() {
        return Err("start and end must both be given, e.g. `[01:40]`".into());
    }
    if let (Ok(first), Ok(last)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if !start.bytes().all(|b| b.is_ascii_digit()) || !end.bytes().all(|b| b.is_ascii_digit()) {
            return Err("numbers must be plain digits".into());
        }
        if first > last {
            return Err(format!("start {start} is greater than end {end}"));
        }
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        return Ok((first..=last).map(|n| format!("{n:0width$}")).collect());
    }
    let (a, b) = (single_letter(start), single_letter(end));
    match (a, b) {
        (Some(a), Some(b)) if a <= b && a.is_ascii_lowercase() == b.is_ascii_lowercase() => {
            Ok((a..=b).map(|c| c.to_string()).collect())
        }
        (Some(a), Some(b)) if a > b => Err(format!("start `{a}` comes after end `{b}`")),
        _ => Err(format!(
            "`{start}:{end}` is neither a number range like `01:40` nor a letter range like `a:f`"
        )),
    }
}

fn single_letter(text: &str) -> Option<char> {
    let mut chars = text.chars();
    let c = chars.next()?;
    (chars.next().is_none() && c.is_ascii_alphabetic()).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_zero_padding() {
        let hosts = expand("mx-gz-[01:40]").unwrap();
        assert_eq!(hosts.len(), 40);
        assert_eq!(hosts[0], "mx-gz-01");
        assert_eq!(hosts[39], "mx-gz-40");
        assert_eq!(expand("h[8:10]").unwrap(), vec!["h8", "h9", "h10"]);
        assert_eq!(
            expand("h[0098:0100]").unwrap(),
            vec!["h0098", "h0099", "h0100"]
        );
    }

    #[test]
    fn addresses_and_letters() {
        let addrs = expand("10.20.1.[11:50]").unwrap();
        assert_eq!(addrs.len(), 40);
        assert_eq!(addrs[39], "10.20.1.50");
        assert_eq!(
            expand("web-[a:c]").unwrap(),
            vec!["web-a", "web-b", "web-c"]
        );
        assert_eq!(
            expand("r[1:2]-[a:b]").unwrap(),
            vec!["r1-a", "r1-b", "r2-a", "r2-b"]
        );
        assert_eq!(expand("plain").unwrap(), vec!["plain"]);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(expand("mx-[40:01]").unwrap_err().reason.contains("greater"));
        assert!(expand("mx-[01:40")
            .unwrap_err()
            .reason
            .contains("never closed"));
        assert!(expand("mx-[01-40]").is_err());
        assert!(expand("mx-[a:9]").is_err());
        assert!(expand("mx-[:9]").is_err());
        assert!(expand("mx-01]").is_err());
    }
}
