//! Who listens where: channel → subscribed connections, so that a publish costs
//! O(subscribers of that channel), whatever else is connected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

/// What the hub holds of one connection: its queue and the switch that drops it.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The connection's number in this process (the second half of its socket id).
    pub(crate) id: u64,
    /// The random first half of its socket id.
    pub(crate) tag: u32,
    tx: mpsc::Sender<Utf8Bytes>,
    dropped: AtomicBool,
    /// Holds a permit once the connection is to be dropped (a full queue); the
    /// connection task waits on it next to its socket.
    pub(crate) kill: Notify,
}

impl Peer {
    pub(crate) fn new(id: u64, tag: u32, tx: mpsc::Sender<Utf8Bytes>) -> Self {
        Peer {
            id,
            tag,
            tx,
            dropped: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    /// Queues a frame; a full queue drops the connection (it is not reading fast enough
    /// and its backlog must not grow). Returns whether the frame was queued.
    pub(crate) fn offer(&self, frame: &Utf8Bytes) -> bool {
        if self.dropped.load(Ordering::Relaxed) {
            return false;
        }
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropped.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        connection = self.id,
                        "send queue full: dropping a slow consumer"
                    );
                    self.kill.notify_one();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

type Subscribers = HashMap<u64, Arc<Peer>>;

/// The channel registry and the connection count.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    channels: RwLock<HashMap<Box<str>, Subscribers>>,
    connections: AtomicUsize,
    /// Notified whenever the count drops to zero (shutdown waits on it).
    pub(crate) idle: Notify,
}

impl Hub {
    /// Counts a new connection unless `max` are open already.
    pub(crate) fn try_connect(&self, max: Option<usize>) -> bool {
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|max| before >= max) {
            self.disconnect();
            return false;
        }
        true
    }

    pub(crate) fn disconnect(&self) {
        if self.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Adds `peer` to `channel`; true if it was not there yet.
    pub(crate) fn subscribe(&self, channel: &str, peer: &Arc<Peer>) -> bool {
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let subscribers = match channels.get_mut(channel) {
            Some(subscribers) => subscribers,
            None => channels.entry(Box::from(channel)).or_default(),
        };
        subscribers.insert(peer.id, Arc::clone(peer)).is_none()
    }

    /// Removes connection `id` from `channel` (and the channel once empty).
    pub(crate) fn unsubscribe(&self, channel: &str, id: u64) {
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(subscribers) = channels.get_mut(channel) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                channels.remove(channel);
            }
        }
    }

    /// Queues `frame` to every subscriber of `channel` except the socket `except`
    /// (`(tag, id)`); returns how many queued it.
    pub(crate) fn publish(
        &self,
        channel: &str,
        frame: &Utf8Bytes,
        except: Option<(u32, u64)>,
    ) -> usize {
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        let Some(subscribers) = channels.get(channel) else {
            return 0;
        };
        subscribers
            .values()
            .filter(|peer| except != Some((peer.tag, peer.id)))
            .filter(|peer| peer.offer(frame))
            .count()
    }

    /// Number of channels with at least one subscriber.
    pub(crate) fn channel_count(&self) -> usize {
        self.channels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
