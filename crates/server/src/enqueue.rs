//! Enqueueing for many concurrent callers in few statements: requests that arrive while a
//! batch is being written wait and go into the next one, so a burst of webhooks costs a
//! handful of multi-row `INSERT`s instead of one round trip (and one write turn) each. An idle
//! server writes a lone job at once: nothing lingers to fill a batch.

use std::sync::Arc;

use splice_domain::now_millis;
use splice_store::{Job, NewJob, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Jobs written together at most.
const BATCH: usize = 256;
/// Callers waiting for a batch at most; more wait to be queued.
const QUEUE: usize = 4096;
/// Batches written at once (PostgreSQL runs them in parallel; SQLite takes them in turn).
const WRITERS: usize = 4;

type Reply = oneshot::Sender<Result<(Job, bool), StoreError>>;

/// A handle to the batching writer.
#[derive(Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<(NewJob, Reply)>,
}

impl Enqueuer {
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, rx));
        Self { tx }
    }

    /// Stores `job` (once per idempotency key) and returns it, and whether it was created —
    /// when it is committed.
    pub async fn enqueue(&self, job: NewJob) -> Result<(Job, bool), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Missing("the job writer (the server is stopping)".into());
        self.tx.send((job, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(NewJob, Reply)>) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    loop {
        // While every writer is busy, callers accumulate into the next batch.
        let Ok(writer) = Arc::clone(&writers).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            write(store.as_ref(), batch).await;
            drop(writer);
        });
    }
}

async fn write(store: &dyn Store, batch: Vec<(NewJob, Reply)>) {
    let (jobs, replies): (Vec<NewJob>, Vec<Reply>) = batch.into_iter().unzip();
    match store.enqueue_jobs(&jobs, now_millis()).await {
        Ok(stored) => {
            for (reply, result) in replies.into_iter().zip(stored) {
                let _ = reply.send(Ok(result));
            }
        }
        // One bad job must not fail the others: each is written alone, with its own answer.
        Err(err) => {
            tracing::warn!(error = %err, jobs = jobs.len(), "batch enqueue failed; writing one by one");
            for (job, reply) in jobs.iter().zip(replies) {
                let _ = reply.send(store.enqueue_job(job, now_millis()).await);
            }
        }
    }
}
