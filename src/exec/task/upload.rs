//! Idempotent uploads (`upload:`, `template:`): the content's sha256 is compared with the
//! file in place first; a new file is written beside its destination (or in /tmp under
//! `become`) and moved over it, so a reader never sees half a file.

use super::render::with_become;
use super::{run_command, sha256, skipped, TaskRun, GUARD_TIMEOUT};
use crate::exec::hosts::HostPool;
use crate::shell::quote as shell_quote;
use crate::transport::TransportError;

pub(super) async fn put(
    pool: &HostPool,
    host: usize,
    content: &[u8],
    dest: &str,
    mode: Option<u32>,
    become_root: bool,
    mut run: TaskRun,
) -> TaskRun {
    run.attempts = 1;
    let want = sha256(content);
    match in_place(pool, host, dest, &want, become_root, &mut run).await {
        Ok(true) => return skipped(run, "upload: content already in place".into()),
        Ok(false) => {}
        Err(e) => return run.failed(&e),
    }
    let temp = match temp_path(pool, host, dest, &want, become_root, &mut run).await {
        Ok(temp) => temp,
        Err(e) => return run.failed(&e),
    };
    let connection = match pool.connection(host).await {
        Ok(c) => c,
        Err(e) => return run.failed(&e),
    };
    run.commands
        .push(format!("write {} bytes to {temp}", content.len()));
    if let Err(e) = connection.write_file(&temp, content).await {
        return run.failed(&e);
    }
    let install = install_command(&temp, dest, mode, become_root);
    match run_command(pool, host, &install, Some(GUARD_TIMEOUT), &mut run).await {
        Ok(out) => run.with_output(out),
        Err(e) => run.failed(&e),
    }
}

/// Whether `dest` already holds the content whose sha256 is `want`.
async fn in_place(
    pool: &HostPool,
    host: usize,
    dest: &str,
    want: &str,
    become_root: bool,
    run: &mut TaskRun,
) -> Result<bool, TransportError> {
    let check = format!("sha256sum {} 2>/dev/null || true", shell_quote(dest));
    let out = run_command(
        pool,
        host,
        &with_become(check, become_root),
        Some(GUARD_TIMEOUT),
        run,
    )
    .await?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        == Some(want))
}

/// Where the new content is written first: beside `dest` (its folder made first), or in
/// /tmp under `become` (the user may not write beside it).
async fn temp_path(
    pool: &HostPool,
    host: usize,
    dest: &str,
    want: &str,
    become_root: bool,
    run: &mut TaskRun,
) -> Result<String, TransportError> {
    let file_name = std::path::Path::new(dest)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload");
    if become_root {
        return Ok(format!("/tmp/.pony-{}-{}", file_name, &want[..12]));
    }
    let dir = std::path::Path::new(dest)
        .parent()
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = if dir.is_empty() { ".".to_string() } else { dir };
    run_command(
        pool,
        host,
        &format!("mkdir -p {}", shell_quote(&dir)),
        Some(GUARD_TIMEOUT),
        run,
    )
    .await?;
    Ok(format!("{dir}/.{file_name}.pony-tmp"))
}

/// Moves the written file over `dest` (with its mode; under `become`, its folder made).
fn install_command(temp: &str, dest: &str, mode: Option<u32>, become_root: bool) -> String {
    let chmod = mode
        .map(|m| format!("chmod {m:o} {} && ", shell_quote(temp)))
        .unwrap_or_default();
    let mkdir = if become_root {
        format!("mkdir -p \"$(dirname {})\" && ", shell_quote(dest))
    } else {
        String::new()
    };
    with_become(
        format!(
            "{mkdir}{chmod}mv -f {} {}",
            shell_quote(temp),
            shell_quote(dest)
        ),
        become_root,
    )
}
