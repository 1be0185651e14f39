//! What stands between the network and the handlers: CORS, the same-site rules (the `Host`
//! check against DNS rebinding, cross-origin browser writes, JSON-only bodies), bearer-token
//! auth with scopes, the write rate limit and the request timeout. Each is a small axum
//! middleware over one shared [`Guard`]; every refusal is the API's JSON error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{AuthError, Principal, Scope, Verifier, kind_needs_admin};

/// The security settings of the API, from the flags.
pub struct Guard {
    pub auth: Option<Verifier>,
    /// With auth on, /ready, /metrics and the OpenAPI document need a token too.
    pub private_probes: bool,
    pub limiter: Option<RateLimiter>,
    pub timeout: Duration,
    /// Allowed browser origins; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Which `Host` headers are answered.
    pub hosts: HostPolicy,
    /// Whether the web dashboard is served (and with actions): its session cookie counts as
    /// a token only while it is, and only for reads when it is read-only.
    pub dashboard: super::Dashboard,
}

/// Which `Host` a request may name. Wherever a browser can be the client without a token (on
/// a loopback address, and on any address while auth is off) only addresses, `localhost`
/// names and the configured ones are answered: a page whose name an attacker rebinds to
/// taskd's address sends its own name as `Host`. With auth on a non-loopback address every
/// request needs a token a browser does not attach by itself, and names are not checked.
#[derive(Debug, Clone)]
pub enum HostPolicy {
    Any,
    Names(Vec<String>),
}

impl HostPolicy {
    pub fn new(listen: &SocketAddr, auth: bool, extra: &[String]) -> HostPolicy {
        if auth && !listen.ip().is_loopback() {
            return HostPolicy::Any;
        }
        HostPolicy::Names(
            extra
                .iter()
                .filter_map(|n| host_name(n.trim()))
                .map(normalize)
                .collect(),
        )
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let HostPolicy::Names(names) = self else {
            return true;
        };
        let Some(name) = host_name(host).map(normalize) else {
            return false;
        };
        // An address is never a rebound name (a page reaches an address only through a name
        // it controls), and `*.localhost` is loopback by definition (RFC 6761).
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || names.contains(&name)
    }
}

/// A host name as compared: lower case, without the root's trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The name part of a `Host` value or of an origin's authority; `None` when it is not one
/// (empty, a bad port, text after an IPv6 literal's `]`).
fn host_name(authority: &str) -> Option<&str> {
    fn is_port(text: &str) -> bool {
        !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            None if after.is_empty() => Some(inside),
            Some(port) if is_port(port) => Some(inside),
            _ => None,
        };
    }
    let name = match authority.split_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => authority,
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid.then_some(name)
}

/// The authority a request was sent to, as its `Host` header and its URI name it: HTTP/2
/// carries it in the URI, HTTP/1 in `Host` (an absolute-form URI's authority must then
/// agree, or one of them is a lie).
fn authorities(request: &Request) -> (Option<String>, Option<String>) {
    let from_header = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned());
    let from_uri = request.uri().authority().map(|a| a.as_str().to_owned());
    (from_header, from_uri)
}

/// Whether a browser's `Origin` (`scheme://authority`) is taskd's own: the authority the
/// request was sent to.
fn is_own_origin(origin: &str, host: Option<&str>) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| Some(authority) == host)
}

