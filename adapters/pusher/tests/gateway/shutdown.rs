//! `Gateway::shutdown`: every socket closed with 4200, new ones refused.

use crate::support::*;

#[tokio::test]
async fn shutdown_closes_every_socket_with_4200_and_refuses_new_ones() {
    let (gateway, addr) = serve(settings()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let (mut client, _) = connect(addr).await;
        subscribe(&mut client, "news", None).await;
        clients.push(client);
    }
    let closing = gateway.clone();
    let done = tokio::spawn(async move { closing.shutdown().await });
    for client in &mut clients {
        let (_, code) = until_close(client).await;
        assert_eq!(code, Some(4200));
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gateway.connections(), 0);
    assert_eq!(gateway.channels(), 0);
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/app/{KEY}?{QUERY}")).await;
    assert!(refused.is_err(), "a connection was accepted after shutdown");
}
