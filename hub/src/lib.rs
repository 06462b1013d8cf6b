//! # hub — the vhub service
//!
//! Will hold the QUIC transport (quinn), the wire protocol, peer sessions, the channel and
//! forwarding engine that drives the `htlc` machines, RocksDB storage, the chain watcher, the
//! operator API, the `hub` binary and the client library (issues 5 and 6). Today it holds
//! nothing but this description.
//!
//! It must never sign a state before persisting it, never forward an HTLC that is not
//! committed, and never implement a protocol rule itself: those live in `htlc`.
