//! Protocol probes (SPEC §8): check a service the way a client sees it, through a port
//! forward over the host's existing connection: SMTP (banner 220, EHLO 250, optional
//! STARTTLS offered), LMTP (220, LHLO 250), IMAP (`* OK`, CAPABILITY), HTTP (status and
//! optional body match), plain TCP, and mail flow (a tagged message handed to the host's
//! MTA over SMTP, found over IMAP in the mailbox at the store, then deleted).

use crate::playbook::Probe;
use crate::transport::{Connection, Stream};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long one probe may take when the step sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one probe; `Ok` carries what was seen, `Err` why the service is not healthy.
pub async fn check(
    connection: &dyn Connection,
    probe: &Probe,
    timeout: Option<Duration>,
) -> Result<String, String> {
    let limit = timeout.unwrap_or(DEFAULT_TIMEOUT);
    match tokio::time::timeout(limit, run(connection, probe, limit)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "probe timed out after {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn run(
    connection: &dyn Connection,
    probe: &Probe,
    limit: Duration,
) -> Result<String, String> {
    let (address, port) = probe.target();
    let stream = connection
        .connect_port(address, port)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    match probe {
        Probe::Smtp {
            starttls, expect, ..
        } => smtp(&mut stream, "EHLO", *starttls, expect.as_deref()).await,
        Probe::Lmtp { expect, .. } => smtp(&mut stream, "LHLO", false, expect.as_deref()).await,
        Probe::Imap { expect, login, .. } => {
            imap(&mut stream, expect.as_deref(), login.as_ref()).await
        }
        Probe::Http {
            path, status, body, ..
        } => http(&mut stream, path, *status, body.as_deref()).await,
        Probe::Tcp { port, .. } => tcp(&mut stream, *port).await,
        Probe::Mailflow { to, imap, .. } => {
            // Its own deadline, inside the probe's bound, so that a message that never
            // arrives is reported as such (naming the hop), not as a bare time-out.
            let deadline = tokio::time::Instant::now() + limit.mul_f64(0.9);
            mailflow(connection, &mut stream, to, imap, deadline).await
        }
    }
}

type Conn = BufReader<Box<dyn Stream>>;

async fn line(stream: &mut Conn) -> Result<String, String> {
    let mut text = String::new();
    let read = stream
        .read_line(&mut text)
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    if read == 0 {
        return Err("the connection closed (nothing listening on the host's port?)".into());
    }
    Ok(text.trim_end().to_string())
}

async fn send(stream: &mut Conn, text: &str) -> Result<(), String> {
    stream
        .get_mut()
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("write failed: {e}"))
}

/// An SMTP-style reply: lines `NNN-…` ending with `NNN …`; returns the code and lines.
async fn reply(stream: &mut Conn) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let text = line(stream).await?;
        let code = text
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {text:?}"))?;
        let last = text.as_bytes().get(3) != Some(&b'-');
        lines.push(text);
        if last {
            return Ok((code, lines));
        }
    }
}

async fn smtp(
    stream: &mut Conn,
    greeting: &str,
    starttls: bool,
    expect: Option<&str>,
) -> Result<String, String> {
    let (code, banner) = reply(stream).await?;
    if code != 220 {
        return Err(format!("banner {:?}, expected 220", banner.join(" | ")));
    }
    if let Some(wanted) = expect {
        if !banner.join(" ").contains(wanted) {
            return Err(format!(
                "banner {:?} does not contain {wanted:?}",
                banner.join(" | ")
            ));
        }
    }
    send(stream, &format!("{greeting} pony-probe\r\n")).await?;
    let (code, lines) = reply(stream).await?;
    if code != 250 {
        return Err(format!(
            "{greeting} answered {:?}, expected 250",
            lines.join(" | ")
        ));
    }
    if starttls
        && !lines
            .iter()
            .any(|l| l.to_ascii_uppercase().contains("STARTTLS"))
    {
        return Err(format!(
            "STARTTLS is not offered ({greeting} answered {:?})",
            lines.join(" | ")
        ));
    }
    let _ = send(stream, "QUIT\r\n").await;
    Ok(format!(
        "{} / {greeting} 250{}",
        banner[0],
        if starttls { ", STARTTLS offered" } else { "" }
    ))
}

