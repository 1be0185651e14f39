//! `http`: one HTTP request; a 2xx answer is success, anything else a failed attempt.
//!
//! The kind runs with the daemon's network position, so by default it reaches only public
//! addresses ([`AddressPolicy`]). The policy is applied where the address is final: to the
//! addresses a name resolves to, inside the resolver the client connects with (no gap
//! between the check and the connect), to IP-literal URLs (which skip the resolver) and to
//! every redirect target. The client uses no proxy: a proxy would connect on its behalf to
//! addresses the policy never sees. Only the kept part of a body is read; the worker's
//! timeout (the task's own) bounds the whole request.

mod policy;

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use taskplane_api::LogStream;
use taskplane_api::kinds::HttpPayload;

pub use self::policy::{AddressPolicy, Refused, parse_cidr};
use super::{ExecError, Executor, TaskContext, parse};
use crate::util::BoxFuture;

/// How much of a response body the result keeps; no more is read.
const BODY_EXCERPT_BYTES: usize = 4096;
/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 5;

pub struct Http {
    client: Option<reqwest::Client>,
    policy: Arc<AddressPolicy>,
}

impl Http {
    pub fn new(policy: AddressPolicy) -> Http {
        let policy = Arc::new(policy);
        // Building fails only when no TLS backend can be set up; the kind then fails each
        // attempt with a clear message instead of stopping the daemon.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("taskd/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .dns_resolver(PolicyResolver {
                policy: policy.clone(),
            })
            .redirect(redirects(policy.clone()))
            .build()
            .ok();
        Http { client, policy }
    }
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows,
/// so the address checked is the address connected to.
struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(error) => {
                        refused.get_or_insert(error);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(match refused {
                    Some(error) => Box::new(Refused {
                        host: Some(host),
                        ..error
                    }) as Box<dyn StdError + Send + Sync>,
                    None => format!("{host} has no addresses").into(),
                });
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

/// A redirect to a literal address the policy refuses (the client's error does not say
/// where the redirect pointed, so this does).
#[derive(Debug, thiserror::Error)]
#[error("redirected to {to}: {refused}")]
struct RefusedRedirect {
    to: Url,
    refused: Refused,
}

/// Follows at most [`MAX_REDIRECTS`] redirects, each to an address the policy allows: a
/// literal address is checked here, a name by the resolver when it is connected to.
fn redirects(policy: Arc<AddressPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        match check_literal(&policy, attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => {
                let to = attempt.url().clone();
                attempt.error(RefusedRedirect { to, refused })
            }
        }
    })
}

/// Checks a URL whose host is an IP address (the resolver never sees those).
fn check_literal(policy: &AddressPolicy, url: &Url) -> Result<(), Refused> {
    // The URL parser writes IP hosts in their canonical form (IPv6 in brackets), so a host
    // that does not parse here is a name.
    let literal = url
        .host_str()
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|host| host.parse::<IpAddr>().ok());
    match literal {
        Some(ip) => policy.check(ip),
        None => Ok(()),
    }
}

/// Everything about a request that can be checked before connecting: the method, the
/// headers (submit checks them too, but a task queued by an older taskd was not), the URL
/// and, when the URL names an IP address, that address.
fn plan(spec: &HttpPayload, policy: &AddressPolicy) -> Result<(Method, Url), ExecError> {
    let method = spec.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| ExecError(format!("http: '{method}' is not an HTTP method")))?;
    spec.check_headers()
        .map_err(|e| ExecError(format!("http: {e}")))?;
    let url = Url::parse(&spec.url)
        .map_err(|e| ExecError(format!("http: '{}' is not a URL: {e}", spec.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ExecError(format!(
            "http: url '{}' must start with http:// or https://",
            spec.url
        )));
    }
    check_literal(policy, &url)
        .map_err(|refused| ExecError(format!("http: {method} {url} refused: {refused}")))?;
    Ok((method, url))
}

/// One line for a failed send: the policy's refusal when that is the cause (with the
/// redirect that led there), else the deepest cause.
fn describe(method: &Method, url: &Url, error: &reqwest::Error) -> String {
    let redirected = error
        .url()
        .filter(|at| *at != url)
        .map(|at| format!(" (redirected to {at})"))
        .unwrap_or_default();
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedRedirect>() {
            return format!("http: {method} {url} refused: {refused}");
        }
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return format!("http: {method} {url}{redirected} refused: {refused}");
        }
        if let Some(too_many) = cause.downcast_ref::<TooManyRedirects>() {
            return format!("http: {method} {url} failed: {too_many}");
        }
        source = cause.source();
    }
    format!(
        "http: {method} {url}{redirected} failed: {}",
        taskplane_api::error_chain(error)
    )
}

