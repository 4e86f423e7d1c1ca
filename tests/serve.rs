//! `pony serve` against a real run on local hosts held at an approval gate: Debian's
//! headless Chromium loads the run page (hosts per region, the page's event stream
//! swapped into the DOM, a screenshot in target/ for people), the approve button is
//! there with the token and absent without; a POST without the token (or without its
//! CSRF token) gets 403 and leaves the journal as it was; with both, the gate is
//! approved (journaled, the run goes on), the event stream shows the hosts done, and
//! `/metrics` parses as Prometheus text with the journal's host counts.
//! The page shows the run's ETA (the very value `pony status --output json` gives for the
//! same journal) and its timeline drawn from the journal, with the simulation kept by
//! `pony simulate --save` of the same files beside it (and without one, the real one
//! only); `examples/grafana/`'s dashboard asks only for metrics `/metrics` exports.
//!
//! Nothing waits on time: the test waits on journal records, the server's first line,
//! events of the stream and the deploy's end.

#[path = "serve/dashboard.rs"]
mod dashboard;
#[path = "serve/http.rs"]
mod http;
mod support;

use http::http;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{deploy_args, pony, text, wait_until, write_plan, Reaped, TINY_INVENTORY};

const GATED: &str = r#"
name: served
strategy:
  waves:
    - { name: canary, regions: [r1], approve: true }
    - { name: rest, regions: ["*"] }
steps:
  - { name: mark, run: "touch marked" }
  - { name: check, needs: [mark], run: "test -e marked && echo checked" }
"#;

const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];
const TOKEN: &str = "t0ken-for-the-test-0123456789abcdef";

/// Debian's chromedriver (package `chromium-driver`, which brings `chromium`), or a
/// failure that says how to install it (never a skip).
fn chromedriver() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromedriver");
    assert!(
        path.exists() && Path::new("/usr/bin/chromium").exists(),
        "tests/serve.rs needs Debian's headless Chromium and its driver: \
         `apt-get install chromium chromium-driver` (scripts/test installs them)"
    );
    path
}

