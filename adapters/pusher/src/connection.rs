//! One WebSocket: the handshake frame, the client's messages, the queued events, the
//! idle ping and the close. One task per socket, no per-connection allocation after
//! the handshake beyond its subscriptions.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::auth::{is_valid_channel_name, verify_channel_auth};
use crate::gateway::Inner;
use crate::hub::Peer;
use crate::protocol::{self, Incoming, codes};

/// Most channels one socket may subscribe to: bounds a connection's memory.
const MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// How long a close handshake (our close frame, the client's reply) may take before
/// the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why the connection loop stopped.
enum End {
    /// The client closed, or the socket failed: nothing more to say.
    Gone,
    /// The send queue overflowed: the socket is dropped without a close frame, which a
    /// client that does not read would not see anyway.
    Overflow,
    /// Close with this code, after a `pusher:error` with the same code if `error`.
    Close {
        code: u16,
        message: &'static str,
        error: bool,
    },
}

/// Serves an upgraded socket whose handshake was refused: `pusher:error`, then close,
/// both with `code`.
pub(crate) async fn refuse(mut socket: WebSocket, code: u16, message: &'static str) {
    if socket
        .send(Message::Text(protocol::error(code, message)))
        .await
        .is_ok()
    {
        close(&mut socket, code, message).await;
    }
}

