//! `pony serve`: a live view of the runs for the whole team, over the same state as
//! every other command (the local state folder, or PostgreSQL with `--state`).
//!
//! - `/`: the runs, newest first (as `pony history`).
//! - `/runs/ID`: a run's waves and gates, hosts per region and cluster by state,
//!   failures with their output tails, who paused or approved what and when, its ETA (as
//!   `pony status` gives it), its timeline drawn from the journal by the simulator's
//!   drawing, and the simulation kept for its files (`pony simulate --save`). The page
//!   follows the run through `/runs/ID/events` (server-sent events: the server renders
//!   the page's `<main>` again as the journal grows; see `live.rs`).
//! - `POST /runs/ID/control`: the gate buttons, sent down the same path as `pony
//!   approve|pause|continue|abort` (journaled by the run with who sent it), only with the
//!   token of `--token-file` and its CSRF token (`auth.rs`); else 403, nothing sent.
//! - `/runs/ID/simulation.svg`: the simulation kept for the run's files, if any.
//! - `/metrics`: OpenMetrics text (`metrics.rs`).
//!
//! HTML is rendered on the server (`html.rs`, `view.rs`); the little JavaScript the page
//! has is in the binary (`page.js`).

mod auth;
mod html;
mod live;
mod metrics;
mod view;

use crate::control::{ControlCommand, ControlReply};
use crate::diag::{Diagnostic, Diagnostics};
use crate::exit::Exit;
use crate::state::backend::{Access as StoreAccess, Delivery};
use crate::state::store::{Store, StoreSettings};
use auth::Access;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use live::Hub;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often a followed run's journal length is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// What every handler shares.
#[derive(Debug)]
struct App {
    store: Store,
    /// The local state folder (kept simulations).
    state_dir: std::path::PathBuf,
    access: Access,
    hub: Arc<Hub>,
    plans: metrics::Plans,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(
    store_settings: &StoreSettings,
    listen: &str,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Exit> {
    let addr: SocketAddr = listen.parse().map_err(|e| {
        Diagnostics::from(
            Diagnostic::new(
                std::path::Path::new("--listen"),
                format!("`{listen}` is not an address to listen on: {e}"),
            )
            .hint("give IP:PORT, e.g. 127.0.0.1:8470"),
        )
    })?;
    let access = match token_file {
        Some(file) => Access::from_file(file).map_err(|e| {
            Diagnostics::from(Diagnostic::new(file, e.to_string()).hint(
                "write one line with a long random token into it, e.g. `openssl rand -hex 32 > FILE`",
            ))
        })?,
        None => Access::read_only(),
    };
    // A read-only server needs only a role that reads; the buttons need one that may
    // send commands (as `pony approve` does).
    let needs = if access.has_token() {
        StoreAccess::Control
    } else {
        StoreAccess::Read
    };
    let store = Store::open(store_settings, needs)?;
    let state_dir = store_settings.state_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(store, state_dir, access, addr))
}

async fn serve(
    store: Store,
    state_dir: std::path::PathBuf,
    access: Access,
    addr: SocketAddr,
) -> anyhow::Result<Exit> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Diagnostics::from(
            Diagnostic::new(
                std::path::Path::new("--listen"),
                format!("cannot listen on {addr}: {e}"),
            )
            .hint("choose another port with --listen"),
        )
    })?;
    let bound = listener.local_addr()?;
    let mode = if access.has_token() {
        "gate buttons for holders of the token"
    } else {
        "read-only (no --token-file)"
    };
    crate::outln!("pony serve: listening on http://{bound}/ ({mode})");
    let hub = Arc::new(Hub::new(
        store.clone(),
        state_dir.clone(),
        access.clone(),
        WATCH_EVERY,
    ));
    let app = Arc::new(App {
        store,
        state_dir,
        access,
        hub,
        plans: metrics::Plans::default(),
    });
    let router = Router::new()
        .route("/", get(index))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/control", post(control))
        .route("/runs/{id}/simulation.svg", get(simulation))
        .route("/metrics", get(metrics_text))
        .with_state(app);
    let server = axum::serve(listener, router);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = server => result?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(Exit::Success)
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Whether the request holds the token; a `?token=` that is right also sets the cookie
/// that carries it from then on, one that is wrong is refused.
fn viewer(
    app: &App,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<(bool, Option<String>), Response> {
    match &query.token {
        Some(token) if app.access.is_token(token) => Ok((true, Some(auth::cookie(token)))),
        Some(_) => Err(forbidden("the token is not this server's")),
        None => Ok((app.access.allows(headers), None)),
    }
}

fn forbidden(why: &str) -> Response {
    let body = html::page(
        "forbidden",
        &format!(
            "<h1>Forbidden</h1><p id=\"forbidden\">{}</p>",
            html::escape(why)
        ),
        false,
    );
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

fn failure(status: StatusCode, message: &str) -> Response {
    let body = html::page(
        "pony",
        &format!("<p class=\"problem\">{}</p>", html::escape(message)),
        false,
    );
    (status, Html(body)).into_response()
}

/// The store's blocking work, off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{error:#}"),
        )),
        Err(error) => Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error.to_string(),
        )),
    }
}

async fn index(State(app): State<Arc<App>>) -> Response {
    let store = app.store.clone();
    let listed = blocking(move || {
        let ids = store.list()?;
        let summaries: Vec<_> = ids
            .iter()
            .take(100)
            .map(|id| store.read_summary(id).summary)
            .collect();
        Ok((summaries, store.place().display().to_string()))
    })
    .await;
    match listed {
        Ok((summaries, place)) => Html(html::index(&summaries, &place)).into_response(),
        Err(response) => response,
    }
}

