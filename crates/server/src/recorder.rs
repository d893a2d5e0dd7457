//! The invocation log, written off the request path: records are queued and a background
//! task writes them in batches.
//!
//! Queuing a record is a push under a short lock; the writer is woken only when the queue
//! stops being empty (then it lingers, so a burst becomes a few transactions) or for a
//! flush, so a busy route costs no cross-thread wake-up per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use splice_domain::InvocationRecord;
use splice_store::Store;
use tokio::sync::{Notify, oneshot};

/// Records waiting beyond this are dropped (and counted in a warning) rather than slowing
/// requests down.
const QUEUE: usize = 10_000;
/// Records written per transaction.
const BATCH: usize = 1_000;
/// How long the writer waits after the first record before writing what has come.
const LINGER: Duration = Duration::from_millis(50);

/// A handle to the batching writer.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// The queue stopped being empty.
    wake: Notify,
    /// A flush is waiting: the writer stops lingering.
    hurry: Notify,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    records: Vec<InvocationRecord>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Recorder {
    pub fn start(store: Arc<dyn Store>) -> Self {
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_batches(store, Arc::clone(&shared)));
        Self { shared }
    }

    /// Queues a record without waiting; when the writer cannot keep up the record is dropped
    /// and counted (reported by the writer, at most once a batch).
    pub fn record(&self, record: InvocationRecord) {
        let queued = {
            let mut queue = self.shared.lock();
            if queue.records.len() >= QUEUE {
                drop(queue);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            queue.records.push(record);
            queue.records.len()
        };
        if queued == 1 {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.shared.lock().flushes.push(done);
        self.shared.wake.notify_one();
        self.shared.hurry.notify_one();
        let _ = wait.await;
    }
}

async fn write_batches(store: Arc<dyn Store>, shared: Arc<Shared>) {
    loop {
        shared.wake.notified().await;
        if shared.lock().flushes.is_empty() {
            // A flush cuts the wait short.
            let _ = tokio::time::timeout(LINGER, shared.hurry.notified()).await;
        }

        let flushes = std::mem::take(&mut shared.lock().flushes);
        let lost = shared.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                dropped = lost,
                "invocation log queue was full; records were dropped"
            );
        }
        // What came until now, flushes included; later records wait for the next round
        // rather than trickling out a few at a time.
        let records = std::mem::take(&mut shared.lock().records);
        for batch in records.chunks(BATCH) {
            if let Err(err) = store.record_invocations(batch).await {
                tracing::error!(error = %err, count = batch.len(), "failed to write invocation log");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
