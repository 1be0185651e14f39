//! Schedules: when a cron expression or an interval fires, and which of the fire times that
//! have passed a scheduler round submits. Pure: the caller passes every instant in (Unix
//! milliseconds, UTC).
//!
//! A cron expression is read on the wall clock of its time zone. The search walks local
//! (naive) time forward and maps each match to an instant:
//! - a time that exists once is that instant;
//! - a time a fall-back repeats is its first occurrence, and the second pass of the repeated
//!   hour matches nothing (local time goes back there, and the search never does), so it
//!   runs once;
//! - a time a spring-forward skips runs at the first instant after the gap; several skipped
//!   times run once there.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use taskplane_api::CatchUp;

/// The shortest interval of an `every` schedule.
pub const MIN_EVERY_SECS: u64 = 1;
/// The longest: about ten years.
pub const MAX_EVERY_SECS: u64 = 10 * 366 * 86_400;
/// The most fire times `catch_up: all` submits after a downtime (the latest ones).
pub const MAX_CATCH_UP: usize = 100;
/// A fire time found at most this late is on time (the scheduler's own round, a restart, a
/// database failover); one found later passed while no taskd ran, and is "missed".
pub const MISSED_AFTER_MS: i64 = 60_000;

/// How a schedule's fire times follow each other.
#[derive(Debug, Clone)]
pub enum Timing {
    /// The matches of an expression on a zone's wall clock.
    Cron { cron: Box<Cron>, zone: Tz },
    /// Every `every_ms`, counted from the first fire time.
    Every { every_ms: i64 },
}

/// Parses a cron expression: 5 fields, 6 with seconds first, or an `@` nickname.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let trimmed = expression.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "'{expression}' has {fields} field{}: write 5 (minute hour day-of-month month day-of-week) or 6 with seconds first",
            if fields == 1 { "" } else { "s" }
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(trimmed)
        .map_err(|e| format!("'{expression}' is not a cron expression: {}", describe(&e)))?;
    Ok(cron)
}

/// croner's message without its type names.
fn describe(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    match error {
        CronError::InvalidPattern(message)
        | CronError::IllegalCharacters(message)
        | CronError::ComponentError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "'{name}' is not an IANA time zone name (like UTC, Europe/Berlin or America/New_York)"
        )
    })
}

impl Timing {
    /// The first fire time strictly after `after`; None when there is none (an expression
    /// that never matches again, an instant out of range).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            // From an instant off the second (a schedule's creation), the first whole
            // second at least one interval on, less the part of a second.
            Timing::Every { every_ms } => Some(after.checked_add(*every_ms)? / 1000 * 1000),
            Timing::Cron { cron, zone } => {
                let local = to_local(after, zone)?;
                let mut cursor = local;
                // A bounded walk: each step is one croner search; only the second pass of a
                // repeated hour (whose matches already ran) makes it take more than one.
                for _ in 0..10_000 {
                    let naive = cron.find_next_occurrence(&cursor, false).ok()?;
                    let at = resolve(naive, zone)?;
                    if at > after {
                        return Some(at);
                    }
                    cursor = naive;
                }
                None
            }
        }
    }

    /// The fire times in `from..=until`, earliest first, at most `limit` of the latest ones,
    /// and how many there are in all (counted up to `limit + 1` for a cron expression: the
    /// rest are "more").
    fn due(&self, from: i64, until: i64, limit: usize) -> (Vec<i64>, u64) {
        if from > until {
            return (Vec::new(), 0);
        }
        match self {
            Timing::Every { every_ms } => {
                let every = (*every_ms).max(1);
                let total = ((until - from) / every + 1) as u64;
                let take = total.min(limit as u64) as i64;
                let last = from + (total as i64 - 1) * every;
                let times = (0..take).rev().map(|k| last - k * every).collect();
                (times, total)
            }
            Timing::Cron { .. } => {
                // From the end backwards: the latest ones are the ones kept.
                let mut times = Vec::new();
                let mut total = 0u64;
                let mut at = self.previous_before(until.saturating_add(1));
                while let Some(t) = at.filter(|t| *t >= from) {
                    total += 1;
                    if times.len() < limit {
                        times.push(t);
                    }
                    if total > limit as u64 {
                        break;
                    }
                    at = self.previous_before(t);
                }
                times.reverse();
                (times, total)
            }
        }
    }

    /// The latest fire time strictly before `before` (cron only).
    fn previous_before(&self, before: i64) -> Option<i64> {
        let Timing::Cron { cron, zone } = self else {
            return None;
        };
        // Fire times are whole seconds: the latest at or before the last whole second
        // before `before`.
        let mut cursor = to_local(before - 1, zone)?.with_nanosecond(0)?;
        let mut inclusive = true;
        for _ in 0..10_000 {
            let naive = cron.find_previous_occurrence(&cursor, inclusive).ok()?;
            inclusive = false;
            let at = resolve(naive, zone)?;
            // The next fire time after the previous match's instant is what it is mapped
            // to; a match whose instant is not before `before` (the second pass of a
            // repeated hour maps back to the first) is passed over.
            if at < before && self.next_after(at - 1) == Some(at) {
                return Some(at);
            }
            cursor = naive;
        }
        None
    }
}

