//! Real QUIC on loopback: the authenticated handshake and its refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use htlc::sig::Keys;
use hub::auth::{self, Role};
use hub::transport::{self, TransportError};
use hub::wire::{self, Body, DEFAULT_MAX_FRAME, ErrorCode, Frame};
use std::net::SocketAddr;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server that authenticates one connection at a time and reports each outcome.
fn spawn_server(
    keys: Keys,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<alloy::primitives::Address, String>>,
) {
    let ep = transport::server(loopback()).unwrap();
    let addr = ep.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let (keys, tx) = (keys.clone(), tx.clone());
            tokio::spawn(async move {
                match transport::accept(inc, &keys, DEFAULT_MAX_FRAME).await {
                    Ok(mut s) => {
                        tx.send(Ok(s.peer)).ok();
                        // Echo one frame so the client sees the session works.
                        if let Ok(Some(f)) = wire::read_frame(&mut s.recv, DEFAULT_MAX_FRAME).await
                        {
                            wire::write_frame(&mut s.send, &f).await.ok();
                        }
                        s.send.finish().ok();
                        s.conn.closed().await;
                    }
                    Err(e) => {
                        tx.send(Err(e.to_string())).ok();
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Open a raw connection and stream, without authenticating.
async fn raw(
    addr: SocketAddr,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let ep = transport::client(loopback()).unwrap();
    let conn = ep.connect(addr, "vhub").unwrap().await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    (ep, conn, send, recv)
}

#[tokio::test]
async fn both_sides_prove_their_keys() {
    let (hub_keys, peer_keys) = (
        Keys::from_bytes([1; 32]).unwrap(),
        Keys::from_bytes([2; 32]).unwrap(),
    );
    let (addr, mut outcomes) = spawn_server(hub_keys.clone());
    let ep = transport::client(loopback()).unwrap();
    let mut s = transport::connect(
        &ep,
        addr,
        &peer_keys,
        Some(hub_keys.address()),
        DEFAULT_MAX_FRAME,
    )
    .await
    .unwrap();
    assert_eq!(s.peer, hub_keys.address());
    assert_eq!(outcomes.recv().await.unwrap().unwrap(), peer_keys.address());
    let ping = Frame::Msg {
        seq: 1,
        body: Body::Ping,
    };
    wire::write_frame(&mut s.send, &ping).await.unwrap();
    assert_eq!(
        wire::read_frame(&mut s.recv, DEFAULT_MAX_FRAME)
            .await
            .unwrap(),
        Some(ping)
    );
}

#[tokio::test]
async fn dialling_the_wrong_hub_is_refused() {
    let (hub_keys, peer_keys) = (
        Keys::from_bytes([1; 32]).unwrap(),
        Keys::from_bytes([2; 32]).unwrap(),
    );
    let (addr, _outcomes) = spawn_server(hub_keys);
    let ep = transport::client(loopback()).unwrap();
    let someone_else = Keys::from_bytes([3; 32]).unwrap().address();
    let r = transport::connect(&ep, addr, &peer_keys, Some(someone_else), DEFAULT_MAX_FRAME).await;
    assert!(matches!(
        r,
        Err(TransportError::Auth(auth::AuthError::UnexpectedPeer { .. }))
    ));
}

async fn expect_refused(mut recv: quinn::RecvStream) {
    match wire::read_frame(&mut recv, DEFAULT_MAX_FRAME).await {
        Ok(Some(Frame::Error { code, .. })) => assert_eq!(code, ErrorCode::Unauthenticated),
        other => panic!("expected an Unauthenticated error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_that_cannot_prove_its_key_is_refused() {
    let hub_keys = Keys::from_bytes([1; 32]).unwrap();
    let (addr, mut outcomes) = spawn_server(hub_keys);
    let (_ep, conn, mut send, recv) = raw(addr).await;
    // Claims the address of key 2 but signs with key 3.
    let victim = Keys::from_bytes([2; 32]).unwrap();
    let forger = Keys::from_bytes([3; 32]).unwrap();
    let ex = auth::exporter(&conn).unwrap();
    let f = Frame::Auth {
        address: victim.address(),
        sig: auth::prove(&forger, &ex, Role::Client),
    };
    wire::write_frame(&mut send, &f).await.unwrap();
    expect_refused(recv).await;
    assert!(outcomes.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn a_replayed_proof_is_refused() {
    let hub_keys = Keys::from_bytes([1; 32]).unwrap();
    let peer = Keys::from_bytes([2; 32]).unwrap();
    let (addr, mut outcomes) = spawn_server(hub_keys);
    // A genuine session; an eavesdropper records the peer's proof frame.
    let (_ep1, conn1, mut send1, _recv1) = raw(addr).await;
    let captured = Frame::Auth {
        address: peer.address(),
        sig: auth::prove(&peer, &auth::exporter(&conn1).unwrap(), Role::Client),
    };
    wire::write_frame(&mut send1, &captured).await.unwrap();
    assert_eq!(outcomes.recv().await.unwrap().unwrap(), peer.address());
    // The eavesdropper replays it on its own connection.
    let (_ep2, _conn2, mut send2, recv2) = raw(addr).await;
    wire::write_frame(&mut send2, &captured).await.unwrap();
    expect_refused(recv2).await;
    assert!(outcomes.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn nothing_is_accepted_before_the_proof() {
    let hub_keys = Keys::from_bytes([1; 32]).unwrap();
    let (addr, mut outcomes) = spawn_server(hub_keys);
    let (_ep, _conn, mut send, recv) = raw(addr).await;
    wire::write_frame(
        &mut send,
        &Frame::Msg {
            seq: 1,
            body: Body::Ping,
        },
    )
    .await
    .unwrap();
    expect_refused(recv).await;
    assert!(outcomes.recv().await.unwrap().is_err());
}
