//! A slow consumer is dropped when its queue fills; a reading neighbour is not.

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::support::*;

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_memory_does_not_grow() {
    let mut s = settings();
    s.send_buffer = 16;
    let (gateway, addr) = serve(s).await;
    let (mut stalled, _) = connect(addr).await;
    subscribe(&mut stalled, "firehose", None).await;
    let (mut reader, _) = connect(addr).await;
    subscribe(&mut reader, "firehose", None).await;
    let received = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(Ok(message)) = reader.next().await {
            if message.is_text() {
                n += 1;
            }
        }
        n
    });
    assert_eq!(gateway.connections(), 2);

    let data = serde_json::Value::from("x".repeat(8 * 1024)).to_string();
    let mut published: u32 = 0;
    // Loopback socket buffers hold a few MB; after them, the 16-frame queue.
    while gateway.connections() == 2 {
        assert!(published < 20_000, "the stalled client was never dropped");
        gateway.publish("firehose", "big", &data);
        published += 1;
        if published.is_multiple_of(16) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(gateway.connections(), 1);
    // Still delivering to the reader.
    assert_eq!(gateway.publish("firehose", "big", &data), 1);
    drop(stalled);
    gateway.shutdown().await;
    let n = received.await.unwrap();
    assert!(n > 0, "the reading client received {n} events");
}
