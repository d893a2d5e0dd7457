//! A validated schedule and the searches over it: next firing, and the firing due after a gap.

use chrono::{DateTime, LocalResult, TimeZone};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};

use crate::Millis;

/// The time zone used when a schedule names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

const MAX_NAME_CHARS: usize = 128;

const FIVE_FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const SIX_FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
];

/// 2020-01-01T00:00:00Z: the instant from which parsing checks that an expression ever fires.
const NEVER_FIRES_PROBE_SECONDS: i64 = 1_577_836_800;

/// A named cron schedule in an IANA time zone, validated.
///
/// The expression has 5 fields (`minute hour day-of-month month day-of-week`) or 6 with a
/// leading seconds field. Names (`MON`, `JAN`), lists, ranges, `*/n` steps, `L`, `W`, `#`,
/// `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` are accepted; a year field is not. As in
/// Vixie cron, when both day of month and day of week are restricted a day matching either one
/// fires; a `+` before the day of week (`0 9 1 * +MON`) requires both.
///
/// Firings are computed on the wall clock of the schedule's time zone. Where daylight saving
/// changes the clock:
///
/// - **Spring forward (a gap).** A schedule whose second, minute and hour are each one fixed
///   value (`30 2 * * *`) fires once at the first instant after the gap on that day (03:00 in
///   New York). Any other schedule (`*/5 * * * *`, `0,30 2 * * *`) skips the slots that fall
///   in the gap; it does not make them up.
/// - **Fall back (an overlap).** A schedule that names its hours (`30 1 * * *`,
///   `0,30 1 * * *`, `*/10 1 * * *`) fires only in the first pass of the repeated hour, so a
///   wall-clock time fires once, not twice. A schedule whose hour field is `*` or `*/n`
///   (`*/5 * * * *`, `@hourly`) keeps its cadence in real time through both passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    name: String,
    cron: String,
    time_zone: String,
    per_install: bool,
    pattern: Cron,
    zone: Tz,
    names_hours: bool,
}

/// What [`Schedule::due`] found: at most one firing now, and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The slot to fire now: the most recent one missed, however many were missed.
    pub fire_at: Option<Millis>,
    /// The first slot strictly after `now`; `None` only past the year 5000.
    pub next: Option<Millis>,
}

/// One field of a cron expression, named in parse errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronField {
    /// Position of the field in the expression, counted from 1.
    pub position: usize,
    /// What the field means (`"hour"`, `"day of week"`).
    pub name: &'static str,
    /// The field as written.
    pub text: String,
}

/// A schedule declaration that cannot be used, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("name: {reason}")]
    InvalidName { reason: &'static str },
    #[error("cron: {}", describe_cron(.expression, .field.as_ref(), .reason))]
    InvalidCron {
        expression: String,
        field: Option<CronField>,
        reason: String,
    },
    #[error("time_zone: unknown time zone `{0}`, expected an IANA name such as `Europe/Berlin`")]
    UnknownTimeZone(String),
}

impl Schedule {
    /// Validates a declaration; `time_zone` defaults to UTC.
    pub fn parse(
        name: &str,
        cron: &str,
        time_zone: Option<&str>,
        per_install: bool,
    ) -> Result<Schedule, ScheduleError> {
        check_name(name)?;
        let time_zone = time_zone.unwrap_or(DEFAULT_TIME_ZONE);
        let zone: Tz = time_zone
            .parse()
            .map_err(|_| ScheduleError::UnknownTimeZone(time_zone.to_owned()))?;
        let pattern = parse_cron(cron)?;

        let schedule = Schedule {
            name: name.to_owned(),
            cron: cron.trim().to_owned(),
            time_zone: time_zone.to_owned(),
            per_install,
            pattern,
            zone,
            names_hours: names_hours(cron),
        };

        // `0 0 31 4 *` parses but would never fire: refuse it here, not silently at run time.
        if schedule
            .next_after(NEVER_FIRES_PROBE_SECONDS * 1000)
            .is_none()
        {
            return Err(ScheduleError::InvalidCron {
                expression: schedule.cron,
                field: None,
                reason: "the expression never fires".to_owned(),
            });
        }
        Ok(schedule)
    }