/// Methods that change nothing, which browsers may send across sites freely.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The same-site rules, before auth (a browser attaches no token, but a rebinding page or a
/// cross-site form should not even get a 401 to learn from):
/// 1. the `Host` must be one this API answers to ([`HostPolicy`]);
/// 2. a browser's state-changing request (it carries `Origin`, or `Sec-Fetch-Site:
///    cross-site`) must come from an allowed CORS origin or from taskd's own origin;
/// 3. a state-changing request with a body, or with any `Content-Type`, must send JSON, so
///    a cross-site form or `text/plain` fetch (which browsers send without a preflight)
///    cannot pose as an API call.
///
/// taskctl, curl and the SDKs send no `Origin` and send JSON, so they are unaffected.
pub async fn same_site(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let (from_header, from_uri) = authorities(&request);
    let host = from_header.clone().or_else(|| from_uri.clone());
    let refused = match (&from_header, &from_uri) {
        // Two `Host` headers: which one a proxy on the way read is anyone's guess.
        _ if headers.get_all(header::HOST).iter().count() > 1 => true,
        (Some(h), Some(u)) if !h.eq_ignore_ascii_case(u) => true,
        _ => host.as_deref().is_some_and(|h| !guard.hosts.allows(h)),
    };
    if refused {
        let shown: String = host
            .as_deref()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "this taskd does not answer for host '{shown}'; add it with --allowed-host if it is yours"
            ),
        )
        .into_response();
    }
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    let allowed_origin = |origin: &str| {
        guard
            .cors_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == origin)
            || is_own_origin(origin, host.as_deref())
    };
    let refused_origin = match origin {
        Some(origin) => !allowed_origin(origin),
        None => cross_site,
    };
    if refused_origin {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "{} from the web origin '{}' is refused: allow the origin with --cors-origin",
                request.method(),
                origin.unwrap_or("a cross-site page")
            ),
        )
        .into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let is_json = content_type.is_some_and(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if (has_body || content_type.is_some()) && !is_json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{} needs a JSON body sent as Content-Type: application/json (got {}); with curl add -H 'Content-Type: application/json'",
                request.method(),
                content_type.map_or_else(|| "no Content-Type".to_owned(), |ct| format!("'{ct}'"))
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The scope a route needs, or `None` for the routes that stay open (the probes and the
/// OpenAPI document, unless `private_probes`).
pub fn required_scope(method: &Method, route: &str, private_probes: bool) -> Option<Scope> {
    match route {
        "/health" => None,
        "/ready" | "/metrics" | "/api/v1/openapi.json" => private_probes.then_some(Scope::Read),
        "/api/v1/dlq/purge"
        | "/api/v1/queues/{queue}"
        | "/api/v1/queues/{queue}/pause"
        | "/api/v1/queues/{queue}/resume"
        | "/api/v1/audit" => Some(Scope::Admin),
        "/api/v1/leases"
        | "/api/v1/tasks/{id}/heartbeat"
        | "/api/v1/tasks/{id}/complete"
        | "/api/v1/tasks/{id}/fail"
        | "/api/v1/tasks/{id}/logs"
            if *method == Method::POST =>
        {
            Some(Scope::Worker)
        }
        _ if *method == Method::GET || *method == Method::HEAD => Some(Scope::Read),
        _ => Some(Scope::Write),
    }
}

/// Checks the bearer token against the route's scope and leaves the [`Principal`] in the
/// request for handlers that check more (the privileged kinds).
pub async fn authenticate(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(verifier) = &guard.auth else {
        return next.run(request).await;
    };
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let Some(needed) = required_scope(request.method(), &route, guard.private_probes) else {
        return next.run(request).await;
    };
    let (token, from_cookie) = match bearer(&request, guard.dashboard) {
        Ok(found) => found,
        Err(error) => return unauthorized(&error),
    };
    let principal = match verifier.verify(token) {
        Ok(principal) => principal,
        Err(error) => return unauthorized(&error),
    };
    if !principal.allows(needed) {
        return forbidden(needed, &format!("{} {route}", request.method()));
    }
    if from_cookie && !is_safe(request.method()) {
        // The browser attaches the cookie by itself, to any request for this site (other
        // ports and sibling names included): a write on it must come from a page of this
        // very origin, whatever --cors-origin allows, and not from a read-only dashboard.
        if let Some(refusal) = cookie_write_refusal(&request, guard.dashboard) {
            return refusal;
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The request's bearer token, and whether it came from the dashboard's session cookie
/// (set by `/ui/login`) rather than the `Authorization` header. The cookie counts only while
/// the dashboard is served; two cookies of that name (one planted by a sibling site) count as
/// none.
fn bearer(request: &Request, dashboard: super::Dashboard) -> Result<(&str, bool), AuthError> {
    let Some(header) = request.headers().get(header::AUTHORIZATION) else {
        if dashboard == super::Dashboard::Off {
            return Err(AuthError::Missing);
        }
        return super::ui::token_cookie(request.headers())
            .map(|token| (token, true))
            .ok_or(AuthError::Missing);
    };
    let value = header.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok((token.trim(), false))
}

/// Why a state-changing request signed in by the session cookie is refused, if it is: its
/// `Origin` must be exactly this taskd's (scheme aside, `Host` is what the browser asked
/// for), and a read-only dashboard's session writes nothing.
fn cookie_write_refusal(request: &Request, dashboard: super::Dashboard) -> Option<Response> {
    if dashboard == (super::Dashboard::On { readonly: true }) {
        return Some(
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this taskd serves a read-only dashboard (--ui-readonly): its sessions cannot change anything; use a token in the Authorization header",
            )
            .into_response(),
        );
    }
    let (from_header, from_uri) = authorities(request);
    let host = from_header.or(from_uri);
    let own = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|origin| is_own_origin(origin, host.as_deref()));
    (!own).then(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a change made with the dashboard's session must come from the dashboard's own pages",
        )
        .into_response()
    })
}

fn unauthorized(error: &AuthError) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"taskd\""),
    );
    response
}

fn forbidden(needed: Scope, what: &str) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "{what} needs the {} scope, which this token lacks",
            needed.as_str()
        ),
    )
    .into_response()
}

/// For handlers: refuses a privileged kind (shell, salt, kubectl) to a token without
/// `admin`. Without auth there is no principal and nothing to check.
pub fn check_kind(principal: Option<&Principal>, kind: &str) -> Result<(), ApiError> {
    match principal {
        Some(p) if kind_needs_admin(kind) && !p.allows(Scope::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {kind} kind needs the admin scope, which this token lacks"),
        )),
        _ => Ok(()),
    }
}

