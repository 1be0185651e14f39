//! The dashboard's shared pieces: the page shell (navigation, the live-updates banner, the
//! confirm dialog), status badges, times, action buttons and pagers. Everything is escaped by
//! maud; nothing here reads the store.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use taskplane_api::TaskStatus;

use super::Viewer;
use super::assets;

/// The navigation's entries: (path, label).
pub const NAV: [(&str, &str); 7] = [
    ("/ui/", "Overview"),
    ("/ui/tasks", "Tasks"),
    ("/ui/dlq", "Dead letters"),
    ("/ui/queues", "Queues"),
    ("/ui/schedules", "Schedules"),
    ("/ui/workflows", "Workflows"),
    ("/ui/audit", "Audit"),
];

/// How a page stays current: the events that make it refresh, and how often it refreshes
/// anyway (for what no event announces, such as heartbeats).
#[derive(Default)]
pub struct Live {
    /// The query of `/api/v1/events` (`""` for every event), or none.
    pub events: Option<String>,
    /// Refresh at least this often (ms).
    pub every_ms: Option<u32>,
    /// The least time between two refreshes for events (ms; the script's default is 500).
    pub gap_ms: Option<u32>,
}

impl Live {
    pub fn events(query: impl Into<String>) -> Live {
        Live {
            events: Some(query.into()),
            every_ms: None,
            gap_ms: None,
        }
    }

    /// For pages that cost the store more to draw (whole-table counts).
    pub fn gap(mut self, ms: u32) -> Live {
        self.gap_ms = Some(ms);
        self
    }

    pub fn every(mut self, ms: u32) -> Live {
        self.every_ms = Some(ms);
        self
    }
}

/// A whole page: `nav` is the path of the navigation entry it belongs to.
pub fn page(viewer: &Viewer, nav: &str, title: &str, live: Live, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Taskplane" }
                link rel="icon" href=(assets::url("icon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("app.css"));
                script src=(assets::url("app.js")) defer {}
            }
            body data-events=[live.events.as_deref()] data-every=[live.every_ms] data-gap=[live.gap_ms] data-now=(crate::util::now_ms()) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { (PreEscaped(assets::LOGO)) span { "Taskplane" } }
                    nav aria-label="Sections" {
                        ul {
                            @for (path, label) in NAV {
                                @if path != "/ui/audit" || viewer.allows(crate::auth::Scope::Admin) {
                                li {
                                    a href=(path) aria-current=[(path == nav).then_some("page")] { (label) }
                                }
                                }
                            }
                        }
                    }
                    div.who {
                        @if viewer.readonly {
                            span.pill title="taskd --ui-readonly: actions are hidden" { "read-only" }
                        }
                        @if let Some(principal) = &viewer.principal {
                            span.subject title={ "scopes: " (viewer.scopes_text()) } { (principal.subject) }
                            button.link type="button" data-logout { "Sign out" }
                        }
                    }
                }
                div #banner .banner role="status" aria-live="polite" hidden {
                    "Live updates lost — reconnecting…"
                }
                div #toast .toast role="status" aria-live="polite" hidden {}
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                dialog #confirm aria-labelledby="confirm-text" {
                    form method="dialog" {
                        p #confirm-text {}
                        div.buttons {
                            button type="submit" value="cancel" autofocus { "Back" }
                            button #confirm-ok type="submit" value="ok" { "Confirm" }
                        }
                    }
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page that says what went wrong, with the status.
pub fn problem(viewer: &Viewer, status: StatusCode, title: &str, message: &str) -> Response {
    problem_with(viewer, status, title, message, None)
}

/// A page that says what went wrong, with a way on (`back`: its address and words).
pub fn problem_with(
    viewer: &Viewer,
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<(&str, &str)>,
) -> Response {
    let mut response = page(
        viewer,
        "",
        title,
        Live::default(),
        html! {
            p.error { (message) }
            p {
                @if let Some((href, words)) = back { a href=(href) { (words) } " · " }
                a href="/ui/" { "Back to the overview" }
            }
        },
    );
    *response.status_mut() = status;
    response
}

/// A status as a coloured badge.
pub fn status(status: TaskStatus) -> Markup {
    html! { span class={ "badge st-" (status.as_str()) } { (status.as_str()) } }
}

/// Any status-like word as a badge coloured like the task status of that name.
pub fn badge(word: &str) -> Markup {
    html! { span class={ "badge st-" (word) } { (word) } }
}

/// `at` relative to `now` ("12s ago", "in 5m"), with the exact time on hover; the page's
/// script keeps it current.
pub fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let exact = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    html! { time datetime=(exact) title=(exact) { (relative(at, now)) } }
}

/// How long something has been going since `start` ("38s…"), kept current by the script.
pub fn running_for(start: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let exact = start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ms = (now - start).num_milliseconds().max(0).unsigned_abs();
    html! { span data-since=(exact) { (short_duration(ms)) "…" } }
}

/// An optional time, or a dash.
pub fn when_opt(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        Some(at) => when(at, now),
        None => html! { span.muted { "—" } },
    }
}

/// A distance in time as people say it.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ms = (now - at).num_milliseconds();
    let text = short_duration(ms.unsigned_abs());
    if ms >= 0 {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A duration, to two units at most: `850ms`, `12s`, `3m 5s`, `2h 10m`, `4d 3h`.
pub fn short_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// An id's last eight characters, the whole id on hover. Ids are UUIDv7: their first
/// characters are the time, the same for every task of a minute; the end is random.
pub fn short_id(id: &uuid::Uuid) -> Markup {
    let text = id.to_string();
    html! { code title=(text) { "…" (short(id)) } }
}

/// At most `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

/// The last eight characters of an id.
pub fn short(id: &uuid::Uuid) -> String {
    let text = id.to_string();
    text[text.len() - 8..].to_owned()
}

/// A button that calls the API after a confirmation. `body` is sent as JSON when given.
pub struct Action<'a> {
    pub label: &'a str,
    pub url: String,
    pub confirm: String,
    pub body: Option<String>,
    pub danger: bool,
    /// Where to go after it worked (else the page refreshes).
    pub then: Option<String>,
}

impl Action<'_> {
    pub fn render(&self) -> Markup {
        html! {
            button type="button" class=(if self.danger { "act danger" } else { "act" })
                data-url=(self.url) data-confirm=(self.confirm) data-body=[self.body.as_deref()]
                data-then=[self.then.as_deref()] { (self.label) }
        }
    }
}

/// A plain action (no body, not dangerous).
pub fn action(label: &str, url: String, confirm: String) -> Markup {
    Action {
        label,
        url,
        confirm,
        body: None,
        danger: false,
        then: None,
    }
    .render()
}

/// Links to the first and the next page of a keyset-paged list. `base` is the page's query
/// without the cursor.
pub fn pager(path: &str, base: &[(&str, String)], cursor: bool, next: Option<&str>) -> Markup {
    let href = |cursor: Option<&str>| {
        let mut pairs: Vec<(&str, &str)> = base
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        if let Some(cursor) = cursor {
            pairs.push(("cursor", cursor));
        }
        let query = serde_html_form::to_string(&pairs).unwrap_or_default();
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        }
    };
    html! {
        nav.pager aria-label="Pages" {
            @if cursor { a href=(href(None)) { "← First page" } }
            @if let Some(next) = next { a href=(href(Some(next))) rel="next" { "Next page →" } }
        }
    }
}

/// JSON, indented, in a block.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// An empty list's row.
pub fn empty_row(columns: u32, text: &str) -> Markup {
    html! { tr.empty { td colspan=(columns) { (text) } } }
}
