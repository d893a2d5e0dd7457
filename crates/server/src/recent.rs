//! What was read recently, kept for a short while: for reads that would otherwise repeat for
//! every webhook delivery or job. Changes made on this node clear the cache at once; changes
//! made on another node apply once an entry is older than its time to live.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Entries kept at most; a full cache starts over.
const MAX_ENTRIES: usize = 10_000;

pub struct Recent<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
        }
    }

    /// The value put under `key`, unless it is older than the time to live.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (value, until) = entries.get(key)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now() + self.ttl));
    }

    /// Forgets everything: after a change on this node to what the values were read from.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_last_their_time_to_live_or_until_cleared() {
        let recent = Recent::new(Duration::from_millis(50));
        recent.put("a", 1);
        recent.put("b", 2);
        assert_eq!((recent.get(&"a"), recent.get(&"c")), (Some(1), None));
        recent.clear();
        assert_eq!(recent.get(&"b"), None);

        recent.put("a", 3);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(recent.get(&"a"), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let recent = Recent::new(Duration::from_secs(60));
        for n in 0..MAX_ENTRIES {
            recent.put(n, n);
        }
        assert_eq!(recent.get(&0), Some(0));
        recent.put(MAX_ENTRIES, MAX_ENTRIES);
        assert_eq!(recent.get(&0), None);
        assert_eq!(recent.get(&MAX_ENTRIES), Some(MAX_ENTRIES));
    }
}