async fn imap(
    stream: &mut Conn,
    expect: Option<&str>,
    login: Option<&crate::playbook::raw::ImapLogin>,
) -> Result<String, String> {
    let greeting = line(stream).await?;
    if !(greeting.starts_with("* OK") || greeting.starts_with("* PREAUTH")) {
        return Err(format!("greeting {greeting:?}, expected `* OK`"));
    }
    if let Some(wanted) = expect {
        if !greeting.contains(wanted) {
            return Err(format!("greeting {greeting:?} does not contain {wanted:?}"));
        }
    }
    if let Some(login) = login {
        send(
            stream,
            &format!(
                "p0 LOGIN {} {}\r\n",
                imap_quote(&login.user),
                imap_quote(&login.password)
            ),
        )
        .await?;
        loop {
            let text = line(stream).await?;
            if let Some(status) = text.strip_prefix("p0 ") {
                if !status.starts_with("OK") {
                    return Err(format!("LOGIN as {} answered {status:?}", login.user));
                }
                break;
            }
        }
    }
    send(stream, "p1 CAPABILITY\r\n").await?;
    let mut capability = None;
    loop {
        let text = line(stream).await?;
        if text.starts_with("* CAPABILITY") {
            capability = Some(text);
        } else if let Some(status) = text.strip_prefix("p1 ") {
            if !status.starts_with("OK") {
                return Err(format!("CAPABILITY answered {text:?}"));
            }
            break;
        }
    }
    let _ = send(stream, "p2 LOGOUT\r\n").await;
    capability
        .map(|c| format!("{greeting} / {c}"))
        .ok_or_else(|| "no `* CAPABILITY` line".into())
}

async fn http(
    stream: &mut Conn,
    path: &str,
    status: u16,
    body: Option<&str>,
) -> Result<String, String> {
    send(stream, &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: pony-probe\r\nConnection: close\r\n\r\n")).await?;
    let mut response = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read failed: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    if code != status {
        return Err(format!(
            "{path} answered {status_line:?}, expected status {status}"
        ));
    }
    let content = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    if let Some(wanted) = body {
        if !content.contains(wanted) {
            return Err(format!(
                "{path} answered {code} but the body does not contain {wanted:?}"
            ));
        }
    }
    Ok(status_line.to_string())
}

/// Over a port forward the local end always connects; a closed remote port shows as
/// the stream ending at once, while a live service either talks or waits for us.
async fn tcp(stream: &mut Conn, port: u16) -> Result<String, String> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
        Ok(Ok(0)) => Err(format!(
            "port {port} closed the connection at once (nothing listening?)"
        )),
        Ok(Err(e)) => Err(format!("port {port}: {e}")),
        _ => Ok(format!("port {port} accepts connections")),
    }
}

