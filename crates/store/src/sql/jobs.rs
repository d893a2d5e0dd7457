//! The job queue: one `jobs` table for all background work, claimed under leases.
//!
//! This module owns the SQL of enqueueing, claiming and recording outcomes, the same on SQLite
//! and PostgreSQL except for how a claim keeps other claimers out (see [`claim_sql`]). Waking
//! workers, the worker loop and the handlers live above the store.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use splice_domain::{Event, Millis};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::events::insert_events;
use super::{Dialect, SqlStore, from_json, parse_column, to_json};
use crate::{
    Announcements, Job, JobClaim, JobOutcome, JobQuery, JobStatus, JobStore, NewJob, Result,
    StoreError,
};

/// Which jobs a claim may take: queued and due, or running under a lapsed lease.
const DUE: &str =
    "((status = 'queued' AND run_at <= $1) OR (status = 'running' AND lease_until < $1))";

/// `DUE` again, for rows already found by id: a `CASE` no index applies to, so the planner
/// looks the few chosen rows up by id instead of walking every due row a second time.
const STILL_DUE: &str = "CASE status WHEN 'queued' THEN run_at <= $1 \
     WHEN 'running' THEN lease_until < $1 AND attempts < max_attempts ELSE FALSE END";

/// Makes the claimed rows a run of the claiming worker. `$1` now, `$2` worker, `$3` the
/// lease's end; `STILL_DUE` is checked again so a row another claimer took in between is left
/// out.
const TAKE: &str = "UPDATE jobs SET status = 'running', lease_owner = $2, lease_until = $3, \
     attempts = attempts + 1, started_at = $1, updated_at = $1";

/// Serializes claims with a per-partition limit on PostgreSQL, so two nodes cannot both see
/// a partition below its limit and both fill it.
const PARTITION_CLAIM_LOCK: &str = "splice-jobs:partition-claim";

/// The PostgreSQL notification channel on which nodes announce enqueued jobs.
const JOBS_CHANNEL: &str = "splice_jobs";
/// The channel on which nodes announce deploys (the payload is the integration id, or `*`).
pub(crate) const DEPLOYS_CHANNEL: &str = "splice_deploys";

const LAPSED_ON_LAST_ATTEMPT: &str = "the lease of the last attempt expired";
/// Columns bound per enqueued job, and jobs per `INSERT` (well under both databases'
/// parameter limits).
const ENQUEUE_COLUMNS: usize = 9;
const JOBS_PER_INSERT: usize = 100;
/// How often a process dead-letters lapsed last attempts (and claims without a floor).
const REAP_EVERY_MS: Millis = 1_000;
/// How far below the oldest job a claim took the next claim starts looking.
const FLOOR_SLACK_MS: Millis = 1_000;

/// The outcome guard: the job is still the claimed run (`$n` numbering from `first`).
fn run_guard(first: usize) -> String {
    format!(
        "id = ${} AND status = 'running' AND lease_owner = ${} AND attempts = ${}",
        first,
        first + 1,
        first + 2
    )
}

/// ` AND kind IN ($first, …)`, or nothing for every kind.
fn kinds_clause(count: usize, first: usize) -> String {
    if count == 0 {
        return String::new();
    }
    let params: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    format!(" AND kind IN ({})", params.join(", "))
}

