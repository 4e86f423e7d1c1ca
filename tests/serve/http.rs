//! One plain HTTP/1.1 request over loopback, for `pony serve` and chromedriver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One HTTP/1.1 request over loopback; (status, head, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    // A bound for a hung peer, not a speed.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    // Read the head, then as much body as it announces (chromedriver keeps the
    // connection open), or to the end.
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "{method} {path}: no answer"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let body = match length {
        Some(n) => {
            let mut bytes = vec![0; n];
            reader.read_exact(&mut bytes).unwrap();
            String::from_utf8(bytes).unwrap()
        }
        None => {
            let mut rest = String::new();
            reader.read_to_string(&mut rest).unwrap();
            rest
        }
    };
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, body)
}
