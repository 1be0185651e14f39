//! Prometheus metrics of one taskd process: counters, a gauge and histograms kept in memory
//! and rendered as text on `/metrics`, plus the queue depths read from the store at scrape
//! time (every process sees the same database, so any of them can report them).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The most distinct queue (and kind) names that get series of their own; later names are
/// counted under `other`, so a client inventing names cannot grow `/metrics` without bound.
pub const MAX_NAMED: usize = 100;

/// The label value for names past the cap, unknown methods and unmatched routes.
pub const OTHER: &str = "other";

/// A bounded set of label values: the first [`MAX_NAMED`] names seen keep their own.
#[derive(Debug, Default)]
struct Names(Mutex<HashSet<String>>);

impl Names {
    fn label(&self, name: &str) -> String {
        let Ok(mut names) = self.0.lock() else {
            return OTHER.to_owned();
        };
        if names.contains(name) {
            return name.to_owned();
        }
        if names.len() < MAX_NAMED && name != OTHER {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER.to_owned()
    }
}

/// The method as a label: the standard ones, else `other` (a raw method is any token).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => OTHER,
    }
}

/// Folds queue depths (read from the store, so their names come from any writer) into at most
/// [`MAX_NAMED`] queues: the deepest keep their names, the rest are summed as `other`.
pub fn fold_depths(counts: Vec<(String, String, u64)>) -> Vec<(String, String, u64)> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (queue, _, n) in &counts {
        *totals.entry(queue.as_str()).or_default() += n;
    }
    if totals.len() <= MAX_NAMED {
        return counts;
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: HashSet<String> = ranked
        .iter()
        .take(MAX_NAMED - 1)
        .map(|(q, _)| (*q).to_owned())
        .collect();
    let mut folded: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (queue, status, n) in counts {
        let queue = if named.contains(&queue) {
            queue
        } else {
            OTHER.to_owned()
        };
        *folded.entry((queue, status)).or_default() += n;
    }
    folded.into_iter().map(|((q, s), n)| (q, s, n)).collect()
}

#[derive(Debug, Default)]
pub struct Metrics {
    queues: Names,
    kinds: Names,
    schedules: Names,
    schedule_fires: Mutex<BTreeMap<(String, &'static str), u64>>,
    submitted: Mutex<BTreeMap<(String, String), u64>>,
    finished: Mutex<BTreeMap<(String, String, String), u64>>,
    duration: Mutex<BTreeMap<(String, String), Histogram>>,
    queue_wait: Mutex<BTreeMap<(String, String), Histogram>>,
    http: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    busy: AtomicU64,
    dropped: AtomicU64,
    streams: std::sync::Arc<AtomicU64>,
}

/// Counts one open stream (events or a log follow) until dropped.
pub struct OpenStream(std::sync::Arc<AtomicU64>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn submitted(&self, queue: &str, kind: &str) {
        let key = (self.queues.label(queue), self.kinds.label(kind));
        if let Ok(mut map) = self.submitted.lock() {
            *map.entry(key).or_default() += 1;
        }
    }

    /// An attempt of a task created at `created` ran from `started` to `ended` (Unix
    /// milliseconds; a clock that went back counts as no time): [`Metrics::finished`].
    pub fn attempt_ended(
        &self,
        queue: &str,
        kind: &str,
        status: &str,
        created: i64,
        started: i64,
        ended: i64,
    ) {
        let seconds = |from: i64, to: i64| (to - from).max(0) as f64 / 1000.0;
        self.finished(
            queue,
            kind,
            status,
            seconds(started, ended),
            seconds(created, started),
        );
    }

    /// An attempt ended: its outcome, how long it ran and how long it waited to start.
    pub fn finished(&self, queue: &str, kind: &str, status: &str, ran: f64, waited: f64) {
        let key = (self.queues.label(queue), self.kinds.label(kind));
        if let Ok(mut map) = self.finished.lock() {
            *map.entry((key.0.clone(), key.1.clone(), status.to_owned()))
                .or_default() += 1;
        }
        if let Ok(mut map) = self.duration.lock() {
            map.entry(key.clone()).or_default().observe(ran);
        }
        if let Ok(mut map) = self.queue_wait.lock() {
            map.entry(key).or_default().observe(waited);
        }
    }

    /// A scheduler round (or a trigger) ended `n` fire times of `schedule` with `outcome`:
    /// `fired`, `skipped`, `missed`, `invalid` or `triggered`.
    pub fn schedule_fires(&self, schedule: &str, outcome: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let key = (self.schedules.label(schedule), outcome);
        if let Ok(mut map) = self.schedule_fires.lock() {
            *map.entry(key).or_default() += n;
        }
    }

    /// A stream starts; it counts in `taskplane_http_open_streams` while the guard lives.
    pub fn stream_opened(&self) -> OpenStream {
        self.streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.streams.clone())
    }

    /// A broker delivered a task that was not ready (a duplicate, a cancelled task).
    pub fn delivery_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_busy(&self, slots: usize) {
        self.busy.store(slots as u64, Ordering::Relaxed);
    }