/// The claim statement. Parameters: `$1` now, `$2` worker, `$3` lease end, `$4` limit, `$5`
/// the partition limit when `limited` and the floor otherwise, then the kinds.
///
/// Without a partition limit, PostgreSQL locks the chosen rows with `FOR UPDATE SKIP LOCKED`,
/// so concurrent claimers pass over each other's rows instead of waiting or sharing them.
/// SQLite runs the statement under its single write lock. With a partition limit, window
/// functions rule out `FOR UPDATE`; the caller serializes those claims instead.
///
/// Between sweeps (once a second, see [`SqlStore::sweep_lapsed`]) a claim looks only at
/// queued jobs due at or after the floor: a second before the oldest `run_at` the previous
/// claim took. On PostgreSQL every job claimed leaves an index entry under `queued` until
/// vacuumed, and walking them from the oldest on every claim cost a millisecond and more
/// during a burst. Jobs are queued due at the time they are built or later, so below the
/// floor there can only be one committed more than a second after it was built, or queued by
/// a node whose clock is behind; the sweep claims without a floor and finds it. Running jobs
/// whose lease lapsed are looked for only by the sweep too (`lapsed`).
fn claim_sql(dialect: Dialect, kinds: usize, limited: bool, lapsed: bool) -> String {
    let kinds = kinds_clause(kinds, 6);
    let due = if limited {
        format!(
            "WITH running AS (SELECT partition_key, COUNT(*) AS n FROM jobs \
             WHERE status = 'running' AND lease_until >= $1 AND partition_key IS NOT NULL \
             GROUP BY partition_key), \
             ranked AS (SELECT id, run_at, partition_key, ROW_NUMBER() OVER \
             (PARTITION BY partition_key ORDER BY run_at, id) AS position \
             FROM jobs WHERE {DUE}{kinds}), \
             due AS (SELECT ranked.id FROM ranked LEFT JOIN running \
             ON running.partition_key = ranked.partition_key \
             WHERE ranked.partition_key IS NULL OR ranked.position + COALESCE(running.n, 0) <= $5 \
             ORDER BY ranked.run_at, ranked.id LIMIT $4)"
        )
    } else {
        let lock = match dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // Each half walks the claim index in order and stops at the limit: queued jobs by
        // `run_at`, and the (few) running ones whose lease lapsed.
        let queued = format!(
            "SELECT id, run_at FROM (SELECT id, run_at FROM jobs WHERE status = 'queued' \
             AND run_at <= $1 AND run_at >= $5{kinds} ORDER BY run_at, id LIMIT $4{lock}) \
             AS queued"
        );
        if lapsed {
            format!(
                "WITH due AS ({queued} UNION ALL SELECT id, run_at FROM (SELECT id, run_at \
                 FROM jobs WHERE status = 'running' AND lease_until < $1 \
                 AND attempts < max_attempts{kinds} ORDER BY run_at, id LIMIT $4{lock}) \
                 AS lapsed ORDER BY run_at, id LIMIT $4)"
            )
        } else {
            format!("WITH due AS ({queued})")
        }
    };
    format!("{due} {TAKE} WHERE id IN (SELECT id FROM due) AND {STILL_DUE} RETURNING *")
}

/// `job_` and 32 hex digits from 128 random bits.
fn new_job_id() -> String {
    let digest = splice_crypto::sha256_hex(&splice_crypto::random_token(16));
    format!("job_{}", &digest[..32])
}

fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

fn read_count(row: &AnyRow, column: &str) -> Result<u32> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("job {column}: {value}")))
}

