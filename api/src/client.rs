//! A typed client of the taskd HTTP API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::controls::{AuditList, AuditQuery, QueuePatch, QueueSettings};
use crate::error::Error;
use crate::lease::{
    Complete, Fail, Heartbeat, HeartbeatAnswer, KindList, LeaseList, LeaseRequest, LogReport,
    MAX_LEASE_WAIT_MS, ReportAnswer,
};
use crate::schedule::{
    CronQuery, NextFires, NextQuery, Schedule, ScheduleList, ScheduleQuery, ScheduleSpec,
};
use crate::stream::{EventStream, LogTail};
use crate::types::{
    BatchSubmit, BulkResult, DlqPurge, DlqRetry, ErrorBody, EventQuery, Health, ListQuery, LogPage,
    LogQuery, QueueList, SubmitTask, Task, TaskList, WorkerList,
};
use crate::workflow::{
    Workflow, WorkflowAction, WorkflowCreated, WorkflowList, WorkflowQuery, WorkflowSpec,
};

/// How long a [`Client`] waits for taskd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection (TCP, and TLS).
    pub connect: Duration,
    /// A whole ordinary request, its answer read to the end; `None` waits as long as it
    /// takes.
    pub request: Option<Duration>,
    /// How long a stream (events, log following) may go without a single byte, heartbeats
    /// included, before it counts as dead; `None` waits as long as it takes. taskd sends a
    /// heartbeat on every stream well within a minute.
    pub stream_idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Some(Duration::from_secs(60)),
            stream_idle: Some(Duration::from_secs(60)),
        }
    }
}

/// A cheap-to-clone handle on one taskd server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Without an overall timeout, for responses that stream for as long as they last; only
    /// silence ends them.
    streaming: reqwest::Client,
    base: String,
    token: Option<String>,
    timeouts: Timeouts,
    /// The W3C `traceparent` the requests that make tasks carry, if set
    /// ([`Client::with_traceparent`]).
    traceparent: Option<String>,
}

/// A well-formed W3C `traceparent` (version 00, ids not all zero), as given.
pub fn valid_traceparent(value: &str) -> Option<String> {
    let value = value.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    ok.then(|| value.to_owned())
}

/// A new W3C `traceparent`: a trace of its own (random ids), sampled.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