    /// The schedule's name, as the integration declared it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cron expression, trimmed.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// The IANA time zone the expression is read in.
    pub fn time_zone(&self) -> &str {
        &self.time_zone
    }

    /// Whether the schedule fires once per install rather than once per integration.
    pub fn per_install(&self) -> bool {
        self.per_install
    }

    /// The first firing strictly after `after`, or `None` past the year 5000.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        self.search(after.div_euclid(1000), Direction::Forward)
    }

    /// The latest firing at or before `at`.
    fn latest_at_or_before(&self, at: Millis) -> Option<Millis> {
        // Firings fall on whole seconds: the latest at or before `at` is strictly before the
        // next whole second.
        self.search(at.div_euclid(1000) + 1, Direction::Backward)
    }

    /// The catch-up rule: at most one firing is due, the most recent slot missed.
    ///
    /// `last_fired` is the slot fired last. A schedule that has never fired passes the instant
    /// it was first seen (its deployment), so a slot between then and `now` is due; `None`
    /// means "first seen now" and nothing is due: a new schedule does not fire retroactively.
    /// When slots were missed while no node was running, only the latest of them is due, so a
    /// long outage yields one firing, not one per missed slot. `fire_at` is never after `now`.
    pub fn due(&self, last_fired: Option<Millis>, now: Millis) -> Due {
        Due {
            fire_at: last_fired.and_then(|last| self.latest_missed(last, now)),
            next: self.next_after(now),
        }
    }

    /// The latest slot in `(last, now]`, if any.
    fn latest_missed(&self, last: Millis, now: Millis) -> Option<Millis> {
        let first = self.next_after(last)?;
        if first > now {
            return None;
        }

        // Searching back from `now` is quick after a long outage; keep it only if the forward
        // search agrees, so both directions name the same slots.
        if let Some(latest) = self.latest_at_or_before(now) {
            let agrees = self.next_after(latest - 1) == Some(latest)
                && self.next_after(latest).is_none_or(|next| next > now);
            if latest >= first && agrees {
                return Some(latest);
            }
        }

        let mut slot = first;
        while let Some(next) = self.next_after(slot).filter(|&next| next <= now) {
            slot = next;
        }
        Some(slot)
    }

    /// Searches from whole second `from` (exclusive), skipping second passes of repeated
    /// hours for schedules that name their hours.
    fn search(&self, from: i64, direction: Direction) -> Option<Millis> {
        let mut cursor = DateTime::from_timestamp(from, 0)?.with_timezone(&self.zone);
        loop {
            let found = match direction {
                Direction::Forward => self.pattern.find_next_occurrence(&cursor, false),
                Direction::Backward => self.pattern.find_previous_occurrence(&cursor, false),
            }
            .ok()?;
            if !self.is_repeated_pass(&found) {
                return found.timestamp().checked_mul(1000);
            }
            cursor = found;
        }
    }

    /// Whether `at` is the second pass over a wall-clock time, and this schedule skips it.
    fn is_repeated_pass(&self, at: &DateTime<Tz>) -> bool {
        if !self.names_hours {
            return false;
        }
        match self.zone.from_local_datetime(&at.naive_local()) {
            LocalResult::Ambiguous(_, later) => later == *at,
            _ => false,
        }
    }
}

fn check_name(name: &str) -> Result<(), ScheduleError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.chars().count() > MAX_NAME_CHARS {
        "must be at most 128 characters"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(ScheduleError::InvalidName { reason })
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

fn parse_cron(cron: &str) -> Result<Cron, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidCron {
        expression: cron.trim().to_owned(),
        field: field_at_fault(cron),
        reason,
    };

    let fields = cron.split_whitespace().count();
    if !cron.trim_start().starts_with('@') && fields != 0 && !(5..=6).contains(&fields) {
        return Err(invalid(format!(
            "has {fields} fields, expected 5 (minute hour day-of-month month day-of-week) \
             or 6 (with seconds first)"
        )));
    }
    parser()
        .parse(cron)
        .map_err(|error| invalid(reason(&error)))
}

