//! Serving a gateway and talking to it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use order_pusher::{Gateway, PusherSettings};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) const APP_ID: &str = "orders";
pub(crate) const KEY: &str = "278d425bdf160c739803";
pub(crate) const SECRET: &str = "7ad3773142a6692b25b8";
pub(crate) const QUERY: &str = "protocol=7&client=js&version=8.6.0&flash=false";

pub(crate) fn settings() -> PusherSettings {
    PusherSettings::new(APP_ID, KEY, SECRET)
}

/// A gateway served on a free port.
pub(crate) async fn serve(settings: PusherSettings) -> (Gateway, SocketAddr) {
    let gateway = Gateway::new(settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = gateway.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (gateway, addr)
}

pub(crate) async fn connect_to(addr: SocketAddr, path_and_query: &str) -> Client {
    let url = format!("ws://{addr}{path_and_query}");
    let (client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    client
}

/// Connects with pusher-js's query and reads the handshake; returns the socket id.
pub(crate) async fn connect(addr: SocketAddr) -> (Client, String) {
    let mut client = connect_to(addr, &format!("/app/{KEY}?{QUERY}")).await;
    let established = next_json(&mut client).await;
    assert_eq!(established["event"], "pusher:connection_established");
    let data = inner(&established);
    let socket_id = data["socket_id"].as_str().unwrap().to_owned();
    (client, socket_id)
}

/// The next text frame as JSON (pings and pongs of the WebSocket layer skipped).
pub(crate) async fn next_json(client: &mut Client) -> Value {
    loop {
        match next(client).await {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub(crate) async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("no frame within 5 s")
        .expect("the stream ended")
        .expect("a WebSocket error")
}

/// The frame's `data`, which must be a JSON string holding JSON, parsed.
pub(crate) fn inner(frame: &Value) -> Value {
    let data = frame["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data is not a string: {frame}"));
    serde_json::from_str(data).unwrap()
}

/// Reads until a close frame and returns its code (text frames before it are returned
/// too, in order).
pub(crate) async fn until_close(client: &mut Client) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("no close within 5 s");
        match message {
            Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (frames, frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, None),
        }
    }
}

pub(crate) async fn send(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.unwrap();
}

pub(crate) async fn subscribe(client: &mut Client, channel: &str, auth: Option<&str>) -> Value {
    let mut data = serde_json::json!({ "channel": channel });
    if let Some(auth) = auth {
        data["auth"] = Value::from(auth);
    }
    let frame = serde_json::json!({ "event": "pusher:subscribe", "data": data });
    send(client, &frame.to_string()).await;
    next_json(client).await
}

/// Subscribes to a private channel with a correct signature and checks the success.
pub(crate) async fn subscribe_private(
    client: &mut Client,
    gateway: &Gateway,
    socket_id: &str,
    channel: &str,
) {
    let auth = gateway.sign_channel(socket_id, channel).unwrap();
    let reply = subscribe(client, channel, Some(&auth)).await;
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
}

/// Waits until `condition` holds, polling (at most 5 s).
pub(crate) async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One HTTP/1.1 request on a fresh connection; `(status, body)`.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A correctly signed trigger request for `body`.
pub(crate) async fn trigger(addr: SocketAddr, body: &str) -> (u16, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query = order_pusher::trigger_query(APP_ID, KEY, SECRET, body.as_bytes(), now);
    http(
        addr,
        "POST",
        &format!("/apps/{APP_ID}/events?{query}"),
        body.as_bytes(),
    )
    .await
}
