//! Who may press the gate buttons of `pony serve`: whoever presents the token of
//! `--token-file` (as `?token=` once, after which a cookie carries it, or as an
//! `Authorization: Bearer` header). Every POST also carries a CSRF token bound to that
//! token, which a page from another origin cannot know, so a browser holding the cookie
//! cannot be made to send a command by someone else's page. Without a token file the
//! server is read-only.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The cookie that carries the token after `?token=`.
pub const COOKIE: &str = "pony_token";

/// The token of `--token-file`, if any.
#[derive(Debug, Clone, Default)]
pub struct Access {
    token: Option<String>,
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--token-file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--token-file {file}: the file is empty (or only whitespace)")]
    Empty { file: String },
}

impl Access {
    /// Read-only: no request may change a run.
    pub fn read_only() -> Access {
        Access { token: None }
    }

    /// The token is the file's first line, without surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<Access, TokenError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            file: file.clone(),
            source,
        })?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            return Err(TokenError::Empty { file });
        }
        Ok(Access { token: Some(token) })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the token (compared in constant time).
    pub fn is_token(&self, given: &str) -> bool {
        match &self.token {
            Some(token) => same(token.as_bytes(), given.as_bytes()),
            None => false,
        }
    }

    /// Whether the request carries the token, in its cookie or its bearer header.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        presented(headers).is_some_and(|t| self.is_token(&t))
    }

    /// The CSRF token of forms: a digest of the token, so only a holder of the token
    /// knows it, and it changes when the token does.
    pub fn csrf(&self) -> Option<String> {
        self.token.as_ref().map(|token| {
            let mut digest = Sha256::new();
            digest.update(b"pony serve csrf\0");
            digest.update(token.as_bytes());
            hex::encode(digest.finalize())
        })
    }

    /// Whether `given` is the CSRF token.
    pub fn csrf_ok(&self, given: &str) -> bool {
        self.csrf()
            .is_some_and(|csrf| same(csrf.as_bytes(), given.as_bytes()))
    }
}

/// The token a request presents: its bearer header, else its cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_string());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Equal bytes, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value that keeps the token for the rest of the visit.
pub fn cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_is_bound_to_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let access = Access::from_file(&file).unwrap();
        assert!(access.is_token("s3cret"));
        assert!(!access.is_token("s3cre"));
        let csrf = access.csrf().unwrap();
        assert!(access.csrf_ok(&csrf));
        std::fs::write(&file, "other").unwrap();
        let other = Access::from_file(&file).unwrap();
        assert!(!other.csrf_ok(&csrf));
        assert!(Access::read_only().csrf().is_none());
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=b; pony_token=s3cret".parse().unwrap());
        assert!(access.allows(&headers));
        assert!(!other.allows(&headers));
    }
}
