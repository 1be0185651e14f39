//! Every kind taskd knows, each as one unit: its name, whether only an admin may submit it,
//! the flag that turns it on, and the check of its payload. The built-in kinds are the
//! [`BUILTIN`] table, which validation, auth, the store's bulk retry and the executors'
//! registry all read; declared kinds (`taskd --kinds`) are served by remote workers over the
//! lease protocol and take any JSON payload.

use serde::de::DeserializeOwned;
use serde_json::Value;
use taskplane_api::kinds::{HttpPayload, KubectlPayload, SaltPayload, ShellPayload, SleepPayload};

use super::validate::ValidationError;

/// What must be switched on before a kind runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Always,
    /// `--enable-shell`.
    Shell,
    /// `--enable-provisioning`.
    Provisioning,
}

/// A kind that taskd's own workers run.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    /// Only a token with the admin scope may submit it: it runs programs on the workers.
    pub admin: bool,
    pub gate: Gate,
    /// Checks the payload's shape.
    check: fn(&Value) -> Result<(), ValidationError>,
    /// One line for `taskctl kinds` and `GET /api/v1/kinds`.
    pub about: &'static str,
}

impl Builtin {
    pub fn check(&self, payload: &Value) -> Result<(), ValidationError> {
        (self.check)(payload)
    }
}

/// The built-in kinds, in the order the help text lists them.
pub const BUILTIN: [Builtin; 7] = [
    Builtin {
        name: "noop",
        admin: false,
        gate: Gate::Always,
        check: any,
        about: "succeeds at once",
    },
    Builtin {
        name: "echo",
        admin: false,
        gate: Gate::Always,
        check: any,
        about: "succeeds with its payload as the result",
    },
    Builtin {
        name: "sleep",
        admin: false,
        gate: Gate::Always,
        check: sleep,
        about: "waits {\"ms\": N} milliseconds",
    },
    Builtin {
        name: "shell",
        admin: true,
        gate: Gate::Shell,
        check: shell,
        about: "runs {\"argv\": [...]} on a worker host",
    },
    Builtin {
        name: "http",
        admin: false,
        gate: Gate::Always,
        check: http,
        about: "sends one HTTP request; a 2xx answer succeeds",
    },
    Builtin {
        name: "salt",
        admin: true,
        gate: Gate::Provisioning,
        check: salt,
        about: "runs a Salt state (salt-call, salt or salt-ssh)",
    },
    Builtin {
        name: "kubectl",
        admin: true,
        gate: Gate::Provisioning,
        check: kubectl,
        about: "applies, diffs or rolls out Kubernetes manifests",
    },
];

/// The built-in kind named `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|kind| kind.name == name)
}

/// Whether only an admin may submit (or bulk-retry) tasks of `kind`.
pub fn needs_admin(kind: &str) -> bool {
    builtin(kind).is_some_and(|kind| kind.admin)
}

/// The kinds only an admin may submit, comma-separated (a bound parameter of the bulk retry).
pub fn admin_list() -> String {
    let names: Vec<&str> = BUILTIN.iter().filter(|k| k.admin).map(|k| k.name).collect();
    names.join(",")
}

/// The concurrency key a task of `kind` gets when its submit names none, so that two runs
/// against one target never overlap: `salt` through a master or salt-ssh,
/// `salt:<target>` (`*` when the payload names none); `kubectl apply` and `scale`,
/// `kubectl:<context>/<namespace>` (`-` for the current context, `default`). A masterless
/// `salt` run and kubectl's reads get none.
pub fn default_concurrency_key(kind: &str, payload: &Value) -> Option<String> {
    let field = |name: &str| payload.get(name).and_then(Value::as_str);
    match kind {
        "salt" if field("mode") != Some("local") => {
            Some(format!("salt:{}", field("target").unwrap_or("*")))
        }
        "kubectl" if matches!(field("action"), Some("apply" | "scale")) => Some(format!(
            "kubectl:{}/{}",
            field("context").unwrap_or("-"),
            field("namespace").unwrap_or("default")
        )),
        _ => None,
    }
}

/// Checks the names given to `--kinds`: names by the API's rule, none built in, none twice.
pub fn check_declared(names: &[String]) -> Result<(), String> {
    for (i, name) in names.iter().enumerate() {
        if !super::validate::valid_name(name) {
            return Err(format!(
                "--kinds: '{name}' is not a kind name (1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit)"
            ));
        }
        if builtin(name).is_some() {
            return Err(format!(
                "--kinds: '{name}' is a built-in kind; declared kinds are the ones remote workers serve"
            ));
        }
        if names[..i].contains(name) {
            return Err(format!("--kinds: '{name}' is given twice"));
        }
    }
    Ok(())
}