fn read_job(row: &AnyRow) -> Result<Job> {
    let status: String = row.try_get("status")?;
    let result: Option<String> = row.try_get("result")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        partition: row.try_get("partition_key")?,
        payload: from_json(row.try_get("payload")?, "job payload")?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: parse_column(&status, "job status", JobStatus::parse)?,
        attempts: read_count(row, "attempts")?,
        max_attempts: read_count(row, "max_attempts")?,
        run_at: row.try_get("run_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
        result: result.map(|r| from_json(&r, "job result")).transpose()?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// The statement recording `outcome` for a claimed run: its own parameters, then the
/// [`run_guard`]'s.
fn outcome_sql(job: &Job, outcome: JobOutcome<'_>) -> String {
    match outcome {
        JobOutcome::Succeeded(_) => format!(
            "UPDATE jobs SET status = 'succeeded', result = $1, lease_until = NULL, \
             finished_at = $2, updated_at = $2 WHERE {} RETURNING *",
            run_guard(3)
        ),
        JobOutcome::Failed { retry_at, .. } => match retry_after(job, retry_at) {
            Some(_) => format!(
                "UPDATE jobs SET status = 'queued', run_at = $3, last_error = $1, \
                 lease_until = NULL, updated_at = $2 WHERE {} RETURNING *",
                run_guard(4)
            ),
            None => format!(
                "UPDATE jobs SET status = 'failed', last_error = $1, lease_until = NULL, \
                 finished_at = $2, updated_at = $2 WHERE {} RETURNING *",
                run_guard(3)
            ),
        },
    }
}

/// When a failed run goes again: at `retry_at`, if it has attempts left. The guard pins
/// `attempts` to the claimed run's, and `max_attempts` never changes, so deciding here is the
/// same as deciding in SQL.
fn retry_after(job: &Job, retry_at: Option<Millis>) -> Option<Millis> {
    retry_at.filter(|_| job.attempts < job.max_attempts)
}

/// Binds the parameters of [`outcome_sql`] that come before the guard's.
fn bind_outcome<'q>(
    sql: &'q str,
    job: &Job,
    outcome: JobOutcome<'q>,
    now: Millis,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let query = sqlx::query(sql);
    match outcome {
        JobOutcome::Succeeded(result) => query.bind(to_json(result)).bind(now),
        JobOutcome::Failed { error, retry_at } => {
            let query = query.bind(error).bind(now);
            match retry_after(job, retry_at) {
                Some(at) => query.bind(at),
                None => query,
            }
        }
    }
}

impl SqlStore {
    /// Marks `runs` claimed runs succeeded in one statement: per run its id, lease owner,
    /// attempt (the [`run_guard`]), result and the time, as `VALUES` rows.
    fn succeed_sql(&self, runs: usize) -> String {
        let returning = match self.dialect {
            Dialect::Postgres => "jobs.*",
            Dialect::Sqlite => "*",
        };
        format!(
            "UPDATE jobs SET status = 'succeeded', result = v.column4, lease_until = NULL, \
             finished_at = v.column5, updated_at = v.column5 FROM (VALUES {}) AS v \
             WHERE jobs.id = v.column1 AND jobs.status = 'running' \
             AND jobs.lease_owner = v.column2 AND jobs.attempts = v.column3 RETURNING {returning}",
            self.dialect.value_rows(runs, 5, "")
        )
    }

    /// At most once a second per process, and then says so: dead-letters running jobs whose
    /// lease lapsed on their last attempt (a job that kills its node every time must not cycle
    /// forever), before a claim that also takes the lapsed runs with attempts left.
    async fn sweep_lapsed(&self, claim: &JobClaim<'_>) -> Result<bool> {
        let last = self.last_reap.load(Ordering::Relaxed);
        if claim.now.saturating_sub(last) < REAP_EVERY_MS && claim.now >= last {
            return Ok(false);
        }
        self.last_reap.store(claim.now, Ordering::Relaxed);
        let sql = format!(
            "UPDATE jobs SET status = 'failed', last_error = $2, lease_until = NULL, \
             finished_at = $1, updated_at = $1 WHERE status = 'running' AND lease_until < $1 \
             AND attempts >= max_attempts{}",
            kinds_clause(claim.kinds.len(), 3)
        );
        let mut lapsed = sqlx::query(&sql)
            .bind(claim.now)
            .bind(LAPSED_ON_LAST_ATTEMPT);
        for kind in claim.kinds {
            lapsed = lapsed.bind(*kind);
        }
        let dead = lapsed.execute(&self.pool).await?.rows_affected();
        if dead > 0 {
            tracing::warn!(
                jobs = dead,
                "jobs dead-lettered after their last lease expired"
            );
        }
        Ok(true)
    }

    /// Binds the run guard's id, lease owner and attempt after the parameters `query` has
    /// bound, and runs it. A job that was never claimed has no run to guard: `None`.
    async fn write_outcome<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        job: &'q Job,
    ) -> Result<Option<Job>> {
        let Some(owner) = job.lease_owner.as_deref() else {
            return Ok(None);
        };
        let _turn = self.write_turn().await;
        let row = query
            .bind(job.id.as_str())
            .bind(owner)
            .bind(i64::from(job.attempts))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(read_job).transpose()
    }
}

#[async_trait]
impl JobStore for SqlStore {
    async fn enqueue_job(&self, job: &NewJob, now: Millis) -> Result<(Job, bool)> {
        let mut stored = self.enqueue_jobs(std::slice::from_ref(job), now).await?;
        stored
            .pop()
            .ok_or_else(|| StoreError::Missing("the enqueued job".into()))
    }