/// A token bucket per client: `rate` writes per second, bursts of up to `rate`.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one write for `client` at `now`: `Ok` or the wait until the next one.
    pub fn take(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        // Forget idle clients now and then so the map cannot grow without bound.
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(client.to_owned()).or_insert((self.rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Limits writes per client: the token when auth is on, else the peer address.
pub async fn rate_limit(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let Some(limiter) = &guard.limiter else {
        return next.run(request).await;
    };
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let client = match request.extensions().get::<Principal>() {
        Some(p) => format!("token:{}", p.token_key),
        None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| client_of(c.0.ip())),
    };
    match limiter.take(&client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many writes from this client; retry in {seconds}s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

/// The rate-limit key of an address: IPv4 as it is, IPv6 by its /64 (one host usually holds
/// a whole /64, and could otherwise rotate through it).
fn client_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Answers 503 when a handler takes longer than the timeout. Streams (events, log follow)
/// answer their headers at once, so only their setup is timed.
pub async fn timeout(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    // A lease request may wait for work as long as it asks (up to 30 s) before its own
    // work starts.
    let limit = if request.uri().path() == "/api/v1/leases" {
        guard.timeout + std::time::Duration::from_millis(taskplane_api::MAX_LEASE_WAIT_MS)
    } else {
        guard.timeout
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {}s; try again",
                guard.timeout.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// CORS: nothing unless the request's Origin is allowed; then the allow headers, and
/// preflights answered here (before auth: browsers send no token on a preflight).
pub async fn cors(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let allowed = origin.filter(|o| {
        guard
            .cors_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == o)
    });
    let Some(origin) = allowed else {
        // The answer depends on Origin whenever CORS is on: caches must keep them apart.
        let mut response = next.run(request).await;
        if !guard.cors_origins.is_empty() {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("origin"));
        }
        return response;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, idempotency-key, last-event-id"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("location, retry-after"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scopes_of_what_they_do() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/health", true), None);
        assert_eq!(required_scope(&get, "/metrics", false), None);
        assert_eq!(required_scope(&get, "/metrics", true), Some(Scope::Read));
        assert_eq!(required_scope(&get, "/api/v1/openapi.json", false), None);
        assert_eq!(
            required_scope(&get, "/api/v1/tasks", false),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&get, "/api/v1/events", false),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/tasks", false),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/tasks/{id}/cancel", false),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/dlq/retry", false),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&post, "/api/v1/dlq/purge", false),
            Some(Scope::Admin)
        );
        for route in ["/api/v1/leases", "/api/v1/tasks/{id}/complete"] {
            assert_eq!(required_scope(&post, route, false), Some(Scope::Worker));
        }
        assert_eq!(
            required_scope(&get, "/api/v1/kinds", false),
            Some(Scope::Read)
        );
    }

    #[test]
    fn without_a_token_only_addresses_localhost_and_configured_names_are_answered() {
        let listen: SocketAddr = "127.0.0.1:7700".parse().expect("addr");
        let open: SocketAddr = "0.0.0.0:7700".parse().expect("addr");
        let extra = ["Ops.Example:8080".to_owned(), "tunnel.example.".to_owned()];
        for policy in [
            HostPolicy::new(&listen, false, &extra),
            HostPolicy::new(&listen, true, &extra),
            HostPolicy::new(&open, false, &extra),
        ] {
            for ok in [
                "localhost",
                "LOCALHOST.:7700",
                "127.0.0.1:7700",
                "10.0.0.5:7700",
                "[::1]:7700",
                "[::1]",
                "ops.example:443",
                "tunnel.example",
                "taskd.localhost:7700",
            ] {
                assert!(policy.allows(ok), "{ok}");
            }
            for refused in [
                "evil.example",
                "evil.example:7700",
                "localhost.evil.example",
                "[::1]evil.example",
                "[::1]:",
                "localhost:x",
                "a b",
                "\u{fffd}",
                "",
            ] {
                assert!(!policy.allows(refused), "{refused}");
            }
        }
        assert!(HostPolicy::new(&open, true, &[]).allows("anything.example"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(client_of(mapped), "ip:10.0.0.1");
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(limiter.take("a", t0).is_ok());
        assert!(limiter.take("a", t0).is_ok());
        let wait = limiter.take("a", t0).expect_err("burst used up");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limiter.take("b", t0).is_ok(), "clients are apart");
        assert!(limiter.take("a", t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn privileged_kinds_need_admin() {
        let writer = Principal {
            subject: "ci".into(),
            scopes: [Scope::Write].into(),
            token_key: "abc".into(),
        };
        assert!(check_kind(Some(&writer), "echo").is_ok());
        assert_eq!(
            check_kind(Some(&writer), "shell").map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
        assert!(check_kind(None, "shell").is_ok(), "auth off");
    }
}