/// Serves an accepted socket until it ends.
pub(crate) async fn run(socket: WebSocket, inner: Arc<Inner>) {
    if !inner.hub.try_connect(inner.settings.max_connections) {
        tracing::debug!("refusing a connection: over capacity");
        return refuse(socket, codes::OVER_CAPACITY, "Over capacity").await;
    }
    let id = inner.next_connection_id();
    // Socket ids are `random.sequence`: the sequence makes them unique in this process,
    // the random half makes them unguessable and (almost surely) unique across instances.
    let tag = u32::try_from(RandomState::new().hash_one(id) % 1_000_000_000).unwrap_or(0);
    let socket_id = format!("{tag}.{id}");
    let span = tracing::debug_span!("pusher_connection", socket_id = %socket_id);
    let (tx, rx) = mpsc::channel(inner.settings.send_buffer);
    let peer = Arc::new(Peer::new(id, tag, tx));
    let shutdown = inner.shutdown_receiver();
    let mut connection = Connection {
        socket,
        inner,
        peer,
        rx,
        shutdown,
        socket_id: socket_id.into_boxed_str(),
        channels: Vec::new(),
        last_seen: Instant::now(),
    };
    async move {
        tracing::debug!("connected");
        let end = connection.serve().await;
        match end {
            End::Gone => tracing::debug!("disconnected"),
            End::Overflow => tracing::debug!("dropped: send queue full"),
            End::Close {
                code,
                message,
                error,
            } => {
                tracing::debug!(code, message, "closing");
                let sent = !error
                    || connection
                        .socket
                        .send(Message::Text(protocol::error(code, message)))
                        .await
                        .is_ok();
                if sent {
                    close(&mut connection.socket, code, message).await;
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// Sends a close frame and waits (bounded) for the client's reply, so the client reads
/// the frame before the TCP connection goes.
async fn close(socket: &mut WebSocket, code: u16, message: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(message),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if socket.send(frame).await.is_ok() {
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
}

struct Connection {
    socket: WebSocket,
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    rx: mpsc::Receiver<Utf8Bytes>,
    shutdown: watch::Receiver<bool>,
    socket_id: Box<str>,
    channels: Vec<Box<str>>,
    last_seen: Instant,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for channel in &self.channels {
            self.inner.hub.unsubscribe(channel, self.peer.id);
        }
        self.inner.hub.disconnect();
    }
}

impl Connection {
    async fn serve(&mut self) -> End {
        if *self.shutdown.borrow_and_update() {
            return shutting_down();
        }
        let established = protocol::connection_established(
            &self.socket_id,
            self.inner.settings.announced_activity_timeout_secs(),
        );
        if let Err(end) = self.send(established).await {
            return end;
        }
        let activity_timeout = self.inner.settings.activity_timeout;
        let pong_timeout = self.inner.settings.pong_timeout;
        // One timer per connection, re-armed only when it fires: receiving a message
        // just moves `last_seen`, and the timer re-reads it when it wakes.
        let timer = tokio::time::sleep(activity_timeout);
        tokio::pin!(timer);
        let mut pinged_at: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = self.peer.kill.notified() => return End::Overflow,
                _ = self.shutdown.changed() => return shutting_down(),
                message = self.socket.recv() => {
                    let result = match message {
                        None => return End::Gone,
                        Some(Err(error)) => return on_socket_error(&error),
                        Some(Ok(message)) => {
                            self.last_seen = Instant::now();
                            self.on_message(message).await
                        }
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
                frame = self.rx.recv() => {
                    // The peer (held by `self`) keeps a sender alive: `None` cannot come.
                    let Some(frame) = frame else { return End::Gone };
                    if let Err(end) = self.send(frame).await {
                        return end;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    match pinged_at {
                        Some(at) if self.last_seen <= at => {
                            return End::Close {
                                code: codes::PONG_TIMEOUT,
                                message: "Pong reply not received in time",
                                error: true,
                            };
                        }
                        Some(_) => {
                            pinged_at = None;
                            timer.as_mut().reset(self.last_seen + activity_timeout);
                        }
                        None if now >= self.last_seen + activity_timeout => {
                            if let Err(end) = self.send(Utf8Bytes::from_static(protocol::PING)).await {
                                return end;
                            }
                            pinged_at = Some(now);
                            timer.as_mut().reset(now + pong_timeout);
                        }
                        None => timer.as_mut().reset(self.last_seen + activity_timeout),
                    }
                }
            }
        }
    }

    /// Sends one frame; gives up if the connection is dropped or the gateway shuts down
    /// meanwhile (a client that stopped reading would block the send for ever).
    async fn send(&mut self, frame: Utf8Bytes) -> Result<(), End> {
        tokio::select! {
            biased;
            result = self.socket.send(Message::Text(frame)) => result.map_err(|_| End::Gone),
            () = self.peer.kill.notified() => Err(End::Overflow),
            _ = self.shutdown.changed() => Err(shutting_down()),
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        let text = match message {
            Message::Text(text) => text,
            // The WebSocket layer answers pings itself; a close is answered too and
            // the next read ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
            Message::Binary(_) => {
                return self
                    .error(codes::INVALID_MESSAGE, "Invalid message format")
                    .await;
            }
        };
        if text.len() > self.inner.settings.max_message_bytes {
            return Err(too_large());
        }
        let Ok(incoming) = serde_json::from_str::<Incoming>(&text) else {
            return self
                .error(codes::INVALID_MESSAGE, "Invalid message format")
                .await;
        };
        match incoming.event.as_str() {
            "pusher:ping" => self.send(Utf8Bytes::from_static(protocol::PONG)).await,
            "pusher:pong" => Ok(()),
            "pusher:subscribe" => match incoming.channel_data() {
                Some(data) => self.subscribe(data.channel, data.auth).await,
                None => {
                    self.error(codes::INVALID_MESSAGE, "Invalid message format")
                        .await
                }
            },
            "pusher:unsubscribe" => match incoming.channel_data() {
                Some(data) => {
                    self.unsubscribe(&data.channel);
                    Ok(())
                }
                None => {
                    self.error(codes::INVALID_MESSAGE, "Invalid message format")
                        .await
                }
            },
            event if event.starts_with("client-") => {
                self.error(
                    codes::CLIENT_EVENTS_DISABLED,
                    "The app does not have client messaging enabled.",
                )
                .await
            }
            event if event.starts_with("pusher:") => {
                self.error(codes::INVALID_MESSAGE, "Invalid message format")
                    .await
            }
            // Reverb ignores any other event a client sends.
            _ => Ok(()),
        }
    }

    async fn subscribe(&mut self, channel: String, auth: Option<String>) -> Result<(), End> {
        if !is_valid_channel_name(&channel) {
            self.error(codes::INVALID_MESSAGE, "Invalid channel name")
                .await?;
            let frame = protocol::subscription_error(
                &channel,
                "InvalidChannel",
                "Invalid channel name",
                400,
            );
            return self.send(frame).await;
        }
        if channel.starts_with("presence-") || channel.starts_with("private-encrypted-") {
            let frame = protocol::subscription_error(
                &channel,
                "UnsupportedChannel",
                "Presence and encrypted channels are not supported by this server",
                501,
            );
            return self.send(frame).await;
        }
        if channel.starts_with("private-") {
            let settings = &self.inner.settings;
            let verified = auth.as_deref().is_some_and(|auth| {
                verify_channel_auth(
                    &settings.key,
                    settings.secret.expose(),
                    &self.socket_id,
                    &channel,
                    auth,
                )
                .is_ok()
            });
            if !verified {
                tracing::debug!(channel, "subscription refused: invalid signature");
                self.error(codes::UNAUTHORIZED, "Connection is unauthorized")
                    .await?;
                let frame = protocol::subscription_error(
                    &channel,
                    "AuthError",
                    "Invalid signature for the channel",
                    403,
                );
                return self.send(frame).await;
            }
        }
        let known = self.channels.iter().any(|c| **c == *channel);
        if !known {
            if self.channels.len() >= MAX_CHANNELS_PER_CONNECTION {
                let frame = protocol::subscription_error(
                    &channel,
                    "LimitReached",
                    "Too many channels on one connection",
                    429,
                );
                return self.send(frame).await;
            }
            self.inner.hub.subscribe(&channel, &self.peer);
            self.channels.push(channel.clone().into_boxed_str());
        }
        // Subscribing again is answered again, as Reverb does.
        self.send(protocol::subscription_succeeded(&channel)).await
    }

    fn unsubscribe(&mut self, channel: &str) {
        if let Some(index) = self.channels.iter().position(|c| **c == *channel) {
            self.channels.swap_remove(index);
            self.inner.hub.unsubscribe(channel, self.peer.id);
        }
    }

    /// A `pusher:error` that leaves the socket open.
    async fn error(&mut self, code: u16, message: &str) -> Result<(), End> {
        self.send(protocol::error(code, message)).await
    }
}

fn shutting_down() -> End {
    End::Close {
        code: codes::SHUTTING_DOWN,
        message: "Server shutting down",
        error: false,
    }
}

fn too_large() -> End {
    End::Close {
        code: codes::MESSAGE_TOO_LARGE,
        message: "Message too large",
        error: true,
    }
}

fn on_socket_error(error: &axum::Error) -> End {
    let too_long = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if too_long {
        too_large()
    } else {
        tracing::debug!(%error, "socket error");
        End::Gone
    }
}
