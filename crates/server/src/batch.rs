//! Writing for many concurrent callers in few statements: what callers submit while a batch is
//! being written waits and goes into the next one, so a burst of webhooks or of finished jobs
//! costs a handful of multi-row statements instead of a round trip (and a write turn, and a
//! commit) each. An idle server writes a lone item at once: nothing lingers to fill a batch.

use std::future::Future;
use std::sync::Arc;

use splice_domain::now_millis;
use splice_store::{Job, NewJob, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Items written together at most.
const BATCH: usize = 256;
/// Callers waiting for a batch at most; more wait to be queued.
const QUEUE: usize = 4096;

/// How one kind of item is written in batches.
pub trait Write: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;
    /// Batches written at once (PostgreSQL runs them in parallel; SQLite takes them in turn).
    const WRITERS: usize;
    /// Writes `items` and answers for each, in their order. A failure of the whole batch must
    /// not fail the items that would succeed alone: a writer falls back to one at a time.
    fn write(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Vec<Result<Self::Output, StoreError>>> + Send;
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A handle to a batching writer.
pub struct Batcher<W: Write> {
    tx: mpsc::Sender<(W::Item, Reply<W::Output>)>,
}

impl<W: Write> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<W: Write> Batcher<W> {
    /// Starts the writer on the current tokio runtime.
    pub fn start(writer: W) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(Arc::new(writer), rx));
        Self { tx }
    }

    /// Writes `item` with the next batch and answers when that batch is committed.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Missing("the batch writer (the server is stopping)".into());
        self.tx.send((item, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches<W: Write>(
    writer: Arc<W>,
    mut rx: mpsc::Receiver<(W::Item, Reply<W::Output>)>,
) {
    let writers = Arc::new(Semaphore::new(W::WRITERS));
    loop {
        // While every writer is busy, callers accumulate into the next batch.
        let Ok(turn) = Arc::clone(&writers).acquire_owned().await else {
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
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            let (items, replies): (Vec<W::Item>, Vec<Reply<W::Output>>) = batch.into_iter().unzip();
            let answers = writer.write(items).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(turn);
        });
    }
}

/// Enqueues jobs in multi-row `INSERT`s.
pub struct JobWrites(pub Arc<dyn Store>);

impl Write for JobWrites {
    type Item = NewJob;
    type Output = (Job, bool);
    const WRITERS: usize = 4;

    async fn write(&self, jobs: Vec<NewJob>) -> Vec<Result<(Job, bool), StoreError>> {
        let store = self.0.as_ref();
        match store.enqueue_jobs(&jobs, now_millis()).await {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            // One bad job must not fail the others: each is written alone, with its own answer.
            Err(err) => {
                tracing::warn!(error = %err, jobs = jobs.len(), "batch enqueue failed; writing one by one");
                let mut answers = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    answers.push(store.enqueue_job(job, now_millis()).await);
                }
                answers
            }
        }
    }
}

/// Stores jobs (once per idempotency key) for many concurrent callers: each gets its job, and
/// whether it was created, once committed.
pub type Enqueuer = Batcher<JobWrites>;

impl Enqueuer {
    pub fn enqueue(
        &self,
        job: NewJob,
    ) -> impl Future<Output = Result<(Job, bool), StoreError>> + Send + '_ {
        self.submit(job)
    }
}
