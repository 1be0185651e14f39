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
}
