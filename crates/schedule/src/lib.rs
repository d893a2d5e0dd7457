//! Cron schedules: when a schedule fires, which missed firing is due, and what names a firing.
//!
//! This crate owns the arithmetic of schedules and nothing else. It is pure: no clock of its
//! own (callers pass `now`), no storage, no queue. Reading the schedules that integration code
//! declares, and enqueueing the jobs, belong to the server.
//!
//! A scheduler uses it in three steps:
//!
//! 1. [`Schedule::parse`] validates a declaration (name, cron expression, IANA time zone).
//! 2. [`Schedule::due`] tells, from the slot fired last and the current time, whether one
//!    firing is due now (at most one, however many slots were missed) and when the next is.
//! 3. [`firing_key`] names the firing; used as the queue's idempotency key it makes two nodes
//!    that enqueue the same slot create a single job.
//!
//! Expressions have 5 fields (`minute hour day-of-month month day-of-week`) or 6 with a
//! leading seconds field (`*/5 * * * * *` fires every five seconds). Parsing and searching are
//! done by `croner`, time zones by `chrono-tz`, which compiles the IANA database into the binary,
//! so no system time zone files are read at run time. See [`Schedule`] for the rules at
//! daylight-saving transitions.

mod key;
mod schedule;

pub use key::firing_key;
pub use schedule::{CronField, DEFAULT_TIME_ZONE, Due, Schedule, ScheduleError};
pub use splice_domain::Millis;
