//! `Retry-After` as providers send it: delay-seconds or an HTTP-date in any of the three
//! formats RFC 9110 allows (IMF-fixdate, the obsolete RFC 850 form, and asctime).
//!
//! Backoff when the header is absent or unreadable is the caller's policy, not this module's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wait a `Retry-After` value asks for, measured from `now` and never negative.
///
/// `None` when the value is neither delay-seconds nor an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What to do about a rate-limited response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPlan {
    /// Wait this long, then retry.
    Wait(Duration),
    /// The wait is longer than a worker should block: park the work and try again at
    /// `now` plus this.
    Reschedule(Duration),
    /// The provider gave no usable wait: use the caller's backoff with jitter.
    Backoff,
}

/// The plan for a `Retry-After` value, waiting at most `max_wait` in place.
pub fn retry_plan(value: Option<&str>, now: SystemTime, max_wait: Duration) -> RetryPlan {
    match value.and_then(|v| parse_retry_after(v, now)) {
        Some(wait) if wait > max_wait => RetryPlan::Reschedule(wait),
        Some(wait) => RetryPlan::Wait(wait),
        None => RetryPlan::Backoff,
    }
}

/// A Unix time in seconds, for callers that keep time that way.
pub fn unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wed, 21 Oct 2015 07:26:30 GMT.
    const NOW: u64 = 1_445_412_390;
    const HOUR: Duration = Duration::from_secs(3600);

    fn wait(value: &str) -> Option<u64> {
        parse_retry_after(value, unix(NOW)).map(|d| d.as_secs())
    }

    #[test]
    fn reads_delay_seconds_and_all_three_date_formats() {
        // Case C18 a-d: delay-seconds, IMF-fixdate, RFC 850 and asctime.
        assert_eq!(wait("120"), Some(120));
        assert_eq!(wait("Wed, 21 Oct 2015 07:28:00 GMT"), Some(90));
        assert_eq!(wait("Wednesday, 21-Oct-15 07:28:00 GMT"), Some(90));
        assert_eq!(wait("Wed Oct 21 07:28:00 2015"), Some(90));
    }

    #[test]
    fn a_date_in_the_past_means_no_wait() {
        // Case C18 e.
        assert_eq!(wait("Wed, 21 Oct 2015 07:20:00 GMT"), Some(0));
    }

    #[test]
    fn garbage_falls_back_to_backoff() {
        // Case C18 f.
        assert_eq!(wait("soon"), None);
        assert_eq!(wait("-5"), None);
        assert_eq!(wait(""), None);
        assert_eq!(
            retry_plan(Some("soon"), unix(NOW), HOUR),
            RetryPlan::Backoff
        );
        assert_eq!(retry_plan(None, unix(NOW), HOUR), RetryPlan::Backoff);
    }

    #[test]
    fn waits_beyond_the_cap_are_rescheduled_not_slept() {
        // Case C18 g, with a cap of one hour.
        let day = Duration::from_secs(86_400);
        assert_eq!(
            retry_plan(Some("86400"), unix(NOW), HOUR),
            RetryPlan::Reschedule(day)
        );
        assert_eq!(
            retry_plan(Some("120"), unix(NOW), HOUR),
            RetryPlan::Wait(Duration::from_secs(120))
        );
    }
}
