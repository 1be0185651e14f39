//! A typed client of the taskd HTTP API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::Error;
use crate::types::{
    BatchSubmit, BulkResult, DlqPurge, DlqRetry, ErrorBody, Health, ListQuery, LogPage, LogQuery,
    SubmitTask, Task, TaskList,
};

/// A cheap-to-clone handle on one taskd server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`). Checks the URL; does
    /// not connect.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(base).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if parsed.host_str().is_none() {
            return Err(invalid("no host"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("taskplane-api/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&error_chain(&e)))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
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
        Ok((decode(response).await?, created))
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
        let list: TaskList = decode(response).await?;
        Ok(list.tasks)
    }

    pub async fn get(&self, id: Uuid) -> Result<Task, Error> {
        self.call(Method::GET, &format!("/api/v1/tasks/{id}")).await
    }

    pub async fn list(&self, query: &ListQuery) -> Result<TaskList, Error> {
        let response = self
            .send(Method::GET, "/api/v1/tasks", None::<&()>, Some(query))
            .await?;
        decode(response).await
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
        decode(response).await
    }

    /// Requeues failed tasks (all, or of one kind or queue); answers how many.
    pub async fn dlq_retry(&self, filter: &DlqRetry) -> Result<BulkResult, Error> {
        let response = self
            .send(Method::POST, "/api/v1/dlq/retry", Some(filter), None::<&()>)
            .await?;
        decode(response).await
    }

    /// Deletes failed tasks that finished long enough ago; answers how many.
    pub async fn dlq_purge(&self, filter: &DlqPurge) -> Result<BulkResult, Error> {
        let response = self
            .send(Method::POST, "/api/v1/dlq/purge", Some(filter), None::<&()>)
            .await?;
        decode(response).await
    }

    pub async fn health(&self) -> Result<Health, Error> {
        self.call(Method::GET, "/health").await
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T, Error> {
        let response = self.send(method, path, None::<&()>, None::<&()>).await?;
        decode(response).await
    }

    async fn send<B: Serialize + ?Sized, Q: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(query) = query {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|e| Error::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })
    }
}

/// Turns a response into `T`, or into the API's error.
async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    let status = response.status();
    let url = response.url().to_string();
    let bytes = response.bytes().await.map_err(|e| Error::BadResponse {
        url: url.clone(),
        status: status.as_u16(),
        detail: error_chain(&e),
    })?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse {
            url,
            status: status.as_u16(),
            detail: e.to_string(),
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(Error::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        }),
        Err(_) => Err(Error::BadResponse {
            url,
            status: status.as_u16(),
            detail: excerpt(&bytes),
        }),
    }
}

/// The innermost causes of an error, which are the informative ones for a human
/// ("connection refused" rather than "error sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_owned();
    }
    text.chars().take(200).collect()
}
