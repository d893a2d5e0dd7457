//! The identity of one firing, shared by every node that computes it.

use crate::Millis;

/// Names one firing of a schedule, for use as the job queue's idempotency key.
///
/// Every node computes the same key for the same slot, so when two nodes enqueue a firing only
/// one job is created. `install` is `Some` for schedules declared per install. Each part is
/// escaped (`%` and `:`), so distinct inputs never produce the same key.
pub fn firing_key(
    integration: &str,
    schedule: &str,
    install: Option<&str>,
    slot: Millis,
) -> String {
    let scope = match install {
        Some(install) => format!("install={}", escape(install)),
        None => "integration".to_owned(),
    };

    format!(
        "cron:{}:{}:{scope}:{slot}",
        escape(integration),
        escape(schedule)
    )
}

/// Escapes the separator and the escape character itself.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_integration_key_names_every_part() {
        let key = firing_key("github-sync", "nightly", None, 1_700_000_000_000);

        assert_eq!(key, "cron:github-sync:nightly:integration:1700000000000");
    }

    #[test]
    fn per_install_key_names_the_install() {
        let key = firing_key("github-sync", "nightly", Some("inst_42"), 5_000);

        assert_eq!(key, "cron:github-sync:nightly:install=inst_42:5000");
    }

    #[test]
    fn keys_differ_by_slot_install_and_scope() {
        let base = firing_key("a", "s", None, 1_000);

        assert_ne!(base, firing_key("a", "s", None, 2_000));
        assert_ne!(base, firing_key("a", "s", Some("i"), 1_000));
        assert_ne!(
            firing_key("a", "s", Some("i"), 1_000),
            firing_key("a", "s", Some("j"), 1_000)
        );
    }

    #[test]
    fn separators_inside_parts_cannot_collide() {
        let left = firing_key("a:b", "c", None, 1);
        let right = firing_key("a", "b:c", None, 1);

        assert_ne!(left, right);
        assert_eq!(left, "cron:a%3Ab:c:integration:1");
        assert_ne!(
            firing_key("a", "%3A", None, 1),
            firing_key("a", ":", None, 1)
        );
    }
}
