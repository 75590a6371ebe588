//! Group commit for ingest. Under load, committing one transaction per message spends most of
//! its time waiting for the disk (SQLite) or for a WAL flush per commit (PostgreSQL). The
//! [`IngestQueue`] hands messages to one writer task, which takes every message waiting at that
//! moment, up to [`MAX_BATCH`], and stores them with one [`Store::ingest_batch`]: one commit for
//! all. A lone message is stored at once, so there is no added delay when idle. One writer per
//! process beat several on both backends (docs/PERFORMANCE.md): fewer, larger commits.
//!
//! A backend whose batch blocks its thread while it writes (SQLite's direct connection,
//! [`crate::store::Queries::blocks_while_ingesting`]) gets a writer thread of its own, with a
//! single-threaded runtime: the batch never waits behind request tasks for a turn, and never
//! holds up one of the request workers.
//!
//! A caller gets its answer only after the commit that made its event durable. The writer task
//! owns the transactions, so a caller that goes away (a client disconnecting) cannot abandon one.
//! If a batch fails for a reason other than the database being unavailable, its messages are
//! retried one by one, so that one bad message fails alone.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Ingested, Store, StoreError};
use crate::domain::NewEvent;

/// The most messages one transaction stores.
pub const MAX_BATCH: usize = 1024;
/// Messages that may wait for a writer before callers wait to enqueue.
const QUEUE_CAPACITY: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<Ingested, StoreError>>;

#[derive(Clone)]
pub struct IngestQueue {
    sender: mpsc::Sender<(NewEvent, Reply)>,
}

impl IngestQueue {
    /// Starts the writer: a task, or a thread of its own for a backend that blocks while it
    /// writes. It stops when the last clone of the queue is dropped.
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        if store.blocks_while_ingesting() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name("klaxon-ingest".into())
                .spawn(move || runtime.block_on(write_batches(store, receiver)))?;
        } else {
            tokio::spawn(write_batches(store, receiver));
        }
        Ok(Self { sender })
    }

    /// Stores `event` and returns once it is committed.
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::internal("the ingest queue has stopped");
        self.sender
            .send((event, reply))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<(NewEvent, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.drain(..).unzip();
        match store.ingest_batch(&events).await {
            Ok(ingested) => {
                for (reply, ingested) in replies.into_iter().zip(ingested) {
                    let _ = reply.send(Ok(ingested));
                }
            }
            Err(error @ (StoreError::Unavailable(_) | StoreError::Conflict(_))) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(error) if events.len() > 1 => {
                tracing::warn!(%error, size = events.len(), "ingest batch failed; storing its messages one by one");
                for (event, reply) in events.into_iter().zip(replies) {
                    let _ = reply.send(store.ingest(event).await);
                }
            }
            Err(error) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}