impl Executor for Http {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, ExecError>> {
        let client = self.client.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let client =
                client.ok_or_else(|| ExecError::new("http: the HTTP client could not start"))?;
            let spec: HttpPayload = parse("http", &ctx.payload)?;
            let (method, url) = plan(&spec, &policy)?;
            let mut request = client.request(method.clone(), url.clone());
            for (name, value) in &spec.headers {
                request = request.header(name, value);
            }
            // The target joins the task's trace, unless the payload names its own.
            if let Some(traceparent) = &ctx.traceparent
                && !spec
                    .headers
                    .keys()
                    .any(|name| name.eq_ignore_ascii_case("traceparent"))
            {
                request = request.header("traceparent", traceparent);
            }
            request = match spec.body {
                Some(Value::String(text)) => request.body(text),
                Some(value) => request.json(&value),
                None => request,
            };
            let mut response = request
                .send()
                .await
                .map_err(|e| ExecError(describe(&method, &url, &e)))?;
            let status = response.status();
            ctx.log
                .line(LogStream::System, format!("{method} {url} -> {status}"))
                .await;
            // Read only what the result keeps; dropping the response then closes the
            // connection instead of draining an answer of any size.
            let mut kept = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                ExecError(format!(
                    "http: reading the body failed: {}",
                    taskplane_api::error_chain(&e)
                ))
            })? {
                let room = BODY_EXCERPT_BYTES - kept.len();
                if chunk.len() > room {
                    kept.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                kept.extend_from_slice(&chunk);
            }
            drop(response);
            let excerpt = String::from_utf8_lossy(&kept).into_owned();
            if !status.is_success() {
                let short: String = excerpt.chars().take(200).collect();
                return Err(ExecError(format!(
                    "http: {method} {url} answered {status}: {short}"
                )));
            }
            let body = if truncated {
                Value::String(excerpt)
            } else {
                serde_json::from_slice(&kept).unwrap_or(Value::String(excerpt))
            };
            Ok(json!({ "status": status.as_u16(), "body": body, "truncated": truncated }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(url: &str, headers: &[(&str, &str)]) -> HttpPayload {
        HttpPayload {
            method: None,
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: None,
        }
    }

    #[test]
    fn literal_addresses_are_checked_before_connecting() {
        let policy = AddressPolicy::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00:ec2::254]/",
            // Other spellings of 127.0.0.1 that URL parsers accept.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0/",
        ] {
            let err = plan(&payload(url, &[]), &policy).expect_err(url);
            assert!(
                err.0.contains("refused") && err.0.contains("--http-allow"),
                "{err}"
            );
        }
        for url in [
            "https://example.com/",
            "http://localhost/",
            "http://1.1.1.1/",
        ] {
            plan(&payload(url, &[]), &policy).expect(url);
        }
        let open = AddressPolicy {
            allow_private: false,
            allowed: vec![parse_cidr("127.0.0.0/8").expect("cidr")],
        };
        plan(&payload("http://[::ffff:127.0.0.1]:1/", &[]), &open).expect("allowed");
    }

    #[test]
    fn headers_are_checked_again_when_the_task_runs() {
        // A task queued before submit refused these still must not send them.
        let policy = AddressPolicy::default();
        for (name, value) in [
            ("Host", "internal"),
            ("Transfer-Encoding", "chunked"),
            ("X-Ok", "a\r\nHost: internal"),
        ] {
            let err =
                plan(&payload("https://example.com/", &[(name, value)]), &policy).expect_err(name);
            assert!(err.0.starts_with("http: ") && err.0.contains(name), "{err}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        let resolver = PolicyResolver {
            policy: Arc::new(AddressPolicy::default()),
        };
        let name: Name = "localhost".parse().expect("a name");
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        let refused = err.downcast_ref::<Refused>().expect("a policy refusal");
        assert_eq!(refused.host.as_deref(), Some("localhost"));
        assert!(refused.addr.is_loopback(), "{refused}");

        let resolver = PolicyResolver {
            policy: Arc::new(AddressPolicy {
                allow_private: false,
                allowed: vec![parse_cidr("127.0.0.1").expect("cidr")],
            }),
        };
        let name: Name = "localhost".parse().expect("a name");
        let addrs: Vec<SocketAddr> = resolver.resolve(name).await.expect("allowed").collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip() == IpAddr::from([127, 0, 0, 1])),
            "only the allowed address is handed to the connector: {addrs:?}"
        );
    }
}