fn any(_: &Value) -> Result<(), ValidationError> {
    Ok(())
}

fn sleep(payload: &Value) -> Result<(), ValidationError> {
    parse::<SleepPayload>("sleep", payload).map(drop)
}

fn shell(payload: &Value) -> Result<(), ValidationError> {
    let shell: ShellPayload = parse("shell", payload)?;
    if shell.argv.is_empty() || shell.argv[0].is_empty() {
        return Err(ValidationError::new(
            "invalid_payload",
            "shell: argv must name a program, e.g. {\"argv\": [\"echo\", \"hi\"]}",
        ));
    }
    Ok(())
}

fn salt(payload: &Value) -> Result<(), ValidationError> {
    let salt: SaltPayload = parse("salt", payload)?;
    taskplane_provisioning::salt::validate(&salt)
        .map_err(|e| ValidationError::new("invalid_payload", e.to_string()))
}

fn kubectl(payload: &Value) -> Result<(), ValidationError> {
    let kubectl: KubectlPayload = parse("kubectl", payload)?;
    taskplane_provisioning::kubectl::plan(&kubectl)
        .map(drop)
        .map_err(|e| ValidationError::new("invalid_payload", e.to_string()))
}

fn http(payload: &Value) -> Result<(), ValidationError> {
    let http: HttpPayload = parse("http", payload)?;
    if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
        return Err(ValidationError::new(
            "invalid_payload",
            format!(
                "http: url '{}' must start with http:// or https://",
                http.url
            ),
        ));
    }
    if let Some(method) = &http.method
        && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(ValidationError::new(
            "invalid_payload",
            format!("http: '{method}' is not an HTTP method"),
        ));
    }
    http.check_headers()
        .map_err(|e| ValidationError::new("invalid_payload", format!("http: {e}")))
}

fn parse<T: DeserializeOwned>(kind: &str, payload: &Value) -> Result<T, ValidationError> {
    T::deserialize(payload)
        .map_err(|e| ValidationError::new("invalid_payload", format!("{kind}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_runs_get_a_key_per_target() {
        let key = |kind: &str, payload: Value| default_concurrency_key(kind, &payload);
        assert_eq!(
            key("salt", serde_json::json!({"target": "web1"})).as_deref(),
            Some("salt:web1")
        );
        assert_eq!(
            key("salt", serde_json::json!({})).as_deref(),
            Some("salt:*")
        );
        assert_eq!(
            key("salt", serde_json::json!({"mode": "ssh", "target": "db*"})).as_deref(),
            Some("salt:db*")
        );
        assert_eq!(key("salt", serde_json::json!({"mode": "local"})), None);
        assert_eq!(
            key(
                "kubectl",
                serde_json::json!({"action": "apply", "context": "prod", "namespace": "web"})
            )
            .as_deref(),
            Some("kubectl:prod/web")
        );
        assert_eq!(
            key("kubectl", serde_json::json!({"action": "scale"})).as_deref(),
            Some("kubectl:-/default")
        );
        assert_eq!(
            key("kubectl", serde_json::json!({"action": "status"})),
            None
        );
        assert_eq!(key("shell", serde_json::json!({"argv": ["x"]})), None);
    }

    #[test]
    fn the_table_is_the_wire_list_and_admin_kinds_are_the_ones_running_programs() {
        let names: Vec<&str> = BUILTIN.iter().map(|k| k.name).collect();
        assert_eq!(names, taskplane_api::kinds::BUILTIN_KINDS);
        assert_eq!(admin_list(), "shell,salt,kubectl");
        assert!(needs_admin("shell") && !needs_admin("echo") && !needs_admin("resize"));
    }

    #[test]
    fn declared_names_are_checked() {
        let ok = |names: &[&str]| {
            check_declared(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(ok(&["resize", "report.monthly"]).is_ok());
        assert!(ok(&["shell"]).expect_err("refused").contains("built-in"));
        assert!(ok(&["a", "a"]).expect_err("refused").contains("twice"));
        assert!(
            ok(&["-x"])
                .expect_err("refused")
                .contains("not a kind name")
        );
        assert!(ok(&[""]).expect_err("refused").contains("not a kind name"));
    }
}
