//! Queue controls and the audit log on the wire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A queue's settings: `PATCH /api/v1/queues/{queue}` and the pause and resume answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSettings {
    pub queue: String,
    /// Workers take none of its tasks (running ones finish); submits are still accepted.
    pub paused: bool,
    /// At most this many of its tasks run at once, across every worker process.
    #[serde(default)]
    pub max_running: Option<u32>,
    /// At most this many of its tasks start per second, across every worker (a token
    /// bucket with a burst of one second's worth).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
    /// When the settings last changed (absent: the queue has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A queue's controls in words: `paused`, `max 2`, `0.5/s`, joined by commas; empty when it
/// has none. (`taskctl queues` and `taskctl top` show it.)
pub fn controls_text(paused: bool, max_running: Option<u32>, rate_per_sec: Option<f64>) -> String {
    let mut parts = Vec::new();
    if paused {
        parts.push("paused".to_owned());
    }
    if let Some(max) = max_running {
        parts.push(format!("max {max}"));
    }
    if let Some(rate) = rate_per_sec {
        let text = format!("{rate:.3}");
        parts.push(format!(
            "{}/s",
            text.trim_end_matches('0').trim_end_matches('.')
        ));
    }
    parts.join(", ")
}

/// Reads a field that may be absent (`None`: leave it), `null` (`Some(None)`: clear it) or a
/// value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The body of `PATCH /api/v1/queues/{queue}`: each field given is set, `null` clears it,
/// an absent one stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    /// 1 to 100000, or null for no limit.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100000)]
    pub max_running: Option<Option<i64>>,
    /// More than 0 and at most 100000 starts per second, or null for no rate.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub rate_per_sec: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// One operator action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its place in the log (newer is larger).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The token's subject, or `anonymous@<address>` when auth is off.
    pub actor: String,
    /// e.g. `cancel`, `retry`, `dlq.purge`, `queue.pause`, `schedule.create`.
    pub action: String,
    /// A task or workflow id, a queue, a schedule's name.
    pub target: String,
    /// The request's relevant fields.
    pub details: Value,
}

/// `GET /api/v1/audit`: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for older entries; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The query of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "2026-12-01T00:00:00Z")]
    pub since: Option<DateTime<Utc>>,
    /// A token's subject, or `anonymous@<address>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "alice")]
    pub actor: Option<String>,
    /// An action (`cancel`) or a family of them (`dlq`, `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "queue")]
    pub action: Option<String>,
    /// 1 to 1000; defaults to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = 50)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(example = "1234")]
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_read_as_words() {
        assert_eq!(controls_text(false, None, None), "");
        assert_eq!(
            controls_text(true, Some(2), Some(5.0)),
            "paused, max 2, 5/s"
        );
        assert_eq!(controls_text(false, None, Some(0.25)), "0.25/s");
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let patch: QueuePatch = serde_json::from_str(r#"{"max_running": null}"#).expect("a patch");
        assert_eq!(patch.max_running, Some(None));
        assert_eq!(patch.rate_per_sec, None);
        let patch: QueuePatch = serde_json::from_str(r#"{"rate_per_sec": 2.5}"#).expect("a patch");
        assert_eq!(patch.rate_per_sec, Some(Some(2.5)));
        assert!(serde_json::from_str::<QueuePatch>(r#"{"max": 1}"#).is_err());
    }
}
