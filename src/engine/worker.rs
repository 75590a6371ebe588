//! The escalation worker: sleeps until the earliest due escalation, settles what is due in
//! batches (one transaction each), and goes back to sleep.
//!
//! - **On time**: the deadline is the earliest due time (from the Redis index when it is up,
//!   otherwise from the database), capped by `poll_interval`, the safety-net scan; a commit
//!   that schedules something sooner wakes the worker early, and when such wake-ups may have
//!   been lost the worker scans at once (see [`super::wakeup`]).
//! - **Exactly once**: claiming and settling happen in the store, which skips rows another
//!   worker holds; the worker only decides when to ask.
//! - **Faults**: a store error backs off (capped exponential, with jitter) and retries; nothing
//!   is lost because nothing is taken from the database until its transaction commits.
//! - **Shutdown**: it stops claiming once the batch in hand is committed.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use super::scheduler::Scheduler;
use crate::backoff::Backoff;
use crate::domain::{EscalationStatus, Timestamp};
use crate::metrics::Metrics;
use crate::store::{Settled, Store, StoreError};

/// Escalations settled per transaction.
pub const BATCH_SIZE: u32 = 500;

/// What `/health` shows of this process's worker.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    running: AtomicBool,
    /// Epoch milliseconds of the last time the worker looked for due work; 0 before the first.
    last_tick_at: AtomicI64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerSnapshot {
    pub running: bool,
    pub last_tick_at: Option<Timestamp>,
}

impl WorkerStatus {
    pub fn snapshot(&self) -> WorkerSnapshot {
        let last = self.last_tick_at.load(Ordering::SeqCst);
        WorkerSnapshot {
            running: self.running.load(Ordering::SeqCst),
            last_tick_at: (last > 0).then(|| Timestamp::from_millis(last)),
        }
    }
}

pub struct Worker {
    pub store: Arc<dyn Store>,
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    pub status: Arc<WorkerStatus>,
    pub poll_interval: Duration,
    /// Notified when an executed level leaves notifications to send: wakes the dispatcher.
    pub outbox: Arc<Notify>,
}

impl Worker {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        self.status.running.store(true, Ordering::SeqCst);
        tracing::info!("escalation worker started");
        let mut backoff = Backoff::default();
        let mut next_scan = Instant::now();
        while !*shutdown.borrow() {
            let wakeup = self.scheduler.wakeup.clone();
            let woken = wakeup.arm();
            let scan = wakeup.take_scan_request() || Instant::now() >= next_scan;
            match self.tick(scan, &shutdown).await {
                Ok(next_due) => {
                    if backoff.is_failing() {
                        tracing::info!("database reachable again; escalation worker resumed");
                    }
                    backoff.reset();
                    if scan {
                        next_scan = Instant::now() + self.poll_interval;
                    }
                    let deadline = next_due.map_or(next_scan, |due| next_scan.min(instant_of(due)));
                    wakeup.sleeping_until(timestamp_of(deadline));
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = woken => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    if !backoff.is_failing() {
                        tracing::warn!(%error, "escalation worker cannot reach the database; retrying with backoff");
                    }
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                    next_scan = Instant::now();
                }
            }
        }
        self.status.running.store(false, Ordering::SeqCst);
        tracing::info!("escalation worker stopped");
    }

    /// Settles everything due now, batch by batch, and says when the next escalation is due.
    /// With `scan`, the database itself is searched too, not only the Redis index.
    async fn tick(
        &self,
        scan: bool,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.status
            .last_tick_at
            .store(Timestamp::now().as_millis(), Ordering::SeqCst);
        let redis = self.scheduler.redis.as_ref().filter(|index| index.is_up());
        if let Some(index) = redis {
            loop {
                let now = Timestamp::now();
                let Some(ids) = index.due(now, BATCH_SIZE).await else {
                    break;
                };
                if ids.is_empty() {
                    break;
                }
                let settled = self
                    .store
                    .settle_due(&Timestamp::now, BATCH_SIZE, Some(&ids))
                    .await?;
                self.record(&settled, &ids).await;
                if *shutdown.borrow() {
                    return Ok(None);
                }
            }
        }
        if scan || redis.is_none() {
            loop {
                let settled = self
                    .store
                    .settle_due(&Timestamp::now, BATCH_SIZE, None)
                    .await?;
                self.record(&settled, &[]).await;
                if settled.len() < BATCH_SIZE as usize || *shutdown.borrow() {
                    break;
                }
            }
        }
        match redis {
            Some(index) => match index.next_due().await {
                Some(next) => Ok(next),
                None => self.store.next_due().await,
            },
            None => self.store.next_due().await,
        }
    }

    async fn record(&self, settled: &[Settled], claimed: &[Uuid]) {
        if settled.iter().any(|s| s.to_send > 0) {
            self.outbox.notify_one();
        }
        for Settled { escalation, .. } in settled {
            match (escalation.status, escalation.executed_at) {
                (EscalationStatus::Executed, Some(executed_at)) => {
                    let lag_ms = executed_at.as_millis() - escalation.scheduled_at.as_millis();
                    self.metrics.executed(lag_ms);
                    tracing::info!(
                        escalation_id = %escalation.id,
                        incident_id = %escalation.incident_id,
                        level = escalation.escalation_level,
                        lag_ms,
                        "escalation executed"
                    );
                }
                _ => {
                    self.metrics.cancelled();
                    tracing::info!(
                        escalation_id = %escalation.id,
                        incident_id = %escalation.incident_id,
                        level = escalation.escalation_level,
                        "due escalation cancelled: the incident stopped escalating"
                    );
                }
            }
        }
        self.scheduler.settled(settled, claimed).await;
    }
}

/// The monotonic instant at which wall-clock time `at` arrives (now, if it has).
fn instant_of(at: Timestamp) -> Instant {
    let wait = at.as_millis() - Timestamp::now().as_millis();
    Instant::now() + Duration::from_millis(wait.max(0) as u64)
}

/// The wall-clock time of monotonic `instant`.
fn timestamp_of(instant: Instant) -> Timestamp {
    let wait = instant.saturating_duration_since(Instant::now());
    Timestamp::now().after(wait)
}
