//! Log lines that would repeat at every request or tick while a condition lasts (a database
//! that refuses writes): a [`LogGate`] lets one through per interval.

use std::sync::atomic::{AtomicI64, Ordering};

/// Opens at most once per interval, for any number of threads.
#[derive(Debug)]
pub struct LogGate {
    every_ms: i64,
    /// Unix milliseconds of the last opening; 0: never.
    last: AtomicI64,
}

impl LogGate {
    pub const fn new(every_ms: i64) -> LogGate {
        LogGate {
            every_ms,
            last: AtomicI64::new(0),
        }
    }

    /// True for the first call, then once the interval has passed since the last `true`.
    pub fn open(&self) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.last.load(Ordering::Acquire);
        (last == 0 || now - last >= self.every_ms)
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// Whether a chore's failure is worth a log line: the first of a run of the same error, then
/// once a minute while it lasts. A loop that retries every tick against a database that
/// refuses writes would otherwise add a dozen lines a second to a disk that may be the full
/// one.
pub fn worth_logging(chore: &'static str, error: &dyn std::fmt::Display) -> bool {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<BTreeMap<&'static str, (String, Instant)>> = Mutex::new(BTreeMap::new());
    let Ok(mut last) = LAST.lock() else {
        return true;
    };
    let text = error.to_string();
    let now = Instant::now();
    match last.get(chore) {
        Some((seen, at)) if *seen == text && now.duration_since(*at) < Duration::from_secs(60) => {
            false
        }
        _ => {
            last.insert(chore, (text, now));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_once_per_interval() {
        let gate = LogGate::new(60_000);
        assert!(gate.open());
        assert!(!gate.open(), "not again within the minute");
        let open_now = LogGate::new(0);
        assert!(open_now.open() && open_now.open());
    }

    #[test]
    fn a_repeated_failure_is_logged_once() {
        assert!(worth_logging("test chore", &"refused"));
        assert!(
            !worth_logging("test chore", &"refused"),
            "the same error again"
        );
        assert!(worth_logging("test chore", &"another error"));
        assert!(
            worth_logging("other chore", &"refused"),
            "each chore on its own"
        );
    }
}
