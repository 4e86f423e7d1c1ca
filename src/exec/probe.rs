//! Protocol probes (SPEC §8): check a service the way a client sees it, through a port
//! forward over the host's existing connection: SMTP (banner 220, EHLO 250, optional
//! STARTTLS offered), LMTP (220, LHLO 250), IMAP (`* OK`, CAPABILITY), HTTP (status and
//! optional body match) and plain TCP.

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
    match tokio::time::timeout(limit, run(connection, probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "probe timed out after {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn run(connection: &dyn Connection, probe: &Probe) -> Result<String, String> {
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

/// An IMAP quoted string.
fn imap_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
