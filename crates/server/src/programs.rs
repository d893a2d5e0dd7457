//! The compiled programs of deployed integrations, kept in memory so an invocation does not
//! read its bytecode from the database.
//!
//! Entries are replaced on deploy and dropped on delete by this process. When the database is
//! shared with other nodes, every lookup also reads the integration's current version (one
//! indexed row) and reloads the program when another node deployed a newer one, so a deploy on
//! any node is what every node runs next.

use std::collections::HashMap;
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
            if !store.is_shared() {
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
        let Some(stored) = store.get_program(id).await? else {
            self.remove(id);
            return Ok(None);
        };
        let loaded = Arc::new(Loaded::new(stored));
        let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
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