/// An instant on a zone's wall clock.
fn to_local(at: i64, zone: &Tz) -> Option<NaiveDateTime> {
    Some(
        DateTime::<Utc>::from_timestamp_millis(at)?
            .with_timezone(zone)
            .naive_local(),
    )
}

/// The instant a wall-clock time in `zone` names: its only instant, the first of two (a
/// fall-back), or the first instant after the gap it falls in (a spring-forward).
fn resolve(naive: NaiveDateTime, zone: &Tz) -> Option<i64> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(at) => Some(at.timestamp_millis()),
        LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis()),
        LocalResult::None => {
            // The smallest instant whose wall-clock time is at or after `naive`. Offsets lie
            // within ±18 h, and gaps are never next to a fall-back, so the local time is
            // increasing over this window.
            let pivot = naive.and_utc().timestamp();
            let (mut lo, mut hi) = (pivot - 18 * 3600, pivot + 18 * 3600);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let local = DateTime::<Utc>::from_timestamp(mid, 0)?
                    .with_timezone(zone)
                    .naive_local();
                if local >= naive {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            Some(hi * 1000)
        }
    }
}

/// What one scheduler round does with a schedule whose `next_run_at` has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The fire times to submit a task for, earliest first.
    pub fire: Vec<i64>,
    /// Fire times passed over (they passed while no taskd ran, or beyond the catch-up limit).
    pub missed: u64,
    /// The schedule's next fire time after this round (None: it has none left).
    pub next: Option<i64>,
}