/// A headless Chromium driven over WebDriver (plain HTTP and JSON) by chromedriver on a
/// loopback port; both are killed (by pid) when it drops.
struct Browser {
    driver: Reaped,
    addr: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Reaped::new(
            Command::new(chromedriver())
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = format!("127.0.0.1:{port}");
        wait_until("chromedriver to listen", || {
            TcpStream::connect(&addr).is_ok()
        });
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"],
        }}}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let answer = browser.call("POST", "/session", capabilities);
        browser.session = answer["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let json = ("Content-Type", "application/json");
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, _, text) = http(&self.addr, method, path, &[json], &body);
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn session(&self, method: &str, what: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(method, &format!("/session/{}{what}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session("POST", "/url", serde_json::json!({ "url": url }));
    }

    /// A script's value in the page.
    fn run(&self, script: &str) -> serde_json::Value {
        self.session(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
    }

    /// The DOM once `script` returns true in the page.
    fn dom_when(&self, what: &str, script: &str) -> String {
        wait_until(what, || self.run(script) == serde_json::Value::Bool(true));
        self.run("return document.documentElement.outerHTML")
            .as_str()
            .unwrap()
            .to_string()
    }

    fn screenshot(&self, file: &Path) {
        use base64::Engine;
        let png = self.session("GET", "/screenshot", serde_json::Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(file, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(|| http(&self.addr, "DELETE", &path, &[], ""));
        }
        let _ = self.driver.child().kill();
    }
}

/// The journal's lines.
fn journal_text(run: &Path) -> String {
    std::fs::read_to_string(run.join("journal.jsonl")).unwrap()
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    support::json_lines(&journal_text(run))
}

/// The row of `name` (`data-region="r1"`) in the page: its cell for `state`.
fn count(dom: &str, attr: &str, name: &str, state: &str) -> usize {
    let row_start = dom
        .find(&format!("{attr}=\"{name}\""))
        .unwrap_or_else(|| panic!("no row {attr}={name} in the page: {dom}"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cell = &row[row.find(&format!("data-state=\"{state}\">")).unwrap()..];
    let number = &cell[cell.find('>').unwrap() + 1..cell.find('<').unwrap()];
    number.parse().unwrap()
}

/// `pony serve` on a free loopback port; its address.
fn start_server(state: &Path, token_file: &Path) -> (Reaped, String) {
    let mut server = Reaped::new(
        pony(state, &["serve", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(token_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.child().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    server.still_running("pony serve");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("pony serve said: {line:?}"))
        .to_string();
    (server, addr)
}

/// Reads server-sent events from an open stream until one's data has `wanted`.
fn read_until_event(stream: &mut BufReader<TcpStream>, wanted: &str) -> String {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stream.read_line(&mut line).unwrap() > 0,
            "the event stream ended"
        );
        if let Some(rest) = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
        {
            data.push_str(rest);
        } else if line.trim().is_empty() && !data.is_empty() {
            if data.contains(wanted) {
                return data;
            }
            data.clear();
        }
    }
}

/// A deploy of GATED on the local hosts, held at canary's approval gate: the deploy,
/// the state folder, the run's folder, and the inventory and playbook files.
fn gated_run(dir: &Path) -> (Reaped, PathBuf, PathBuf, [PathBuf; 2]) {
    let state = dir.join("state");
    let (inventory, playbook) = write_plan(dir, TINY_INVENTORY, GATED);
    let mut args = deploy_args(&inventory, &playbook);
    args.extend(["--approval-wait", "10m"]);
    let deploy = Reaped::new(
        pony(&state, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut run = PathBuf::new();
    wait_until("the run to wait at canary's approval gate", || {
        let Some(folder) = std::fs::read_dir(state.join("runs"))
            .ok()
            .and_then(|mut d| d.next())
        else {
            return false;
        };
        run = folder.unwrap().path();
        std::fs::read_to_string(run.join("journal.jsonl")).is_ok_and(|j| {
            j.lines()
                .any(|l| l.contains("\"gate_waiting\"") && l.contains("\"approve\""))
        })
    });
    (deploy, state, run, [inventory, playbook])
}

const STREAMED: &str = "return document.body.getAttribute('data-updates') !== null";

/// The page's element `selector` exists (`true`) or not, as a script's answer.
fn has(selector: &str) -> String {
    format!("document.querySelector('{selector}') !== null")
}

/// The run page in Chromium, without the token and with it (then a screenshot); the
/// DOM seen with the token. In between, `pony simulate --save` keeps a simulation of
/// the run's files: the page has the real timeline alone before, both after.
fn pages_in_chromium(browser: &Browser, page_url: &str, simulate: impl FnOnce()) -> String {
    browser.open(page_url);
    let dom = browser.dom_when("the event stream's first update in the page", STREAMED);
    assert!(
        browser.run(&format!("return {}", has("#timeline-real svg"))) == true,
        "the real timeline: {dom}"
    );
    assert!(
        browser.run(&format!("return {}", has("#timeline-simulated"))) == false
            && dom.contains("id=\"no-simulation\""),
        "no simulated timeline without a simulation: {dom}"
    );
    // Canary's bars are in the real timeline; nothing of wave rest ran yet.
    assert!(dom.contains("c1 wave canary"), "{dom}");
    assert!(!dom.contains("wave rest:"), "{dom}");
    assert_eq!(count(&dom, "data-region", "r1", "done"), 2, "{dom}");
    assert_eq!(count(&dom, "data-region", "r2", "not_run"), 2, "{dom}");
    assert_eq!(count(&dom, "data-cluster", "c2", "not_run"), 2, "{dom}");
    assert!(dom.contains("waiting: approve"), "{dom}");
    assert!(
        !dom.contains("id=\"approve\""),
        "no button without the token: {dom}"
    );

    let (addr, path) = page_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap();
    let picture = format!("/{path}/simulation.svg");
    let (status, _, _) = http(addr, "GET", &picture, &[], "");
    assert_eq!(status, 404, "no simulation kept yet");
    simulate();
    // The page is rendered again when its journal grows, or every few seconds: the kept
    // simulation shows up then.
    browser.open(&format!("{page_url}?token={TOKEN}"));
    let dom = browser.dom_when(
        "the page with the token and the simulated timeline",
        &format!(
            "return {} && {}",
            STREAMED.trim_start_matches("return "),
            has("#timeline-simulated img")
        ),
    );
    // Chromium loaded and drew the kept picture, an image (no script of it can run)...
    browser.dom_when(
        "the simulated timeline drawn",
        "var i = document.querySelector('#timeline-simulated img'); return i.complete && i.naturalWidth > 0",
    );
    // ... which is the simulation's.
    let (status, head, svg) = http(addr, "GET", &picture, &[], "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("image/svg+xml"), "{head}");
    assert!(
        svg.contains("pony simulate: served on tiny"),
        "the kept simulation's picture: {svg}"
    );
    assert!(
        browser.run(&format!("return {}", has("#timeline-real svg"))) == true,
        "{dom}"
    );
    assert!(
        dom.contains("id=\"approve\""),
        "the approve button with the token: {dom}"
    );
    let shot = support::crate_root()
        .join("target")
        .join("serve-run-page.png");
    browser.screenshot(&shot);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "a screenshot in {}",
        shot.display()
    );
    dom
}

const URLENCODED: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// A POST without the token, and one with it but a wrong CSRF token: 403, and the
/// journal unchanged.
fn refused_posts_change_nothing(addr: &str, id: &str, run: &Path, cookie: &str) {
    let before = journal_text(run);
    let form = "action=approve&wave=canary&csrf=guess";
    let control = format!("/runs/{id}/control");
    let (status, _, _) = http(addr, "POST", &control, &[URLENCODED], form);
    assert_eq!(status, 403);
    let with_cookie = ("Cookie", cookie);
    let (status, _, _) = http(addr, "POST", &control, &[URLENCODED, with_cookie], form);
    assert_eq!(status, 403, "the token without the CSRF token");
    assert_eq!(
        journal_text(run),
        before,
        "a refused request journaled nothing"
    );
}

/// The run's event stream (with the token's cookie), at its first update.
fn event_stream(addr: &str, id: &str, cookie: &str) -> BufReader<TcpStream> {
    let mut events = TcpStream::connect(addr).unwrap();
    write!(
        events,
        "GET /runs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    events
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut events = BufReader::new(events);
    read_until_event(&mut events, "id=\"approve\"");
    events
}

/// The journal after the run: the approval sent with the token, and nothing else sent.
fn approval_journaled(journal: &[serde_json::Value]) {
    let approval = journal
        .iter()
        .find(|r| r["type"] == "control" && r["command"] == "approve canary")
        .expect("the approval journaled");
    assert_eq!(approval["accepted"], true, "{approval}");
    assert!(
        approval["user"].as_str().is_some_and(|u| !u.is_empty()),
        "{approval}"
    );
    assert!(journal
        .iter()
        .any(|r| r["type"] == "gate_passed" && r["wave"] == "canary"));
    assert_eq!(
        journal.iter().filter(|r| r["type"] == "control").count(),
        1,
        "only the approval with the token was journaled"
    );
}

/// `pony simulate --save` of the run's own files, in the same state folder.
fn keep_a_simulation(state: &Path, files: &[PathBuf; 2]) {
    let [inventory, playbook] = files;
    let output = pony(
        state,
        &[
            "simulate",
            "--save",
            "-i",
            inventory.to_str().unwrap(),
            playbook.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let kept = std::fs::read_dir(state.join("simulations"))
        .unwrap()
        .count();
    assert_eq!(kept, 2, "the picture and the report kept");
}

/// The page's ETA is the one `pony status --output json` gives for the same journal
/// (the run waits at its gate: nothing is journaled in between).
fn eta_as_status_says(state: &Path, id: &str, dom: &str) {
    let at = dom
        .find("id=\"eta\" data-left-ms=\"")
        .unwrap_or_else(|| panic!("an ETA on the page: {dom}"))
        + "id=\"eta\" data-left-ms=\"".len();
    let shown: u64 = dom[at..at + dom[at..].find('"').unwrap()].parse().unwrap();
    let output = pony(state, &["status", id, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["eta"]["left_ms"], shown, "{}", status["eta"]);
    assert_eq!(status["eta"]["hosts_ended"], 2, "{}", status["eta"]);
    assert_eq!(status["eta"]["hosts_left"], 2, "{}", status["eta"]);
    // The run waits for its approval: when it ends is not known, the work left is.
    assert!(status["eta"]["at"].is_null(), "{}", status["eta"]);
    assert!(dom.contains("of work left after the wait"), "{dom}");
}

#[test]
fn the_run_page_shows_hosts_per_region_and_approves_only_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (deploy, state, run, files) = gated_run(dir.path());
    let id = run.file_name().unwrap().to_string_lossy().to_string();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (_server, addr) = start_server(&state, &token_file);

    let browser = Browser::start();
    let page_url = format!("http://{addr}/runs/{id}");
    let dom = pages_in_chromium(&browser, &page_url, || keep_a_simulation(&state, &files));
    eta_as_status_says(&state, &id, &dom);
    // The page's size as served, for the figures.
    let (status, _, page) = http(&addr, "GET", &format!("/runs/{id}"), &[], "");
    assert_eq!(status, 200);
    eprintln!("run page: {} bytes", page.len());

    let cookie = format!("pony_token={TOKEN}");
    refused_posts_change_nothing(&addr, &id, &run, &cookie);

    // The event stream, opened before the approval, shows the hosts done after it.
    let mut events = event_stream(&addr, &id, &cookie);
    let csrf_at = dom.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = &dom[csrf_at..csrf_at + dom[csrf_at..].find('"').unwrap()];
    let form = format!("action=approve&wave=canary&csrf={csrf}");
    let approved_at = std::time::Instant::now();
    let with_cookie = ("Cookie", cookie.as_str());
    let control = format!("/runs/{id}/control");
    let (status, _, body) = http(&addr, "POST", &control, &[URLENCODED, with_cookie], &form);
    assert_eq!(status, 200, "{body}");
    let done = read_until_event(&mut events, "class=\"n done\" data-state=\"done\">4<");
    eprintln!(
        "approve POST to the event showing every host done: {:?}",
        approved_at.elapsed()
    );
    assert!(done.contains("passed"), "{done}");
    // The browser's page, not reloaded, follows: every host done, the gate passed.
    let dom = browser.dom_when(
        "the open page to show every host done",
        "var c = document.querySelector('tr.total td[data-state=done]'); return c !== null && c.textContent === '4'",
    );
    assert!(dom.contains("<td>passed</td>"), "{dom}");
    // The real timeline followed: wave rest's bars are drawn now.
    let dom = browser.dom_when(
        "the real timeline to draw wave rest",
        "var t = document.querySelector('#timeline-real svg'); return t !== null && t.innerHTML.indexOf('c2 wave rest') >= 0",
    );
    assert!(dom.contains("id=\"timeline-simulated\""), "{dom}");

    let output = deploy.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for host in HOSTS {
        assert!(
            state.join("hosts").join(host).join("marked").exists(),
            "{host}"
        );
    }
    let journal = records(&run);
    approval_journaled(&journal);
    metrics_match_the_journal(&addr, &id, &journal);
}

/// `/metrics` parses as Prometheus text; its host counts are the journal's.
fn metrics_match_the_journal(addr: &str, id: &str, journal: &[serde_json::Value]) {
    let (status, head, body) = http(addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("openmetrics-text"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut hosts_by_state = std::collections::BTreeMap::<String, f64>::new();
    let mut in_flight = None;
    let mut steps = std::collections::BTreeSet::new();
    for sample in &scrape.samples {
        match sample.metric.as_str() {
            "pony_hosts" if sample.labels.get("run") == Some(id) => {
                if let prometheus_parse::Value::Gauge(v) = sample.value {
                    *hosts_by_state
                        .entry(sample.labels.get("state").unwrap().to_string())
                        .or_default() += v;
                }
            }
            "pony_runs_in_flight" => {
                if let prometheus_parse::Value::Gauge(v) = sample.value {
                    in_flight = Some(v);
                }
            }
            "pony_task_duration_seconds" => {
                steps.insert(sample.labels.get("step").unwrap_or("").to_string());
            }
            _ => {}
        }
    }
    // A host is done when each of its tasks finished successfully in the journal.
    let done = HOSTS
        .iter()
        .filter(|h| {
            ["mark", "check"].iter().all(|step| {
                journal.iter().any(|r| {
                    r["type"] == "task_finished"
                        && r["label"] == format!("{step}@{h}")
                        && r["state"] == "succeeded"
                })
            })
        })
        .count();
    assert_eq!(done, 4);
    assert_eq!(hosts_by_state.get("done"), Some(&(done as f64)), "{body}");
    for state in ["running", "failed", "rolled_back", "partly", "not_run"] {
        assert_eq!(hosts_by_state.get(state), Some(&0.0), "{state}: {body}");
    }
    assert_eq!(in_flight, Some(0.0), "{body}");
    assert!(
        steps.contains("mark") && steps.contains("check"),
        "{steps:?}: {body}"
    );
    dashboard::asks_only_for_exported_metrics(&body);
}
