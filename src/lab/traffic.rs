//! Mail traffic for the lab, and an exact count of it. The generator sends uniquely
//! numbered messages over real SMTP to the MTAs of each region at a steady rate, as a
//! sending MTA does: on a 4xx or a refused connection it tries the region's next MTA, and
//! when none takes the message it tries again later. The checker reads every store's
//! Maildirs and reports, per message number, what was delivered, lost or duplicated.

use super::mail::{MailLab, DOMAIN};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The MTAs one region's mail goes to.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub mtas: Vec<(String, SocketAddr)>,
}

/// The MTAs of every region of a mail lab.
pub fn regions(lab: &MailLab) -> Vec<Region> {
    lab.mtas_by_region()
        .into_iter()
        .map(|(name, mtas)| Region {
            name,
            mtas: mtas
                .iter()
                .map(|h| (h.name.clone(), SocketAddr::from((h.address, 25))))
                .collect(),
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Messages per second, over all regions.
    pub rate: f64,
    /// How long a message that no MTA takes waits before the next round of tries.
    pub retry_after: Duration,
    /// After the stop signal, how long to keep retrying messages not yet taken.
    pub give_up_after: Duration,
    /// SMTP connections open at once per region, as a sending MTA limits its
    /// concurrency per destination (Postfix's default is 20): above what the MTAs take,
    /// messages wait in the sender instead of storming the MTAs.
    pub connections_per_region: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate: 20.0,
            retry_after: Duration::from_millis(500),
            give_up_after: Duration::from_secs(120),
            connections_per_region: 20,
        }
    }
}

/// What the generator did.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Tells this run's messages from any other's in the Maildirs.
    pub tag: String,
    /// Message number → (region, the MTA that answered 250 to its DATA).
    pub accepted: BTreeMap<u64, (String, String)>,
    /// Messages some MTA refused with a 5xx (a bounce: must never happen).
    pub rejected: BTreeMap<u64, String>,
    /// Messages no MTA took before the generator gave up.
    pub given_up: Vec<u64>,
    /// Temporary refusals (4xx, refused or dropped connections) met along the way.
    pub deferrals: u64,
}

enum Attempt {
    Accepted,
    /// 4xx, refused, dropped: another MTA, or later.
    Temporary,
    Rejected(String),
}

/// Sends until `stop` turns true, then finishes the messages already started.
pub async fn send(regions: Vec<Region>, options: Options, mut stop: watch::Receiver<bool>) -> Sent {
    let tag = format!(
        "{:x}",
        std::process::id() as u64 * 1_000_003 + now_nanos() % 1_000_003
    );
    let sent = Arc::new(Mutex::new(Sent {
        tag: tag.clone(),
        ..Sent::default()
    }));
    let (done_tx, done_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate.max(0.1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limits: Vec<Arc<tokio::sync::Semaphore>> = regions
        .iter()
        .map(|_| {
            Arc::new(tokio::sync::Semaphore::new(
                options.connections_per_region.max(1),
            ))
        })
        .collect();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        seq += 1;
        let r = (seq as usize) % regions.len();
        let (region, limit) = (regions[r].clone(), limits[r].clone());
        let (sent, options, tag, done) =
            (sent.clone(), options.clone(), tag.clone(), done_rx.clone());
        tasks.spawn(async move { deliver(seq, region, &limit, &options, &tag, &sent, done).await });
    }
    // Messages still being tried get `give_up_after` more.
    let grace = options.give_up_after;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let _ = done_tx.send(true);
    });
    while tasks.join_next().await.is_some() {}
    let sent = sent.lock().expect("sent").clone();
    sent
}

async fn deliver(
    seq: u64,
    region: Region,
    limit: &tokio::sync::Semaphore,
    options: &Options,
    tag: &str,
    sent: &Mutex<Sent>,
    done: watch::Receiver<bool>,
) {
    let n = region.mtas.len();
    loop {
        for i in 0..n {
            let (name, address) = &region.mtas[(seq as usize + i) % n];
            let permit = limit.acquire().await.expect("never closed");
            let result = attempt(*address, seq, &region.name, tag).await;
            drop(permit);
            match result {
                Attempt::Accepted => {
                    sent.lock()
                        .expect("sent")
                        .accepted
                        .insert(seq, (region.name.clone(), name.clone()));
                    return;
                }
                Attempt::Rejected(why) => {
                    sent.lock().expect("sent").rejected.insert(seq, why);
                    return;
                }
                Attempt::Temporary => sent.lock().expect("sent").deferrals += 1,
            }
        }
        if *done.borrow() {
            sent.lock().expect("sent").given_up.push(seq);
            return;
        }
        tokio::time::sleep(options.retry_after).await;
    }
}

async fn attempt(address: SocketAddr, seq: u64, region: &str, tag: &str) -> Attempt {
    match tokio::time::timeout(
        Duration::from_secs(10),
        transaction(address, seq, region, tag),
    )
    .await
    {
        Ok(Ok(())) => Attempt::Accepted,
        Ok(Err(Some(why))) => Attempt::Rejected(why),
        Ok(Err(None)) | Err(_) => Attempt::Temporary,
    }
}