impl Client {
    /// The requests that make tasks (a submit, a batch, a workflow) carry this `traceparent`,
    /// so the tasks belong to its trace; without one each of them starts a trace of its own.
    /// Other requests carry none.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The `traceparent` requests carry.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`). Checks the URL; does
    /// not connect.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        Client::with_ca(base, token, None)
    }

    /// A client that also trusts the CA certificates in `ca_pem` (a PEM bundle), for a taskd
    /// (or the proxy in front of it) whose certificate a private CA signed. Certificates are
    /// always verified.
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, Error> {
        Client::with_options(base, token, ca_pem, Timeouts::default())
    }

    /// [`Client::with_ca`] with these timeouts.
    pub fn with_options(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
        timeouts: Timeouts,
    ) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(base).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(&format!(
                "the scheme must be http or https (did you mean http://{}?)",
                base.trim_start_matches("//")
            )));
        }
        if parsed.host_str().is_none() {
            return Err(invalid("no host"));
        }
        // reqwest is built without a default TLS provider (one provider, ring, for the whole
        // workspace); make sure it is installed whoever uses this client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = match ca_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| Error::Certificate("no PEM certificate found".to_owned()))?,
            None => Vec::new(),
        };
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(timeouts.connect)
                .user_agent(concat!("taskplane-api/", env!("CARGO_PKG_VERSION")))
                .tls_certs_merge(roots.clone())
        };
        let mut http = builder();
        if let Some(limit) = timeouts.request {
            http = http.timeout(limit);
        }
        let http = http.build().map_err(|e| invalid(&error_chain(&e)))?;
        // A read timeout rather than a total one: it starts again with every byte, so a
        // stream lasts as long as taskd keeps talking (heartbeats count) and no longer.
        let mut streaming = builder();
        if let Some(idle) = timeouts.stream_idle {
            streaming = streaming.read_timeout(idle);
        }
        let streaming = streaming.build().map_err(|e| invalid(&error_chain(&e)))?;
        Ok(Client {
            http,
            streaming,
            base: base.trim_end_matches('/').to_owned(),
            token,
            timeouts,
            traceparent: None,
        })
    }

    /// The server URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Submits one task. The flag is true when the task was created, false when an
    /// idempotency key replayed an existing one.
    pub async fn submit(&self, task: &SubmitTask) -> Result<(Task, bool), Error> {
        let response = self
            .send(Method::POST, "/api/v1/tasks", Some(task), None::<&()>)
            .await?;
        let created = response.status() == StatusCode::CREATED;
        Ok((self.decode(response).await?, created))
    }

    /// Submits many tasks in one request and one transaction; answers in request order.
    pub async fn submit_batch(&self, tasks: Vec<SubmitTask>) -> Result<Vec<Task>, Error> {
        let body = BatchSubmit { tasks };
        let response = self
            .send(
                Method::POST,
                "/api/v1/tasks/batch",
                Some(&body),
                None::<&()>,
            )
            .await?;
        let list: TaskList = self.decode(response).await?;
        Ok(list.tasks)
    }

    pub async fn get(&self, id: Uuid) -> Result<Task, Error> {
        self.call(Method::GET, &format!("/api/v1/tasks/{id}")).await
    }

    pub async fn list(&self, query: &ListQuery) -> Result<TaskList, Error> {
        let response = self
            .send(Method::GET, "/api/v1/tasks", None::<&()>, Some(query))
            .await?;
        self.decode(response).await
    }

    pub async fn cancel(&self, id: Uuid) -> Result<Task, Error> {
        self.call(Method::POST, &format!("/api/v1/tasks/{id}/cancel"))
            .await
    }

    pub async fn retry(&self, id: Uuid) -> Result<Task, Error> {
        self.call(Method::POST, &format!("/api/v1/tasks/{id}/retry"))
            .await
    }

    pub async fn logs(&self, id: Uuid, query: &LogQuery) -> Result<LogPage, Error> {
        let response = self
            .send(
                Method::GET,
                &format!("/api/v1/tasks/{id}/logs"),
                None::<&()>,
                Some(query),
            )
            .await?;
        self.decode(response).await
    }

    /// Requeues failed tasks (all, or of one kind or queue); answers how many.
    pub async fn dlq_retry(&self, filter: &DlqRetry) -> Result<BulkResult, Error> {
        let response = self
            .send(Method::POST, "/api/v1/dlq/retry", Some(filter), None::<&()>)
            .await?;
        self.decode(response).await
    }

    /// Deletes failed tasks that finished long enough ago; answers how many.
    pub async fn dlq_purge(&self, filter: &DlqPurge) -> Result<BulkResult, Error> {
        let response = self
            .send(Method::POST, "/api/v1/dlq/purge", Some(filter), None::<&()>)
            .await?;
        self.decode(response).await
    }

    /// Live task events, resuming after `last_seq` when given.
    pub async fn events(
        &self,
        query: &EventQuery,
        last_seq: Option<i64>,
    ) -> Result<EventStream, Error> {
        let url = format!("{}/api/v1/events", self.base);
        let mut request = self.authorize(self.streaming.get(with_query(&url, query)));
        if let Some(seq) = last_seq {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let response = self.open_stream(request).await?;
        Ok(EventStream {
            response,
            parser: Default::default(),
            pending: Default::default(),
            url,
            last_seq,
            closed: false,
        })
    }

    /// A task's output from line `after` on, as it is produced, until the task finishes.
    pub async fn follow_logs(&self, id: Uuid, after: i64) -> Result<LogTail, Error> {
        let url = format!("{}/api/v1/tasks/{id}/logs", self.base);
        let query = LogQuery {
            follow: true,
            after: Some(after),
            limit: None,
        };
        let request = self.authorize(self.streaming.get(with_query(&url, &query)));
        let response = self.open_stream(request).await?;
        Ok(LogTail {
            response,
            parser: Default::default(),
            pending: Default::default(),
            url,
        })
    }

    pub async fn queues(&self) -> Result<QueueList, Error> {
        self.call(Method::GET, "/api/v1/queues").await
    }

    /// `pause` or `resume` a queue.
    pub async fn queue_action(&self, queue: &str, action: &str) -> Result<QueueSettings, Error> {
        self.call(Method::POST, &format!("/api/v1/queues/{queue}/{action}"))
            .await
    }

    pub async fn patch_queue(
        &self,
        queue: &str,
        patch: &QueuePatch,
    ) -> Result<QueueSettings, Error> {
        let response = self
            .send(
                Method::PATCH,
                &format!("/api/v1/queues/{queue}"),
                Some(patch),
                None::<&()>,
            )
            .await?;
        self.decode(response).await
    }

    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditList, Error> {
        let response = self
            .send(Method::GET, "/api/v1/audit", None::<&()>, Some(query))
            .await?;
        self.decode(response).await
    }

    pub async fn workers(&self) -> Result<WorkerList, Error> {
        self.call(Method::GET, "/api/v1/workers").await
    }

    /// Creates a schedule (a 409 `schedule_exists` when the name is taken).
    pub async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule, Error> {
        let response = self
            .send(Method::POST, "/api/v1/schedules", Some(spec), None::<&()>)
            .await?;
        self.decode(response).await
    }

    /// Replaces the spec of the schedule `spec.name` names (creating nothing).
    pub async fn put_schedule(&self, spec: &ScheduleSpec) -> Result<Schedule, Error> {
        let path = format!("/api/v1/schedules/{}", path_segment(&spec.name));
        let response = self
            .send(Method::PUT, &path, Some(spec), None::<&()>)
            .await?;
        self.decode(response).await
    }

    /// One page of schedules, by name.
    pub async fn schedules_page(&self, query: &ScheduleQuery) -> Result<ScheduleList, Error> {
        let response = self
            .send(Method::GET, "/api/v1/schedules", None::<&()>, Some(query))
            .await?;
        self.decode(response).await
    }

    /// Every schedule, by name (all pages).
    pub async fn schedules(&self) -> Result<Vec<Schedule>, Error> {
        let mut query = ScheduleQuery {
            limit: Some(1000),
            cursor: None,
        };
        let mut all = Vec::new();
        loop {
            let page = self.schedules_page(&query).await?;
            all.extend(page.schedules);
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return Ok(all),
            }
        }
    }

    pub async fn schedule(&self, name: &str) -> Result<Schedule, Error> {
        self.call(
            Method::GET,
            &format!("/api/v1/schedules/{}", path_segment(name)),
        )
        .await
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<Schedule, Error> {
        self.call(
            Method::DELETE,
            &format!("/api/v1/schedules/{}", path_segment(name)),
        )
        .await
    }

    /// `pause` or `resume`.
    pub async fn schedule_action(&self, name: &str, action: &str) -> Result<Schedule, Error> {
        self.call(
            Method::POST,
            &format!("/api/v1/schedules/{}/{action}", path_segment(name)),
        )
        .await
    }

    /// Submits one task from a schedule now, paused or not.
    pub async fn trigger_schedule(&self, name: &str) -> Result<Task, Error> {
        self.call(
            Method::POST,
            &format!("/api/v1/schedules/{}/trigger", path_segment(name)),
        )
        .await
    }

    /// The next fire times of the schedule `name`.
    pub async fn next_fires(&self, name: &str, query: &NextQuery) -> Result<NextFires, Error> {
        let path = format!("/api/v1/schedules/{}/next", path_segment(name));
        let response = self
            .send(Method::GET, &path, None::<&()>, Some(query))
            .await?;
        self.decode(response).await
    }

    /// The next fire times of a cron expression, from now.
    pub async fn cron_next(&self, query: &CronQuery) -> Result<NextFires, Error> {
        let response = self
            .send(Method::GET, "/api/v1/cron/next", None::<&()>, Some(query))
            .await?;
        self.decode(response).await
    }

    /// Creates a workflow: every step a task, in one transaction.
    pub async fn create_workflow(&self, spec: &WorkflowSpec) -> Result<WorkflowCreated, Error> {
        let response = self
            .send(Method::POST, "/api/v1/workflows", Some(spec), None::<&()>)
            .await?;
        self.decode(response).await
    }

    pub async fn workflow(&self, id: Uuid) -> Result<Workflow, Error> {
        self.call(Method::GET, &format!("/api/v1/workflows/{id}"))
            .await
    }

    /// One page of workflows, newest first.
    pub async fn workflows(&self, query: &WorkflowQuery) -> Result<WorkflowList, Error> {
        let response = self
            .send(Method::GET, "/api/v1/workflows", None::<&()>, Some(query))
            .await?;
        self.decode(response).await
    }

    /// `cancel` or `retry`.
    pub async fn workflow_action(&self, id: Uuid, action: &str) -> Result<WorkflowAction, Error> {
        self.call(Method::POST, &format!("/api/v1/workflows/{id}/{action}"))
            .await
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a streaming request; an error status is decoded like any other answer.
    async fn open_stream(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, self.timeouts.stream_idle, true))?;
        if response.status().is_success() {
            return Ok(response);
        }
        match self.decode::<serde_json::Value>(response).await {
            Err(error) => Err(error),
            Ok(_) => Err(Error::BadResponse {
                url: self.base.clone(),
                status: 0,
                detail: "an error status with a success body".into(),
            }),
        }
    }

    /// The kinds taskd accepts and the workers serving each.
    pub async fn kinds(&self) -> Result<KindList, Error> {
        self.call(Method::GET, "/api/v1/kinds").await
    }

    /// Takes tasks for a remote worker, waiting up to `wait_ms` for the first (the request
    /// may take that much longer than the client's request timeout).
    pub async fn lease(&self, request: &LeaseRequest) -> Result<LeaseList, Error> {
        let url = format!("{}/api/v1/leases", self.base);
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0).min(MAX_LEASE_WAIT_MS));
        let mut builder = self.authorize(self.http.post(&url)).json(request);
        if let Some(limit) = self.timeouts.request {
            builder = builder.timeout(limit + wait);
        }
        let response = builder.send().await.map_err(|e| {
            self.transport_error(&e, self.timeouts.request.map(|l| l + wait), false)
        })?;
        self.decode(response).await
    }

    /// Extends a leased task's lease; answers whether it was cancelled.
    pub async fn heartbeat(&self, id: Uuid, beat: &Heartbeat) -> Result<HeartbeatAnswer, Error> {
        self.report(id, "heartbeat", beat).await
    }

    /// Reports a leased task's success.
    pub async fn complete(&self, id: Uuid, report: &Complete) -> Result<ReportAnswer, Error> {
        self.report(id, "complete", report).await
    }

    /// Reports a leased task's failure.
    pub async fn fail(&self, id: Uuid, report: &Fail) -> Result<ReportAnswer, Error> {
        self.report(id, "fail", report).await
    }

    /// Appends lines to a leased task's log.
    pub async fn report_logs(&self, id: Uuid, report: &LogReport) -> Result<ReportAnswer, Error> {
        self.report(id, "logs", report).await
    }

    async fn report<B: Serialize, T: DeserializeOwned>(
        &self,
        id: Uuid,
        what: &str,
        body: &B,
    ) -> Result<T, Error> {
        let path = format!("/api/v1/tasks/{id}/{what}");
        let response = self
            .send(Method::POST, &path, Some(body), None::<&()>)
            .await?;
        self.decode(response).await
    }

    pub async fn health(&self) -> Result<Health, Error> {
        self.call(Method::GET, "/health").await
    }

    /// Whether this taskd serves the web dashboard (`/ui/`; `taskd --no-ui` turns it off).
    /// Its assets need no token, so the answer does not depend on this client's.
    pub async fn serves_dashboard(&self) -> Result<bool, Error> {
        let response = self
            .send(Method::GET, "/ui/assets/icon.svg", None::<&()>, None::<&()>)
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self
                .decode::<serde_json::Value>(response)
                .await
                .map(|_| false),
        }
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, Error> {
        let response = self.send(method, path, None::<&()>, None::<&()>).await?;
        self.decode(response).await
    }

    async fn send<B: Serialize + ?Sized, Q: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{}{}", self.base, path);
        let url = match query {
            Some(query) => with_query(&url, query),
            None => url,
        };
        let makes_tasks = method == Method::POST
            && matches!(
                path,
                "/api/v1/tasks" | "/api/v1/tasks/batch" | "/api/v1/workflows"
            );
        let mut request = self.authorize(self.http.request(method, &url));
        if makes_tasks {
            // The caller's trace when it gave one, else a trace of its own per request.
            let traceparent = self.traceparent.clone().unwrap_or_else(new_traceparent);
            request = request.header("traceparent", traceparent);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, self.timeouts.request, false))
    }

    /// No (whole) answer: a timeout that was ours to set is [`Error::TimedOut`], with the
    /// limit that ran out; anything else is [`Error::Unreachable`].
    fn transport_error(
        &self,
        error: &reqwest::Error,
        limit: Option<Duration>,
        stream: bool,
    ) -> Error {
        match limit {
            Some(after) if error.is_timeout() && !error.is_connect() => Error::TimedOut {
                url: self.base.clone(),
                after,
                stream,
            },
            _ => Error::Unreachable {
                url: self.base.clone(),
                reason: error_chain(error),
            },
        }
    }

    /// Turns a response into `T`, or into the API's error.
    async fn decode<T: DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, Error> {
        let status = response.status();
        let url = response.url().to_string();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            // The request timeout covers reading the answer too.
            Err(e) if e.is_timeout() => {
                return Err(self.transport_error(&e, self.timeouts.request, false));
            }
            Err(e) => {
                return Err(Error::BadResponse {
                    url,
                    status: status.as_u16(),
                    detail: error_chain(&e),
                });
            }
        };
        decode_body(status, url, &bytes)
    }
}