/// An exact run id from an id or a unique prefix, or the 404 that says why not.
async fn resolve(app: &App, run: String) -> Result<String, Response> {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.resolve(&run)).await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(error)) => Err(failure(StatusCode::NOT_FOUND, &error.to_string())),
        Err(error) => Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error.to_string(),
        )),
    }
}

async fn run_page(
    State(app): State<Arc<App>>,
    Path(run): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let (allowed, cookie) = match viewer(&app, &headers, &query) {
        Ok(v) => v,
        Err(response) => return response,
    };
    let id = match resolve(&app, run).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let follower = match app.hub.follow(&id).await {
        Ok(f) => f,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let page = {
        let rendered = follower.borrow();
        let rendered = rendered.as_ref().expect("followed: rendered");
        html::page(
            &rendered.title,
            &format!("<main id=\"run\">{}</main>", rendered.main_for(allowed)),
            true,
        )
    };
    let mut response = Html(page).into_response();
    if let Some(cookie) = cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The run's `<main>` now, then each time it changes, as `update` events.
async fn events(
    State(app): State<Arc<App>>,
    Path(run): Path<String>,
    headers: HeaderMap,
) -> Response {
    let allowed = app.access.allows(&headers);
    let id = match resolve(&app, run).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let follower = match app.hub.follow(&id).await {
        Ok(f) => f,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let stream =
        futures_util::stream::unfold((follower, true), move |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let main = rx
                .borrow_and_update()
                .as_ref()
                .map(|r| r.main_for(allowed).to_string())?;
            let event = Event::default().event("update").data(main);
            Some((Ok::<_, std::convert::Infallible>(event), (rx, false)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The picture of the simulation kept for the run's files (`pony simulate --save`), as
/// an image that may run no script and load nothing.
async fn simulation(State(app): State<Arc<App>>, Path(run): Path<String>) -> Response {
    let id = match resolve(&app, run).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let (store, state_dir) = (app.store.clone(), app.state_dir.clone());
    let svg = blocking(move || {
        let path = store.read_summary(&id).summary.path;
        Ok(crate::sim::saved::for_run(&state_dir, &path).and_then(|p| std::fs::read(p).ok()))
    })
    .await;
    match svg {
        Ok(Some(svg)) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            svg,
        )
            .into_response(),
        Ok(None) => failure(
            StatusCode::NOT_FOUND,
            "no simulation kept for this run's files",
        ),
        Err(response) => response,
    }
}

/// A gate button's form.
#[derive(Debug, serde::Deserialize)]
struct ControlForm {
    csrf: String,
    action: String,
    wave: Option<String>,
}

async fn control(
    State(app): State<Arc<App>>,
    Path(run): Path<String>,
    headers: HeaderMap,
    form: Result<Form<ControlForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    // The token first: without it nothing about the request is looked at.
    if !app.access.allows(&headers) {
        return forbidden("changing a run needs the token of `pony serve --token-file`");
    }
    let Ok(Form(form)) = form else {
        return forbidden("the form's CSRF token is missing");
    };
    if !app.access.csrf_ok(&form.csrf) {
        return forbidden("the form's CSRF token is wrong: reload the run's page");
    }
    let command = match (form.action.as_str(), form.wave) {
        ("approve", Some(wave)) => ControlCommand::Approve { wave },
        ("pause", _) => ControlCommand::Pause,
        ("continue", _) => ControlCommand::Continue,
        ("abort", _) => ControlCommand::Abort { rollback: false },
        ("abort_rollback", _) => ControlCommand::Abort { rollback: true },
        (other, _) => {
            return failure(
                StatusCode::BAD_REQUEST,
                &format!("unknown action `{other}` (approve with a wave, pause, continue, abort, abort_rollback)"),
            )
        }
    };
    let id = match resolve(&app, run).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let typed = command.describe();
    let store = app.store.clone();
    let run_id = id.clone();
    let delivery = match blocking(move || store.send_control(&run_id, &command)).await {
        Ok(delivery) => delivery,
        Err(response) => return response,
    };
    let (status, message) = answer(delivery);
    tracing::info!("`{typed}` to run {id}: {message}");
    let body = format!(
        "<h1>Run {id}</h1><p id=\"answer\" class=\"{}\">`{}`: {}</p><p><a href=\"/runs/{id}\">back to the run</a></p>",
        if status.is_success() { "accepted" } else { "refused" },
        html::escape(&typed),
        html::escape(&message),
        id = html::escape(&id),
    );
    (status, Html(html::page("pony", &body, false))).into_response()
}

/// The HTTP status and words of a command's delivery: 200 when the run took it, 409
/// when it refused it or is not running, 502 when no controller answered.
fn answer(delivery: Delivery) -> (StatusCode, String) {
    match delivery {
        Delivery::NotRunning { why } => (
            StatusCode::CONFLICT,
            format!("the run is not running: {why}"),
        ),
        Delivery::Denied(error) => (StatusCode::CONFLICT, error),
        Delivery::NoAnswer(error) => (StatusCode::BAD_GATEWAY, error),
        Delivery::Answered { answers, .. } if answers.is_empty() => (
            StatusCode::BAD_GATEWAY,
            "no controller of the run answered".into(),
        ),
        Delivery::Answered { answers, .. } => {
            let reply = ControlReply {
                accepted: answers.iter().all(|a| a.reply.accepted),
                message: answers
                    .iter()
                    .map(|a| match a.controller.as_str() {
                        "" => a.reply.message.clone(),
                        name => format!("controller {name}: {}", a.reply.message),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            let status = if reply.accepted {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            (status, reply.message)
        }
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let worker = app.clone();
    match blocking(move || metrics::render(&worker.store, &worker.plans)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(response) => response,
    }
}