/// One SMTP transaction. `Err(None)`: temporary (try elsewhere or later);
/// `Err(Some(reply))`: a permanent 5xx.
async fn transaction(
    address: SocketAddr,
    seq: u64,
    region: &str,
    tag: &str,
) -> Result<(), Option<String>> {
    let stream = TcpStream::connect(address).await.map_err(|_| None)?;
    let mut stream = BufReader::new(stream);
    expect(&mut stream, 220).await?;
    let body = format!(
        "From: <generator@sender.test>\r\nTo: <traffic@{DOMAIN}>\r\nSubject: pony traffic {seq}\r\nMessage-ID: <{tag}.{seq}@sender.test>\r\nX-Pony-Run: {tag}\r\nX-Pony-Seq: {seq}\r\nX-Pony-Region: {region}\r\n\r\nmessage {seq} of run {tag}\r\n.\r\n"
    );
    for (command, code) in [
        ("EHLO sender.test\r\n".to_string(), 250),
        ("MAIL FROM:<generator@sender.test>\r\n".to_string(), 250),
        (format!("RCPT TO:<traffic@{DOMAIN}>\r\n"), 250),
        ("DATA\r\n".to_string(), 354),
        (body, 250),
    ] {
        stream
            .get_mut()
            .write_all(command.as_bytes())
            .await
            .map_err(|_| None)?;
        expect(&mut stream, code).await?;
    }
    let _ = stream.get_mut().write_all(b"QUIT\r\n").await;
    Ok(())
}

async fn expect(stream: &mut BufReader<TcpStream>, wanted: u16) -> Result<(), Option<String>> {
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.map_err(|_| None)? == 0 {
            return Err(None);
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or(None)?;
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return match code {
            c if c == wanted => Ok(()),
            500..=599 => Err(Some(line.trim_end().to_string())),
            _ => Err(None),
        };
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Every message of a run, as the stores' Maildirs hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Count {
    pub sent: usize,
    pub delivered: usize,
    /// Accepted by an MTA and in no Maildir.
    pub lost: Vec<u64>,
    /// Delivered more than once: number → copies.
    pub duplicated: BTreeMap<u64, usize>,
    /// Per region: (sent, delivered).
    pub regions: BTreeMap<String, (usize, usize)>,
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} / delivered {} / lost {} / duplicated {}",
            self.sent,
            self.delivered,
            self.lost.len(),
            self.duplicated.len()
        )?;
        if !self.lost.is_empty() {
            write!(f, " (lost: {:?})", &self.lost[..self.lost.len().min(20)])?;
        }
        Ok(())
    }
}

/// Reads every store's Maildirs for the messages of `sent`.
pub fn count(lab: &MailLab, sent: &Sent) -> Count {
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    let run = format!("X-Pony-Run: {}", sent.tag);
    for store in lab.stores() {
        let Ok(users) = std::fs::read_dir(store.maildir()) else {
            continue;
        };
        for user in users.flatten() {
            for sub in ["new", "cur"] {
                let Ok(files) = std::fs::read_dir(user.path().join(sub)) else {
                    continue;
                };
                for file in files.flatten() {
                    let Ok(text) = std::fs::read_to_string(file.path()) else {
                        continue;
                    };
                    let header = text.split("\n\n").next().unwrap_or_default();
                    if !header.lines().any(|l| l.trim_end() == run) {
                        continue;
                    }
                    if let Some(seq) = header
                        .lines()
                        .find_map(|l| l.strip_prefix("X-Pony-Seq: "))
                        .and_then(|s| s.trim().parse::<u64>().ok())
                    {
                        *copies.entry(seq).or_default() += 1;
                    }
                }
            }
        }
    }
    let mut count = Count {
        sent: sent.accepted.len(),
        ..Count::default()
    };
    for (seq, (region, _)) in &sent.accepted {
        let entry = count.regions.entry(region.clone()).or_default();
        entry.0 += 1;
        match copies.get(seq) {
            None => count.lost.push(*seq),
            Some(n) => {
                count.delivered += 1;
                entry.1 += 1;
                if *n > 1 {
                    count.duplicated.insert(*seq, *n);
                }
            }
        }
    }
    count
}

/// Counts until nothing is missing any more (flushing every queue between looks), until
/// nothing can arrive any more, or until `bound`; returns the last count. Nothing can
/// arrive once every MTA's queue is empty at two looks in a row (the generator is done by
/// then, so nothing is in flight to an MTA either): a message that was accepted is in a
/// queue until its store holds it, so one in no queue and no Maildir was dropped. The
/// queues are read before the Maildirs, so a message delivered in between is counted;
/// the second look covers one relayed between two MTAs while the first read their queues.
pub async fn settle(lab: &MailLab, sent: &Sent, bound: Duration) -> Count {
    let deadline = tokio::time::Instant::now() + bound;
    let mut was_idle = false;
    loop {
        let idle = lab.queues_empty();
        let count = count(lab, sent);
        if count.lost.is_empty() || (idle && was_idle) || tokio::time::Instant::now() > deadline {
            return count;
        }
        was_idle = idle;
        lab.flush_all();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