/// Turns an answer's status and body into `T`, or into the API's error.
fn decode_body<T: DeserializeOwned>(
    status: StatusCode,
    url: String,
    bytes: &[u8],
) -> Result<T, Error> {
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(|e| Error::BadResponse {
            url,
            status: status.as_u16(),
            detail: e.to_string(),
        });
    }
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => Err(Error::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        }),
        Err(_) => Err(Error::BadResponse {
            url,
            status: status.as_u16(),
            detail: excerpt(bytes),
        }),
    }
}

/// The innermost cause of an error, which is the informative one for a human
/// ("connection refused" rather than "error sending request").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        deepest = cause.to_string();
        source = cause.source();
    }
    if error.to_string().contains("timed out") || deepest.contains("timed out") {
        return "timed out".to_owned();
    }
    deepest
}

/// A one-line excerpt of a body that is not ours (an HTML error page, a proxy's answer).
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text: Vec<&str> = text.split_whitespace().collect();
    if text.is_empty() {
        return "empty body (is this a taskd server?)".to_owned();
    }
    let mut line: String = text.join(" ").chars().take(120).collect();
    line.push_str(" … (is this a taskd server?)");
    line
}

/// `url` with `query` as its query string. A list (`label` of [`ListQuery`]) becomes the key
/// repeated once per value, which the form serializer reqwest uses cannot write.
fn with_query<Q: Serialize + ?Sized>(url: &str, query: &Q) -> String {
    // The query types are this crate's flat structs of strings, numbers and lists of
    // strings: they always serialize (and a dropped filter must never widen a request).
    let encoded = serde_html_form::to_string(query).expect("query parameters serialize");
    if encoded.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?{encoded}")
    }
}

/// A name as one path segment: the characters a name may hold need no escaping, but a bad
/// name (a space, a slash) must reach taskd as itself and be refused there.
fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
