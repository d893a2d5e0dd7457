//! The invocation log, written off the request path: records are queued and a background
//! task writes them in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use splice_domain::InvocationRecord;
use splice_store::Store;
use tokio::sync::{mpsc, oneshot};

/// Records waiting beyond this are dropped (and counted in a warning) rather than slowing
/// requests down.
const QUEUE: usize = 10_000;
const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(50);

enum Message {
    Record(InvocationRecord),
    Flush(oneshot::Sender<()>),
}

/// A handle to the batching writer.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_batches(store, rx, dropped.clone()));
        Self { tx, dropped }
    }

    /// Queues a record without waiting; when the writer cannot keep up the record is dropped
    /// and counted (reported by the writer, at most once a batch).
    pub fn record(&self, record: InvocationRecord) {
        if self.tx.try_send(Message::Record(record)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        take(first, &mut batch, &mut waiting);
        // Linger briefly so a burst becomes one transaction.
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH && waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => take(next, &mut batch, &mut waiting),
                _ => break,
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                dropped = lost,
                "invocation log queue was full; records were dropped"
            );
        }
        if !batch.is_empty() {
            if let Err(err) = store.record_invocations(&batch).await {
                tracing::error!(error = %err, count = batch.len(), "failed to write invocation log");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn take(
    message: Message,
    batch: &mut Vec<InvocationRecord>,
    waiting: &mut Vec<oneshot::Sender<()>>,
) {
    match message {
        Message::Record(record) => batch.push(record),
        Message::Flush(done) => waiting.push(done),
    }
}
