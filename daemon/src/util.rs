//! Small things every part of the daemon uses: the clock, boxed futures, and URLs fit for
//! logs. Kept apart so that the broker, the HTTP layer and the executors need not import
//! the worker or the store for them.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so that traits with async methods (the store, executors) can be used as
/// trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Now, in Unix milliseconds (UTC): how every instant is stored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A URL fit for logs and errors: the password of the userinfo and the values of
/// secret-looking query parameters (`?password=`, `sslpassword`, `token`, `secret`, `key`, …)
/// become `***`. Passwords are not always percent-encoded, so the userinfo is taken to run
/// to the last `@` whenever a `:` comes before it (a password holding `/`, `?`, `#` or `@`
/// is caught whole); a query value holding `@:` may be redacted more than needed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_query(url);
    };
    let (user, rest) = match rest.rsplit_once('@') {
        Some((userinfo, after)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            (format!("{user}:***@"), after)
        }
        _ => (String::new(), rest),
    };
    format!("{scheme}://{user}{}", redact_query(rest))
}

/// `host/path?a=1&password=x#f` with the secret values of the query replaced.
fn redact_query(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    // Drivers percent-decode names (`%70assword` is `password`), so the check does too.
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/tasks"),
            "postgres://app:***@db:5432/tasks"
        );
        assert_eq!(redact_url("sqlite://taskd.db"), "sqlite://taskd.db");
        assert_eq!(redact_url("amqp://h/vhost"), "amqp://h/vhost");
    }

    #[test]
    fn every_userinfo_and_query_form_is_redacted() {
        for (url, secret) in [
            ("postgres://app:pa/ss@db/tasks", "pa/ss"),
            ("postgres://app:p@ss:w@db:5432/tasks", "p@ss:w"),
            ("amqp://guest:g/u?e#st@rabbit:5672/%2f", "g/u"),
            ("postgres://db/tasks?user=app&password=hunter2", "hunter2"),
            ("postgres://db/tasks?sslpassword=hunter2&x=1", "hunter2"),
            ("redis://h:6379/0?token=abc123#frag", "abc123"),
            ("postgres:///tasks?host=/run/pg&PASSWORD=Zz9", "Zz9"),
            ("postgres://db/t?%70assword=hunter2", "hunter2"),
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains(secret), "{url} -> {redacted}");
            assert!(redacted.contains("***"), "{url} -> {redacted}");
        }
        assert_eq!(
            redact_url("postgres://db/tasks?user=app&password=x"),
            "postgres://db/tasks?user=app&password=***"
        );
        assert_eq!(
            redact_url("amqp://guest@rabbit/v"),
            "amqp://guest@rabbit/v",
            "a user name alone is kept"
        );
    }
}