/// The round for a schedule due at `next_run_at`, seen at `now`: every fire time in
/// `next_run_at..=now` is either submitted or missed, as `catch_up` says, and the next fire
/// time is the first after `now`.
pub fn plan(timing: &Timing, catch_up: CatchUp, next_run_at: i64, now: i64) -> Plan {
    let next = match timing {
        // Keep an interval's phase: the first of its times after `now`.
        Timing::Every { every_ms } => {
            let every = (*every_ms).max(1);
            if next_run_at > now {
                Some(next_run_at)
            } else {
                next_run_at.checked_add(((now - next_run_at) / every + 1) * every)
            }
        }
        Timing::Cron { .. } => timing.next_after(now),
    };
    let limit = match catch_up {
        CatchUp::All => MAX_CATCH_UP,
        CatchUp::None | CatchUp::One => 1,
    };
    let (latest, total) = timing.due(next_run_at, now, limit);
    let fire = match catch_up {
        CatchUp::All => latest,
        CatchUp::One => latest,
        CatchUp::None => latest
            .into_iter()
            .filter(|at| now - at <= MISSED_AFTER_MS)
            .collect(),
    };
    let missed = total.saturating_sub(fire.len() as u64);
    Plan { fire, missed, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("an RFC 3339 instant")
            .timestamp_millis()
    }

    fn text(at: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(at)
            .expect("in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn cron(expression: &str, zone: &str) -> Timing {
        Timing::Cron {
            cron: Box::new(parse_cron(expression).expect("a valid expression")),
            zone: parse_zone(zone).expect("a known zone"),
        }
    }

    /// The first `n` fire times after `after`.
    fn fires(timing: &Timing, after: &str, n: usize) -> Vec<String> {
        let mut at = ms(after);
        let mut out = Vec::new();
        for _ in 0..n {
            at = timing.next_after(at).expect("a next fire time");
            out.push(text(at));
        }
        out
    }

    #[test]
    fn daily_and_nicknames_fire_at_midnight_of_their_zone() {
        let daily = cron("@daily", "UTC");
        assert_eq!(
            fires(&daily, "2026-03-01T10:00:00Z", 2),
            ["2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"]
        );
        // Midnight in Berlin is 23:00 UTC in winter, 22:00 in summer.
        let berlin = cron("0 0 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&berlin, "2026-03-28T12:00:00Z", 2),
            ["2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"]
        );
        assert_eq!(
            fires(&cron("@hourly", "UTC"), "2026-01-01T10:30:00Z", 1),
            ["2026-01-01T11:00:00Z"]
        );
        assert_eq!(
            fires(&cron("@weekly", "UTC"), "2026-12-02T00:00:00Z", 1),
            ["2026-12-06T00:00:00Z"]
        );
    }

    #[test]
    fn steps_lists_ranges_names_and_last_day() {
        assert_eq!(
            fires(&cron("*/20 9-10 * * *", "UTC"), "2026-05-05T09:10:00Z", 4),
            [
                "2026-05-05T09:20:00Z",
                "2026-05-05T09:40:00Z",
                "2026-05-05T10:00:00Z",
                "2026-05-05T10:20:00Z"
            ]
        );
        // Mondays and Fridays at 08:15 (2026-12-02 is a Wednesday).
        assert_eq!(
            fires(&cron("15 8 * * MON,FRI", "UTC"), "2026-12-02T00:00:00Z", 3),
            [
                "2026-12-04T08:15:00Z",
                "2026-12-07T08:15:00Z",
                "2026-12-11T08:15:00Z"
            ]
        );
        // The last day of the month, February of a common year and of a leap year.
        assert_eq!(
            fires(&cron("0 12 L * *", "UTC"), "2027-02-01T00:00:00Z", 2),
            ["2027-02-28T12:00:00Z", "2027-03-31T12:00:00Z"]
        );
        assert_eq!(
            fires(&cron("0 0 L FEB *", "UTC"), "2027-06-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        // Six fields: seconds first.
        assert_eq!(
            fires(&cron("*/15 * * * * *", "UTC"), "2026-01-01T00:00:07Z", 3),
            [
                "2026-01-01T00:00:15Z",
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:00:45Z"
            ]
        );
    }

    #[test]
    fn a_time_a_spring_forward_skips_runs_once_right_after_the_gap() {
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
        let ny = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            fires(&ny, "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z"
            ]
        );
        // Every minute of the missing hour runs once, at 03:00 EDT, then 03:01 follows.
        let every_minute = cron("* * * * *", "America/New_York");
        assert_eq!(
            fires(&every_minute, "2026-03-08T06:58:30Z", 3),
            [
                "2026-03-08T06:59:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-08T07:01:00Z"
            ]
        );
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        let berlin = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&berlin, "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
    }

    #[test]
    fn a_time_a_fall_back_repeats_runs_once() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice (05:30 and
        // 06:30 UTC). It runs at the first.
        let ny = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&ny, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        // Hourly: 01:00 EDT, then 02:00 EST, two hours later; the repeated 01:00 is skipped.
        let hourly = cron("0 * * * *", "America/New_York");
        assert_eq!(
            fires(&hourly, "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T07:00:00Z",
                "2026-11-01T08:00:00Z"
            ]
        );
        // Seen from inside the second pass, the next is after it too.
        assert_eq!(
            fires(&hourly, "2026-11-01T06:10:00Z", 1),
            ["2026-11-01T07:00:00Z"]
        );
        // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 runs once (00:30 UTC).
        let berlin = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&berlin, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        for bad in [
            "61 * * * *",
            "* * * *",
            "* * * * * * *",
            "0 25 * * *",
            "hello",
            "",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad} parsed");
        }
        assert!(
            parse_cron("61 * * * *")
                .expect_err("out of range")
                .contains("61 * * * *")
        );
        assert!(
            parse_zone("Mars/Olympus")
                .expect_err("no such zone")
                .contains("Mars/Olympus")
        );
        assert!(parse_zone("America/New_York").is_ok());
        // An expression that never matches has no next fire time.
        assert_eq!(
            cron("0 0 30 2 *", "UTC").next_after(ms("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn an_interval_keeps_its_phase_and_catches_up_as_told() {
        let every = Timing::Every { every_ms: 10_000 };
        let start = ms("2026-01-01T00:00:00Z");
        // On time: one fire, the next ten seconds on.
        let on_time = plan(&every, CatchUp::None, start, start + 300);
        assert_eq!(on_time.fire, [start]);
        assert_eq!(on_time.missed, 0);
        assert_eq!(on_time.next, Some(start + 10_000));
        // Down for ten minutes (61 fire times passed): none fires the latest if it is
        // recent, one fires one, all fires each (the latest 100 at most).
        let now = start + 600_000 + 300;
        let none = plan(&every, CatchUp::None, start, now);
        assert_eq!(none.fire, [start + 600_000]);
        assert_eq!(none.missed, 60);
        assert_eq!(none.next, Some(start + 610_000));
        let one = plan(&every, CatchUp::One, start, now);
        assert_eq!(one.fire, [start + 600_000]);
        let all = plan(&every, CatchUp::All, start, now);
        assert_eq!(all.fire.len(), 61);
        assert_eq!(all.fire.first(), Some(&start));
        assert_eq!(all.missed, 0);
        let long = plan(&every, CatchUp::All, start, start + 3_600_000);
        assert_eq!(long.fire.len(), MAX_CATCH_UP);
        assert_eq!(long.fire.last(), Some(&(start + 3_600_000)));
        assert_eq!(long.missed, 361 - MAX_CATCH_UP as u64);
    }

    #[test]
    fn a_cron_schedule_after_a_downtime_follows_catch_up() {
        let hourly = cron("0 * * * *", "UTC");
        let due = ms("2026-06-01T01:00:00Z");
        // Seen at 04:20: 01:00, 02:00, 03:00 and 04:00 passed, the latest 20 minutes ago.
        let now = ms("2026-06-01T04:20:00Z");
        let none = plan(&hourly, CatchUp::None, due, now);
        assert!(none.fire.is_empty(), "{:?}", none.fire);
        assert_eq!(none.missed, 2, "counted up to the limit and one more");
        assert_eq!(none.next, Some(ms("2026-06-01T05:00:00Z")));
        let one = plan(&hourly, CatchUp::One, due, now);
        assert_eq!(one.fire, [ms("2026-06-01T04:00:00Z")]);
        let all = plan(&hourly, CatchUp::All, due, now);
        let texts: Vec<String> = all.fire.iter().map(|at| text(*at)).collect();
        assert_eq!(
            texts,
            [
                "2026-06-01T01:00:00Z",
                "2026-06-01T02:00:00Z",
                "2026-06-01T03:00:00Z",
                "2026-06-01T04:00:00Z"
            ]
        );
        assert_eq!(all.missed, 0);
        // Due exactly now.
        let exact = plan(&hourly, CatchUp::None, due, due);
        assert_eq!(exact.fire, [due]);
        assert_eq!(exact.next, Some(ms("2026-06-01T02:00:00Z")));
    }

    #[test]
    fn catching_up_across_a_fall_back_fires_each_time_once() {
        let hourly = cron("0 * * * *", "America/New_York");
        let all = plan(
            &hourly,
            CatchUp::All,
            ms("2026-11-01T04:00:00Z"),
            ms("2026-11-01T08:00:00Z"),
        );
        let texts: Vec<String> = all.fire.iter().map(|at| text(*at)).collect();
        assert_eq!(
            texts,
            [
                "2026-11-01T04:00:00Z",
                "2026-11-01T05:00:00Z",
                "2026-11-01T07:00:00Z",
                "2026-11-01T08:00:00Z"
            ]
        );
    }
}