    async fn enqueue_jobs(&self, jobs: &[NewJob], now: Millis) -> Result<Vec<(Job, bool)>> {
        let ids: Vec<String> = jobs.iter().map(|_| new_job_id()).collect();
        let mut created: HashMap<String, Job> = HashMap::with_capacity(jobs.len());
        for (chunk, chunk_ids) in jobs
            .chunks(JOBS_PER_INSERT)
            .zip(ids.chunks(JOBS_PER_INSERT))
        {
            // Per row: id, kind, partition, payload, idempotency key, max attempts, run at,
            // created at, updated at; status and attempts are constants.
            let sql = format!(
                "INSERT INTO jobs (id, kind, partition_key, payload, idempotency_key, \
                 max_attempts, run_at, created_at, updated_at, status, attempts) \
                 VALUES {} ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
                self.dialect()
                    .value_rows(chunk.len(), ENQUEUE_COLUMNS, "'queued', 0")
            );
            let mut query = sqlx::query(&sql);
            for (job, id) in chunk.iter().zip(chunk_ids) {
                query = query
                    .bind(id.as_str())
                    .bind(&job.kind)
                    .bind(&job.partition)
                    .bind(to_json(&job.payload))
                    .bind(&job.idempotency_key)
                    .bind(i64::from(job.max_attempts))
                    .bind(job.run_at)
                    .bind(now)
                    .bind(now);
            }
            let turn = self.write_turn().await;
            let inserted = query.fetch_all(&self.pool).await?;
            drop(turn);
            for row in &inserted {
                let job = read_job(row)?;
                created.insert(job.id.clone(), job);
            }
        }

        let mut stored = Vec::with_capacity(jobs.len());
        for (job, id) in jobs.iter().zip(ids) {
            if let Some(new) = created.remove(&id) {
                stored.push((new, true));
                continue;
            }
            // The key is taken (by a committed job, or an earlier one of this batch).
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let existing = sqlx::query("SELECT * FROM jobs WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            match existing {
                Some(row) => stored.push((read_job(&row)?, false)),
                None => {
                    return Err(StoreError::Missing(format!(
                        "job with idempotency key {key:?}"
                    )));
                }
            }
        }
        Ok(stored)
    }