    pub fn http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.http.lock() {
            // Routes are templates or `unmatched` (bounded by the router); methods are not.
            map.entry((method_label(method).to_owned(), route.to_owned(), status))
                .or_default()
                .observe(seconds);
        }
    }

    /// Everything but the queue depths, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP taskplane_tasks_submitted_total Tasks accepted by this process."
        );
        let _ = writeln!(out, "# TYPE taskplane_tasks_submitted_total counter");
        if let Ok(map) = self.submitted.lock() {
            for ((queue, kind), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "taskplane_tasks_submitted_total{{queue=\"{}\",kind=\"{}\"}} {n}",
                    escape(queue),
                    escape(kind)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP taskplane_tasks_finished_total Attempts finished by this process, by outcome."
        );
        let _ = writeln!(out, "# TYPE taskplane_tasks_finished_total counter");
        if let Ok(map) = self.finished.lock() {
            for ((queue, kind, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "taskplane_tasks_finished_total{{queue=\"{}\",kind=\"{}\",status=\"{}\"}} {n}",
                    escape(queue),
                    escape(kind),
                    escape(status)
                );
            }
        }
        for (name, help, map) in [
            (
                "taskplane_task_duration_seconds",
                "How long attempts ran.",
                &self.duration,
            ),
            (
                "taskplane_queue_wait_seconds",
                "How long tasks waited from creation to their attempt's start.",
                &self.queue_wait,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            if let Ok(map) = map.lock() {
                for ((queue, kind), histogram) in map.iter() {
                    let labels = format!("queue=\"{}\",kind=\"{}\"", escape(queue), escape(kind));
                    histogram.render(out, name, &labels);
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP taskplane_worker_busy_slots Worker slots running a task now."
        );
        let _ = writeln!(out, "# TYPE taskplane_worker_busy_slots gauge");
        let _ = writeln!(
            out,
            "taskplane_worker_busy_slots {}",
            self.busy.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP taskplane_deliveries_dropped_total Broker deliveries of tasks that were not ready (duplicates, cancelled tasks), acknowledged and dropped."
        );
        let _ = writeln!(out, "# TYPE taskplane_deliveries_dropped_total counter");
        let _ = writeln!(
            out,
            "taskplane_deliveries_dropped_total {}",
            self.dropped.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP taskplane_http_open_streams Event streams and log follows being served now."
        );
        let _ = writeln!(out, "# TYPE taskplane_http_open_streams gauge");
        let _ = writeln!(
            out,
            "taskplane_http_open_streams {}",
            self.streams.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP taskplane_schedule_fires_total Fire times of schedules this process handled, by outcome (fired, skipped, missed, invalid, triggered)."
        );
        let _ = writeln!(out, "# TYPE taskplane_schedule_fires_total counter");
        if let Ok(map) = self.schedule_fires.lock() {
            for ((schedule, outcome), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "taskplane_schedule_fires_total{{schedule=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(schedule)
                );
            }
        }
        let name = "taskplane_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} HTTP requests by route and status.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        if let Ok(map) = self.http.lock() {
            for ((method, route, status), histogram) in map.iter() {
                let labels = format!(
                    "method=\"{}\",route=\"{}\",status=\"{status}\"",
                    escape(method),
                    escape(route)
                );
                histogram.render(out, name, &labels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(1000.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 0"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.25\"} 2"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3"), "{out}");
    }

    #[test]
    fn counters_render_with_escaped_labels() {
        let metrics = Metrics::default();
        metrics.submitted("mail", "echo");
        metrics.submitted("mail", "echo");
        metrics.finished("mail", "e\"cho", "succeeded", 0.01, 0.002);
        metrics.set_busy(3);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("taskplane_tasks_submitted_total{queue=\"mail\",kind=\"echo\"} 2"));
        assert!(
            out.contains("kind=\"e\\\"cho\",status=\"succeeded\"} 1"),
            "{out}"
        );
        assert!(out.contains("taskplane_worker_busy_slots 3"));
    }

    #[test]
    fn label_values_come_from_bounded_sets() {
        let metrics = Metrics::default();
        for i in 0..3000 {
            metrics.http(&format!("M{i}"), "unmatched", 405, 0.001);
            metrics.submitted(&format!("q{i}"), &format!("k{i}"));
            metrics.finished(&format!("q{i}"), "echo", "succeeded", 0.01, 0.0);
        }
        metrics.http("GET", "/api/v1/tasks", 200, 0.001);
        let mut out = String::new();
        metrics.render(&mut out);
        let series = |prefix: &str| out.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(
            series("taskplane_http_request_duration_seconds_count"),
            2,
            "{out}"
        );
        assert!(out.contains("method=\"other\",route=\"unmatched\""));
        assert_eq!(series("taskplane_tasks_submitted_total{"), MAX_NAMED + 1);
        assert_eq!(series("taskplane_tasks_finished_total{"), MAX_NAMED + 1);
        assert!(
            out.contains("taskplane_tasks_submitted_total{queue=\"other\",kind=\"other\"} 2900")
        );
    }

    #[test]
    fn depths_of_many_queues_fold_into_other() {
        let few = vec![("a".to_owned(), "queued".to_owned(), 3)];
        assert_eq!(fold_depths(few.clone()), few);
        let many: Vec<(String, String, u64)> = (0..500)
            .map(|i| (format!("q{i:03}"), "queued".to_owned(), i))
            .collect();
        let folded = fold_depths(many);
        assert_eq!(folded.len(), MAX_NAMED);
        assert!(
            folded.iter().any(|(q, _, n)| q == "q499" && *n == 499),
            "the deepest keep names"
        );
        let other: u64 = folded
            .iter()
            .filter(|(q, _, _)| q == OTHER)
            .map(|(_, _, n)| n)
            .sum();
        assert_eq!(other, (0..=400).sum::<u64>());
    }
}
