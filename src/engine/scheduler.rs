//! The handle through which committed changes reach the engine: it keeps the Redis index in step
//! and wakes the in-process worker when something falls due sooner than it planned to look.

use std::sync::Arc;

use uuid::Uuid;

use super::redis_index::RedisIndex;
use super::wakeup::Wakeup;
use crate::store::{Scheduled, Settled, TransitionOutcome};

#[derive(Clone, Default)]
pub struct Scheduler {
    pub(super) wakeup: Wakeup,
    pub(super) redis: Option<Arc<RedisIndex>>,
}

impl Scheduler {
    pub fn new(redis: Option<Arc<RedisIndex>>) -> Self {
        Self {
            wakeup: Wakeup::default(),
            redis,
        }
    }

    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// `ok`, `down`, or `disabled` when no `redis_url` is configured (for `/health`).
    pub fn redis_status(&self) -> &'static str {
        match &self.redis {
            None => "disabled",
            Some(index) if index.is_up() => "ok",
            Some(_) => "down",
        }
    }

    /// After a transition committed.
    pub async fn transitioned(&self, outcome: &TransitionOutcome) {
        if let Some(scheduled) = outcome.scheduled {
            self.scheduled(&[scheduled]).await;
        }
        if let Some(redis) = &self.redis {
            redis.remove(&outcome.cancelled).await;
        }
    }

    /// After the worker committed a batch: settled ones leave the index, next levels enter it.
    /// `claimed` are ids taken from the index for this batch, settled or found stale.
    pub async fn settled(&self, settled: &[Settled], claimed: &[Uuid]) {
        let next: Vec<Scheduled> = settled.iter().filter_map(|s| s.next).collect();
        self.scheduled(&next).await;
        if let Some(redis) = &self.redis {
            let mut done: Vec<Uuid> = settled.iter().map(|s| s.escalation.id).collect();
            done.extend_from_slice(claimed);
            redis.remove(&done).await;
        }
    }

    /// After a commit that scheduled these (an incident escalated on arrival).
    pub async fn scheduled(&self, scheduled: &[Scheduled]) {
        if let Some(redis) = &self.redis {
            redis.add(scheduled).await;
        }
        if let Some(earliest) = scheduled.iter().map(|s| s.due).min() {
            self.wakeup.due_at(earliest);
        }
    }
}