/// Hands a tagged message to the MTA on `smtp`, then looks for it in the mailbox over
/// IMAP until `deadline`; deletes what it finds. `Ok` is the latency in seconds (what a
/// `compare` check reads), from the MTA's `250` after DATA to the message being found.
async fn mailflow(
    connection: &dyn Connection,
    smtp: &mut Conn,
    to: &str,
    imap: &crate::playbook::raw::MailflowImap,
    deadline: tokio::time::Instant,
) -> Result<String, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let tag = format!(
        "{nanos:x}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let hop = |what: String| format!("smtp (the MTA): {what}");
    let (code, banner) = reply(smtp).await.map_err(hop)?;
    if code != 220 {
        return Err(hop(format!(
            "banner {:?}, expected 220",
            banner.join(" | ")
        )));
    }
    let commands = [
        ("EHLO pony-probe".to_string(), 250),
        ("MAIL FROM:<pony-probe@pony.invalid>".to_string(), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_string(), 354),
    ];
    for (command, wanted) in commands {
        send(smtp, &format!("{command}\r\n")).await.map_err(hop)?;
        let (code, lines) = reply(smtp).await.map_err(hop)?;
        if code != wanted {
            let why = match code / 100 {
                4 => " (the MTA defers: drained, or it cannot reach its next hop)",
                5 => " (the MTA refuses)",
                _ => "",
            };
            return Err(hop(format!(
                "{command} answered {:?}{why}",
                lines.join(" | ")
            )));
        }
    }
    let message = format!(
        "From: <pony-probe@pony.invalid>\r\nTo: <{to}>\r\nSubject: pony mail-flow probe {tag}\r\nMessage-ID: <{tag}@pony.invalid>\r\nX-Pony-Probe: {tag}\r\n\r\nA mail-flow probe of pony; it deletes itself once found.\r\n.\r\n"
    );
    send(smtp, &message).await.map_err(hop)?;
    let (code, lines) = reply(smtp).await.map_err(hop)?;
    if code != 250 {
        return Err(hop(format!(
            "the message was answered {:?}",
            lines.join(" | ")
        )));
    }
    let accepted = tokio::time::Instant::now();
    let queued = lines.join(" ");
    let _ = send(smtp, "QUIT\r\n").await;
    let mailbox = format!("{}'s mailbox at {}:{}", imap.user, imap.address, imap.port);
    loop {
        // Each look is bounded by what is left, so that a slow IMAP session cannot turn
        // the answer into the probe's bare time-out.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, find_and_delete(connection, imap, &tag)).await {
            Ok(Ok(true)) => {
                return Ok(format!("{:.3}", accepted.elapsed().as_secs_f64()));
            }
            Ok(Ok(false)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(Err(e)) => return Err(format!("imap ({mailbox}): {e}")),
            Ok(Ok(false)) | Err(_) => {
                return Err(format!(
                    "delivery: the MTA took the message ({queued}) but it did not reach {mailbox} within {:.1}s (the MTA's next hop, e.g. the store's LMTP, down? see the MTA's queue)",
                    accepted.elapsed().as_secs_f64()
                ));
            }
        }
    }
}

/// One IMAP session: whether the message tagged `tag` is in the INBOX (deleted if so).
async fn find_and_delete(
    connection: &dyn Connection,
    imap: &crate::playbook::raw::MailflowImap,
    tag: &str,
) -> Result<bool, String> {
    let stream = connection
        .connect_port(&imap.address, imap.port)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    let greeting = line(&mut stream).await?;
    if !greeting.starts_with("* OK") {
        return Err(format!("greeting {greeting:?}, expected `* OK`"));
    }
    let login = format!(
        "LOGIN {} {}",
        imap_quote(&imap.user),
        imap_quote(&imap.password)
    );
    command(
        &mut stream,
        "m1",
        &login,
        &format!("LOGIN as {}", imap.user),
    )
    .await?;
    command(&mut stream, "m2", "SELECT INBOX", "SELECT INBOX").await?;
    let search = format!("UID SEARCH HEADER X-Pony-Probe {}", imap_quote(tag));
    let found = command(&mut stream, "m3", &search, "UID SEARCH").await?;
    let uids: Vec<String> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect();
    if !uids.is_empty() {
        let set = uids.join(",");
        let flag = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
        command(&mut stream, "m4", &flag, "UID STORE").await?;
        // Only these messages: a plain EXPUNGE would also remove what a user deleted.
        command(
            &mut stream,
            "m5",
            &format!("UID EXPUNGE {set}"),
            "UID EXPUNGE",
        )
        .await?;
    }
    let _ = send(&mut stream, "m6 LOGOUT\r\n").await;
    Ok(!uids.is_empty())
}

/// Sends an IMAP command and reads to its tagged answer; the untagged lines before it.
async fn command(
    stream: &mut Conn,
    tag: &str,
    text: &str,
    what: &str,
) -> Result<Vec<String>, String> {
    send(stream, &format!("{tag} {text}\r\n")).await?;
    let mut untagged = Vec::new();
    loop {
        let reply = line(stream).await?;
        if let Some(status) = reply.strip_prefix(&format!("{tag} ")) {
            if status.starts_with("OK") {
                return Ok(untagged);
            }
            return Err(format!("{what} answered {status:?}"));
        }
        untagged.push(reply);
    }
}

/// An IMAP quoted string.
fn imap_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