/// Finds the one field that fails on its own, with every other field set to `*`.
fn field_at_fault(cron: &str) -> Option<CronField> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let names: &[&'static str] = match fields.len() {
        5 => &FIVE_FIELDS,
        6 => &SIX_FIELDS,
        _ => return None,
    };

    let parser = parser();
    let fails_alone = |index: usize| {
        let probe: Vec<&str> = (0..fields.len())
            .map(|i| if i == index { fields[i] } else { "*" })
            .collect();
        parser.parse(&probe.join(" ")).is_err()
    };

    (0..fields.len())
        .find(|&index| fails_alone(index))
        .map(|index| CronField {
            position: index + 1,
            name: names[index],
            text: fields[index].to_owned(),
        })
}

/// Croner's message without its own prefix, in lower case and without a final period.
fn reason(error: &CronError) -> String {
    let message = match error {
        CronError::EmptyPattern => "the expression is empty".to_owned(),
        CronError::InvalidPattern(message)
        | CronError::IllegalCharacters(message)
        | CronError::ComponentError(message) => message.clone(),
        other => other.to_string(),
    };

    let message = message.trim_end_matches('.');
    let message = message.replace("CronPattern", "the expression");
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn describe_cron(expression: &str, field: Option<&CronField>, reason: &str) -> String {
    match field {
        Some(field) => format!(
            "`{expression}`: field {} ({}) `{}` is invalid: {reason}",
            field.position, field.name, field.text
        ),
        None => format!("`{expression}`: {reason}"),
    }
}

/// Whether the hour field lists hours rather than `*` or `*/n`; see [`Schedule`] on overlaps.
fn names_hours(cron: &str) -> bool {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let hour = match fields.as_slice() {
        [nickname] => return !nickname.eq_ignore_ascii_case("@hourly"),
        [_, hour, _, _, _] | [_, _, hour, _, _, _] => *hour,
        _ => return true,
    };
    !hour.starts_with('*')
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Utc};
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const MINUTE: Millis = 60_000;
    const HOUR: Millis = 60 * MINUTE;

    fn schedule(cron: &str, zone: &str) -> Schedule {
        Schedule::parse("test", cron, Some(zone), false).expect("the schedule must parse")
    }

    /// An instant given in UTC.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Millis {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("a valid UTC time")
            .timestamp_millis()
    }

    /// An unambiguous wall-clock time in `zone`.
    fn local(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, 0))
            .expect("a valid date");
        zone.from_local_datetime(&naive)
            .single()
            .expect("an unambiguous local time")
            .timestamp_millis()
    }

    fn firings(schedule: &Schedule, after: Millis, count: usize) -> Vec<Millis> {
        std::iter::successors(schedule.next_after(after), |&t| schedule.next_after(t))
            .take(count)
            .collect()
    }

    // Parsing.

    #[test]
    fn parses_five_and_six_fields_and_nicknames() {
        let daily = schedule("0 9 * * MON-FRI", "UTC");
        let seconds = schedule("*/5 * * * * *", "UTC");
        let hourly = schedule("@hourly", "UTC");

        assert_eq!(daily.cron(), "0 9 * * MON-FRI");
        assert_eq!(seconds.cron(), "*/5 * * * * *");
        assert_eq!(
            hourly.next_after(utc(2024, 1, 1, 0, 0, 1)),
            Some(utc(2024, 1, 1, 1, 0, 0))
        );
    }

    #[test]
    fn time_zone_defaults_to_utc() {
        let schedule = Schedule::parse("nightly", "0 3 * * *", None, true).expect("parses");

        assert_eq!(schedule.time_zone(), "UTC");
        assert_eq!(schedule.name(), "nightly");
        assert!(schedule.per_install());
    }

    #[test]
    fn out_of_range_field_is_named() {
        let error = Schedule::parse("s", "0 25 * * *", None, false).expect_err("hour 25");

        let ScheduleError::InvalidCron { field, .. } = &error else {
            panic!("expected a cron error, got {error:?}")
        };
        let field = field.as_ref().expect("the field at fault");
        assert_eq!(
            (field.position, field.name, field.text.as_str()),
            (2, "hour", "25")
        );
        assert!(
            error
                .to_string()
                .starts_with("cron: `0 25 * * *`: field 2 (hour) `25`")
        );
    }

    #[test]
    fn seconds_field_is_named_in_six_field_expressions() {
        let error = Schedule::parse("s", "61 * * * * *", None, false).expect_err("second 61");

        let ScheduleError::InvalidCron {
            field: Some(field), ..
        } = error
        else {
            panic!("expected the field at fault")
        };
        assert_eq!((field.position, field.name), (1, "second"));
    }

    #[test]
    fn wrong_field_count_and_year_field_are_refused() {
        for cron in ["* * * *", "0 0 0 1 1 * 2030", "", "hello"] {
            let error = Schedule::parse("s", cron, None, false).expect_err(cron);

            assert!(error.to_string().starts_with("cron: "), "{error}");
        }
    }

    #[test]
    fn field_count_is_explained() {
        let error = Schedule::parse("s", "* * * *", None, false).expect_err("four fields");

        assert_eq!(
            error.to_string(),
            "cron: `* * * *`: has 4 fields, expected 5 (minute hour day-of-month month \
             day-of-week) or 6 (with seconds first)"
        );
    }

    #[test]
    fn expression_that_never_fires_is_refused() {
        let error = Schedule::parse("s", "0 0 31 4 *", None, false).expect_err("april 31");

        assert_eq!(
            error.to_string(),
            "cron: `0 0 31 4 *`: the expression never fires"
        );
    }

    #[test]
    fn unknown_time_zone_is_named() {
        let error = Schedule::parse("s", "* * * * *", Some("Mars/Olympus"), false)
            .expect_err("no such zone");

        assert_eq!(
            error,
            ScheduleError::UnknownTimeZone("Mars/Olympus".to_owned())
        );
        assert!(
            error
                .to_string()
                .starts_with("time_zone: unknown time zone `Mars/Olympus`")
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let long = "x".repeat(129);

        for name in ["", "two words", "tab\t", long.as_str()] {
            let error = Schedule::parse(name, "* * * * *", None, false).expect_err(name);

            assert!(error.to_string().starts_with("name: "), "{error}");
        }
    }

    // Next firing.

    #[test]
    fn next_after_is_strictly_after() {
        let daily = schedule("0 9 * * *", "UTC");
        let nine = utc(2024, 5, 1, 9, 0, 0);

        assert_eq!(daily.next_after(nine - 1), Some(nine));
        assert_eq!(daily.next_after(nine), Some(nine + 24 * HOUR));
        assert_eq!(daily.next_after(nine + 500), Some(nine + 24 * HOUR));
    }

    #[test]
    fn wall_clock_is_read_in_the_time_zone() {
        let berlin = schedule("0 9 * * *", "Europe/Berlin");
        let new_york = schedule("0 9 * * *", "America/New_York");

        // Summer in Berlin is UTC+2; winter in New York is UTC-5.
        assert_eq!(
            berlin.next_after(utc(2024, 7, 1, 0, 0, 0)),
            Some(utc(2024, 7, 1, 7, 0, 0))
        );
        assert_eq!(
            new_york.next_after(utc(2024, 1, 15, 0, 0, 0)),
            Some(utc(2024, 1, 15, 14, 0, 0))
        );
    }

    #[test]
    fn every_five_seconds() {
        let schedule = schedule("*/5 * * * * *", "UTC");
        let start = utc(2024, 5, 1, 12, 0, 3) + 200;

        let expected: Vec<Millis> = [5, 10, 15, 20].map(|s| utc(2024, 5, 1, 12, 0, s)).into();
        assert_eq!(firings(&schedule, start, 4), expected);
    }

    #[test]
    fn new_york_spring_gap_shifts_a_fixed_time() {
        let schedule = schedule("30 2 * * *", "America/New_York");

        // 2024-03-10 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        let fired = firings(&schedule, local(New_York, 2024, 3, 9, 12, 0), 2);

        assert_eq!(
            fired,
            [utc(2024, 3, 10, 7, 0, 0), utc(2024, 3, 11, 6, 30, 0)]
        );
    }

    #[test]
    fn new_york_spring_gap_is_skipped_by_intervals() {
        let schedule = schedule("*/30 * * * *", "America/New_York");

        let fired = firings(&schedule, local(New_York, 2024, 3, 10, 1, 0), 3);

        // 01:30 EST, then 03:00 EDT: 02:00 and 02:30 never happen.
        let expected = [
            utc(2024, 3, 10, 6, 30, 0),
            utc(2024, 3, 10, 7, 0, 0),
            utc(2024, 3, 10, 7, 30, 0),
        ];
        assert_eq!(fired, expected);
    }

    #[test]
    fn new_york_fall_overlap_fires_a_fixed_time_once() {
        let schedule = schedule("30 1 * * *", "America/New_York");

        // 2024-11-03 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let fired = firings(&schedule, local(New_York, 2024, 11, 2, 12, 0), 2);

        assert_eq!(
            fired,
            [utc(2024, 11, 3, 5, 30, 0), utc(2024, 11, 4, 6, 30, 0)]
        );
    }

    #[test]
    fn new_york_fall_overlap_fires_listed_times_once() {
        let schedule = schedule("0,30 1 * * *", "America/New_York");

        let fired = firings(&schedule, local(New_York, 2024, 11, 2, 12, 0), 3);

        let expected = [
            utc(2024, 11, 3, 5, 0, 0),
            utc(2024, 11, 3, 5, 30, 0),
            utc(2024, 11, 4, 6, 0, 0),
        ];
        assert_eq!(fired, expected);
    }

    #[test]
    fn new_york_fall_overlap_keeps_an_hourly_cadence() {
        let schedule = schedule("0 * * * *", "America/New_York");

        let fired = firings(&schedule, utc(2024, 11, 3, 4, 30, 0), 3);

        // 01:00 EDT, 01:00 EST, 02:00 EST: one firing per real hour.
        let expected = [
            utc(2024, 11, 3, 5, 0, 0),
            utc(2024, 11, 3, 6, 0, 0),
            utc(2024, 11, 3, 7, 0, 0),
        ];
        assert_eq!(fired, expected);
    }

    #[test]
    fn berlin_spring_gap_shifts_a_fixed_time() {
        let schedule = schedule("30 2 * * *", "Europe/Berlin");

        // 2024-03-31 02:00 CET jumps to 03:00 CEST.
        let fired = firings(&schedule, local(Berlin, 2024, 3, 30, 12, 0), 2);

        assert_eq!(
            fired,
            [utc(2024, 3, 31, 1, 0, 0), utc(2024, 4, 1, 0, 30, 0)]
        );
    }

    #[test]
    fn berlin_fall_overlap_fires_a_fixed_time_once() {
        let schedule = schedule("30 2 * * *", "Europe/Berlin");

        // 2024-10-27 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let fired = firings(&schedule, local(Berlin, 2024, 10, 26, 12, 0), 2);

        assert_eq!(
            fired,
            [utc(2024, 10, 27, 0, 30, 0), utc(2024, 10, 28, 1, 30, 0)]
        );
    }

    // Catch-up.

    #[test]
    fn multi_hour_outage_yields_one_firing() {
        let schedule = schedule("*/5 * * * *", "UTC");
        let last = utc(2024, 5, 1, 10, 0, 0);
        let now = utc(2024, 5, 1, 14, 7, 12);

        let due = schedule.due(Some(last), now);

        assert_eq!(due.fire_at, Some(utc(2024, 5, 1, 14, 5, 0)));
        assert_eq!(due.next, Some(utc(2024, 5, 1, 14, 10, 0)));
    }

    #[test]
    fn every_five_seconds_after_a_day_down_yields_one_firing() {
        let schedule = schedule("*/5 * * * * *", "UTC");
        let last = utc(2024, 5, 1, 10, 0, 0);
        let now = utc(2024, 5, 2, 10, 0, 7);

        let due = schedule.due(Some(last), now);

        assert_eq!(due.fire_at, Some(utc(2024, 5, 2, 10, 0, 5)));
        assert_eq!(due.next, Some(utc(2024, 5, 2, 10, 0, 10)));
    }

    #[test]
    fn slot_reached_exactly_is_due() {
        let schedule = schedule("*/5 * * * *", "UTC");
        let last = utc(2024, 5, 1, 10, 0, 0);

        assert_eq!(
            schedule.due(Some(last), last + 5 * MINUTE - 1).fire_at,
            None
        );
        assert_eq!(
            schedule.due(Some(last), last + 5 * MINUTE).fire_at,
            Some(last + 5 * MINUTE)
        );
    }

    #[test]
    fn fired_slot_is_not_due_again() {
        let schedule = schedule("*/5 * * * *", "UTC");
        let last = utc(2024, 5, 1, 10, 5, 0);

        assert_eq!(schedule.due(Some(last), last).fire_at, None);
        assert_eq!(schedule.due(Some(last), last + 4 * MINUTE).fire_at, None);
        // A node whose clock runs behind the one that fired sees nothing due.
        assert_eq!(schedule.due(Some(last), last - MINUTE).fire_at, None);
    }

    #[test]
    fn new_schedule_does_not_fire_retroactively() {
        let schedule = schedule("0 * * * *", "UTC");
        let now = utc(2024, 5, 1, 10, 59, 0);

        let due = schedule.due(None, now);

        assert_eq!(
            due,
            Due {
                fire_at: None,
                next: Some(utc(2024, 5, 1, 11, 0, 0))
            }
        );
    }

    #[test]
    fn catch_up_across_fall_back_fires_the_latest_slot_once() {
        let schedule = schedule("30 1 * * *", "America/New_York");
        let last = utc(2024, 11, 2, 5, 30, 0);
        // Down from before the transition until 01:45 EST, after the repeated 01:30.
        let now = utc(2024, 11, 3, 6, 45, 0);

        let due = schedule.due(Some(last), now);

        assert_eq!(due.fire_at, Some(utc(2024, 11, 3, 5, 30, 0)));
        assert_eq!(due.next, Some(utc(2024, 11, 4, 6, 30, 0)));
    }

    // Properties over many random instants.

    const EXPRESSIONS: [&str; 9] = [
        "*/5 * * * * *",
        "* * * * *",
        "*/7 * * * *",
        "0 * * * *",
        "30 2 * * *",
        "0,30 1-3 * * *",
        "15 */3 * * MON-FRI",
        "0 0 1 * *",
        "0 12 29 2 *",
    ];
    const ZONES: [&str; 5] = [
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
    ];

    fn random_instant(rng: &mut StdRng) -> Millis {
        rng.gen_range(utc(2000, 1, 1, 0, 0, 0)..utc(2040, 1, 1, 0, 0, 0))
    }

    #[test]
    fn next_after_is_later_and_firings_strictly_increase() {
        let mut rng = StdRng::seed_from_u64(0x5eed);

        for zone in ZONES {
            for cron in EXPRESSIONS {
                let schedule = schedule(cron, zone);
                for _ in 0..40 {
                    let t = random_instant(&mut rng);
                    let fired = firings(&schedule, t, 6);

                    assert_eq!(fired.len(), 6, "{cron} in {zone} after {t}");
                    assert!(fired[0] > t, "{cron} in {zone} after {t}");
                    assert!(
                        fired.windows(2).all(|w| w[0] < w[1]),
                        "{cron} in {zone}: {fired:?}"
                    );
                    assert!(fired.iter().all(|f| f % 1000 == 0), "whole seconds");
                }
            }
        }
    }

    #[test]
    fn due_fires_the_latest_missed_slot_and_never_the_future() {
        let mut rng = StdRng::seed_from_u64(0xca7c);

        for zone in ZONES {
            for cron in EXPRESSIONS {
                let schedule = schedule(cron, zone);
                for _ in 0..40 {
                    let last = random_instant(&mut rng);
                    let now = last + rng.gen_range(-HOUR..(72 * HOUR));
                    let due = schedule.due(Some(last), now);

                    let context = format!("{cron} in {zone}, last {last}, now {now}");
                    assert!(due.next.is_some_and(|next| next > now), "{context}");
                    let Some(fire_at) = due.fire_at else {
                        assert!(
                            schedule.next_after(last).is_none_or(|s| s > now),
                            "{context}"
                        );
                        continue;
                    };
                    assert!(fire_at > last && fire_at <= now, "{context}");
                    // A real slot, and no later slot up to `now`.
                    assert_eq!(schedule.next_after(fire_at - 1), Some(fire_at), "{context}");
                    assert!(
                        schedule.next_after(fire_at).is_some_and(|s| s > now),
                        "{context}"
                    );
                }
            }
        }
    }

    #[test]
    fn due_with_no_last_firing_is_never_due() {
        let mut rng = StdRng::seed_from_u64(7);
        let schedule = schedule("*/5 * * * * *", "Europe/Berlin");

        for _ in 0..200 {
            let now = random_instant(&mut rng);

            assert_eq!(schedule.due(None, now).fire_at, None);
        }
    }
}