    async fn claim_jobs(&self, claim: &JobClaim<'_>) -> Result<Vec<Job>> {
        let limited = claim.max_running_per_partition.is_some();
        let _turn = self.write_turn().await;
        let lapsed = self.sweep_lapsed(claim).await?;

        let sql = claim_sql(self.dialect, claim.kinds.len(), limited, lapsed);
        let mut query = sqlx::query(&sql)
            .bind(claim.now)
            .bind(claim.worker)
            .bind(claim.now.saturating_add(millis(claim.lease)))
            .bind(i64::from(claim.limit));
        let floor = match lapsed {
            true => Millis::MIN,
            false => self.claim_floor.load(Ordering::Relaxed),
        };
        query = match claim.max_running_per_partition {
            Some(max) => query.bind(i64::from(max)),
            None => query.bind(floor),
        };
        for kind in claim.kinds {
            query = query.bind(*kind);
        }
        // On SQLite one statement. On PostgreSQL a transaction: a partition limit holds the
        // lock that serializes those claims; other claims turn bitmap scans off, because with
        // statistics from before a burst the planner expects few queued jobs and would read
        // and sort every one of them to take a few, where the claim index hands them over in
        // order (a 34,000-job backlog: 28 ms per claim instead of 1).
        let rows = match (self.dialect, limited) {
            (Dialect::Sqlite, _) => query.fetch_all(&self.pool).await?,
            (Dialect::Postgres, true) => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(PARTITION_CLAIM_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
            (Dialect::Postgres, false) => {
                let mut tx = self
                    .pool
                    .begin_with("BEGIN; SET LOCAL enable_bitmapscan = off")
                    .await?;
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
        };

        let mut jobs = rows.iter().map(read_job).collect::<Result<Vec<_>>>()?;
        jobs.sort_by(|a, b| (a.run_at, &a.id).cmp(&(b.run_at, &b.id)));
        if let (false, Some(oldest)) = (limited, jobs.first()) {
            let floor = oldest.run_at.saturating_sub(FLOOR_SLACK_MS);
            self.claim_floor.store(floor, Ordering::Relaxed);
        }
        Ok(jobs)
    }

    async fn heartbeat_job(&self, job: &Job, lease: Duration, now: Millis) -> Result<Option<Job>> {
        let sql = format!(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE {} RETURNING *",
            run_guard(3)
        );
        let query = sqlx::query(&sql)
            .bind(now.saturating_add(millis(lease)))
            .bind(now);
        self.write_outcome(query, job).await
    }

    async fn complete_job(
        &self,
        job: &Job,
        result: &serde_json::Value,
        now: Millis,
    ) -> Result<Option<Job>> {
        let outcome = JobOutcome::Succeeded(result);
        let sql = outcome_sql(job, outcome);
        self.write_outcome(bind_outcome(&sql, job, outcome, now), job)
            .await
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<Option<Job>> {
        let outcome = JobOutcome::Failed { error, retry_at };
        let sql = outcome_sql(job, outcome);
        self.write_outcome(bind_outcome(&sql, job, outcome, now), job)
            .await
    }

    async fn finish_jobs(
        &self,
        runs: &[(&Job, JobOutcome<'_>)],
        now: Millis,
        event: &(dyn for<'j> Fn(&'j Job) -> Option<Event> + Send + Sync),
    ) -> Result<Vec<Option<Job>>> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let mut finished: Vec<Option<Job>> = vec![None; runs.len()];
        // Successes, the common case, in one statement per chunk; failures one by one.
        let succeeded: Vec<(usize, &Job, &str, &serde_json::Value)> = runs
            .iter()
            .enumerate()
            .filter_map(
                |(at, &(job, outcome))| match (job.lease_owner.as_deref(), outcome) {
                    (Some(owner), JobOutcome::Succeeded(result)) => Some((at, job, owner, result)),
                    _ => None,
                },
            )
            .collect();
        for chunk in succeeded.chunks(JOBS_PER_INSERT) {
            let sql = self.succeed_sql(chunk.len());
            let mut query = sqlx::query(&sql);
            for &(_, job, owner, result) in chunk {
                query = query
                    .bind(job.id.as_str())
                    .bind(owner)
                    .bind(i64::from(job.attempts))
                    .bind(to_json(result))
                    .bind(now);
            }
            let mut written: HashMap<String, Job> = HashMap::with_capacity(chunk.len());
            for row in query.fetch_all(&mut *tx).await? {
                let job = read_job(&row)?;
                written.insert(job.id.clone(), job);
            }
            for &(at, job, _, _) in chunk {
                finished[at] = written.remove(&job.id);
            }
        }
        for (at, &(job, outcome)) in runs.iter().enumerate() {
            let (Some(owner), JobOutcome::Failed { .. }) = (job.lease_owner.as_deref(), outcome)
            else {
                continue;
            };
            let sql = outcome_sql(job, outcome);
            let row = bind_outcome(&sql, job, outcome, now)
                .bind(job.id.as_str())
                .bind(owner)
                .bind(i64::from(job.attempts))
                .fetch_optional(&mut *tx)
                .await?;
            finished[at] = row.as_ref().map(read_job).transpose()?;
        }
        let events: Vec<Event> = finished.iter().flatten().filter_map(event).collect();
        insert_events(&mut tx, self.dialect(), &events).await?;
        tx.commit().await?;
        Ok(finished)
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(read_job).transpose()
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR partition_key = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(query.status.map(JobStatus::as_str))
        .bind(&query.kind)
        .bind(&query.partition)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read_job).collect()
    }

    async fn replay_job(&self, id: &str, now: Millis) -> Result<Option<Job>> {
        let row = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, lease_owner = NULL, \
             lease_until = NULL, result = NULL, finished_at = NULL, updated_at = $2 \
             WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(read_job).transpose()
    }

    async fn cancel_job(&self, id: &str, now: Millis) -> Result<Option<Job>> {
        let row = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2 \
             WHERE id = $1 AND status = 'queued' RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(read_job).transpose()
    }

    async fn next_job_due(&self, kinds: &[&str]) -> Result<Option<Millis>> {
        let sql = format!(
            "SELECT MIN(CASE WHEN status = 'queued' THEN run_at ELSE lease_until END) FROM jobs \
             WHERE status IN ('queued', 'running'){}",
            kinds_clause(kinds.len(), 1)
        );
        let mut query = sqlx::query_scalar(&sql);
        for kind in kinds {
            query = query.bind(*kind);
        }
        Ok(query.fetch_one(&self.pool).await?)
    }

    async fn purge_finished_jobs(&self, before: Millis) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') \
             AND finished_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn announce_jobs(&self) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(JOBS_CHANNEL)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn announce_deploy(&self, integration: &str) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(DEPLOYS_CHANNEL)
                .bind(integration)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Announcements>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen_all([JOBS_CHANNEL, DEPLOYS_CHANNEL]).await?;
        Ok(Some(Announcements(listener)))
    }
}
