//! The compiled programs of deployed integrations, kept in memory so an invocation does not
//! read its bytecode from the database.
//!
//! Entries are replaced on deploy and dropped on delete by this process. When the database is
//! shared with other nodes, deploys are announced to every node (PostgreSQL `NOTIFY`), which
//! drops the stale entry at once. While this node is not sure to hear announcements (before its
//! listener is up, after the connection was lost), every lookup reads the integration's current
//! version instead (one indexed row) and reloads the program when it changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use splice_domain::{Integration, IntegrationId};
use splice_sandbox::{Isolation, Limits, Program};
use splice_store::{Store, StoreError, StoredProgram};

/// An integration with the program the sandbox runs for it.
#[derive(Debug)]
pub struct Loaded {
    pub integration: Integration,
    pub program: Program,
}

impl Loaded {
    pub fn new(stored: StoredProgram) -> Self {
        let integration = stored.integration;
        let runtime = integration.runtime;
        let program = Program {
            integration: integration.id.to_string(),
            version: integration.meta.version,
            bytecode: Arc::new(stored.bytecode),
            limits: Limits {
                memory_bytes: (runtime.memory_mb as usize) << 20,
                cpu_ms: runtime.cpu_ms,
                wall_ms: runtime.wall_ms,
            },
            isolation: match runtime.isolation {
                splice_domain::Isolation::Warm => Isolation::Warm,
                splice_domain::Isolation::Invocation => Isolation::Invocation,
            },
        };
        Self {
            integration,
            program,
        }
    }
}

#[derive(Clone, Default)]
pub struct ProgramCache {
    loaded: Arc<RwLock<HashMap<IntegrationId, Arc<Loaded>>>>,
    /// This node hears every deploy announcement, so cached entries need no version check.
    listening: Arc<AtomicBool>,
    /// Counts announcements, so a load that raced one is not cached.
    epoch: Arc<AtomicU64>,
}

impl ProgramCache {
    /// The current program of an integration, loading it from the store on first use.
    pub async fn get(
        &self,
        store: &dyn Store,
        id: &IntegrationId,
    ) -> Result<Option<Arc<Loaded>>, StoreError> {
        let cached = self.read().get(id).cloned();
        if let Some(hit) = cached {
            if !store.is_shared() || self.listening.load(Ordering::Acquire) {
                return Ok(Some(hit));
            }
            match store.integration_version(id).await? {
                Some(version) if version == hit.integration.meta.version => return Ok(Some(hit)),
                Some(_) => {}
                None => {
                    self.remove(id);
                    return Ok(None);
                }
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(stored) = store.get_program(id).await? else {
            self.remove(id);
            return Ok(None);
        };
        let loaded = Arc::new(Loaded::new(stored));
        let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        // An announcement while loading may be about this very program: use it, keep nothing.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return Ok(Some(loaded));
        }
        // A concurrent deploy may have put a newer version meanwhile; keep the newest.
        let entry = map.entry(id.clone()).or_insert_with(|| loaded.clone());
        if entry.integration.meta.version < loaded.integration.meta.version {
            *entry = loaded;
        }
        Ok(Some(entry.clone()))
    }

    pub fn put(&self, loaded: Loaded) {
        let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        map.insert(loaded.integration.id.clone(), Arc::new(loaded));
    }

    /// Another node deployed (`"<id>@<version>"`), deleted (`"<id>"`) or may have changed
    /// anything (`"*"`): drops what that makes stale.
    pub fn announced(&self, what: &str) {
        let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if what == "*" {
            map.clear();
            return;
        }
        let (id, version) = match what.split_once('@') {
            Some((id, version)) => (id, version.parse::<i64>().ok()),
            None => (what, None),
        };
        let Ok(id) = IntegrationId::parse(id) else {
            return;
        };
        let current = map.get(&id).map(|l| l.integration.meta.version);
        if current.is_some_and(|cached| version.is_none_or(|v| cached < v)) {
            map.remove(&id);
        }
    }

    /// Whether this node hears every deploy from now on. Becoming sure drops everything cached
    /// before, which may have missed announcements.
    pub fn set_listening(&self, listening: bool) {
        if listening {
            let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            self.epoch.fetch_add(1, Ordering::AcqRel);
            map.clear();
        }
        self.listening.store(listening, Ordering::Release);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn remove(&self, id: &IntegrationId) {
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<IntegrationId, Arc<Loaded>>> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use splice_domain::{Meta, RuntimeSettings, Tags};

    use super::*;

    fn loaded(id: &str, version: i64) -> Loaded {
        let mut meta = Meta::new(Tags::default(), 0);
        meta.version = version;
        Loaded::new(StoredProgram {
            integration: Integration {
                id: IntegrationId::parse(id).unwrap(),
                files: BTreeMap::new(),
                connectors: BTreeMap::new(),
                runtime: RuntimeSettings::default(),
                schedules: Vec::new(),
                meta,
            },
            bytecode: Vec::new(),
        })
    }

    fn cached(cache: &ProgramCache, id: &str) -> Option<i64> {
        let id = IntegrationId::parse(id).unwrap();
        cache.read().get(&id).map(|l| l.integration.meta.version)
    }

    #[test]
    fn announcements_drop_only_what_they_make_stale() {
        let cache = ProgramCache::default();
        cache.put(loaded("crm", 3));
        cache.put(loaded("chat", 1));

        // This node's own deploy comes back announced: the entry is current and stays.
        cache.announced("crm@3");
        assert_eq!(cached(&cache, "crm"), Some(3));
        // Another node deployed a newer version.
        cache.announced("crm@4");
        assert_eq!(cached(&cache, "crm"), None);
        // A deletion names no version; garbage is ignored.
        cache.announced("chat");
        assert_eq!(cached(&cache, "chat"), None);
        cache.put(loaded("chat", 2));
        cache.announced("not an id@x");
        assert_eq!(cached(&cache, "chat"), Some(2));
        cache.announced("*");
        assert_eq!(cached(&cache, "chat"), None);
    }

    #[test]
    fn becoming_sure_to_hear_forgets_what_was_cached_before() {
        let cache = ProgramCache::default();
        cache.put(loaded("crm", 1));
        assert!(!cache.is_listening());
        cache.set_listening(true);
        assert!(cache.is_listening());
        assert_eq!(cached(&cache, "crm"), None);
        cache.put(loaded("crm", 2));
        cache.set_listening(false);
        assert_eq!(cached(&cache, "crm"), Some(2));
    }
}
