//! `http`: one HTTP request; a 2xx answer is success, anything else a failed attempt.

use std::time::Duration;

use serde_json::{Value, json};
use taskplane_api::LogStream;
use taskplane_api::kinds::HttpPayload;

use super::{ExecError, Executor, TaskContext, parse};
use crate::store::BoxFuture;

/// How much of a response body the result keeps.
const BODY_EXCERPT_BYTES: usize = 4096;

pub struct Http {
    client: Option<reqwest::Client>,
}

impl Http {
    pub fn new() -> Http {
        // Building fails only when no TLS backend can be set up; the kind then fails each
        // attempt with a clear message instead of stopping the daemon.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("taskd/", env!("CARGO_PKG_VERSION")))
            .build()
            .ok();
        Http { client }
    }
}

impl Executor for Http {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let client =
                client.ok_or_else(|| ExecError::new("http: the HTTP client could not start"))?;
            let spec: HttpPayload = parse("http", &ctx.payload)?;
            let method = spec.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| ExecError(format!("http: '{method}' is not an HTTP method")))?;
            let mut request = client.request(method.clone(), &spec.url);
            for (name, value) in &spec.headers {
                request = request.header(name, value);
            }
            request = match spec.body {
                Some(Value::String(text)) => request.body(text),
                Some(value) => request.json(&value),
                None => request,
            };
            let response = request.send().await.map_err(|e| {
                ExecError(format!(
                    "http: {method} {} failed: {}",
                    spec.url,
                    taskplane_api::error_chain(&e)
                ))
            })?;
            let status = response.status();
            ctx.log
                .line(
                    LogStream::System,
                    format!("{method} {} -> {status}", spec.url),
                )
                .await;
            let bytes = response.bytes().await.map_err(|e| {
                ExecError(format!(
                    "http: reading the body failed: {}",
                    taskplane_api::error_chain(&e)
                ))
            })?;
            let truncated = bytes.len() > BODY_EXCERPT_BYTES;
            let excerpt =
                String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_EXCERPT_BYTES)]).into_owned();
            if !status.is_success() {
                let short: String = excerpt.chars().take(200).collect();
                return Err(ExecError(format!(
                    "http: {method} {} answered {status}: {short}",
                    spec.url
                )));
            }
            let body = if truncated {
                Value::String(excerpt)
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::String(excerpt))
            };
            Ok(json!({ "status": status.as_u16(), "body": body, "truncated": truncated }))
        })
    }
}
