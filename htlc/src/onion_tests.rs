use super::*;
use proptest::prelude::*;

fn key(i: u8) -> SecretKey {
    // 1..=255 are valid non-zero scalars.
    let mut b = [0u8; 32];
    b[31] = i.max(1);
    b[0] = 7;
    SecretKey::from_byte_array(b).unwrap()
}

fn pubkey(k: &SecretKey) -> PublicKey {
    PublicKey::from_secret_key(SECP256K1, k)
}

fn forward(i: u8) -> HopPayload {
    HopPayload::Forward {
        next: Address::repeat_byte(i),
        amount: Amount(1_000_000 + u128::from(i)),
        expiry: Expiry(1_700_000_000 + u64::from(i)),
    }
}

fn fin() -> HopPayload {
    HopPayload::Final {
        amount: Amount(u128::MAX),
        expiry: Expiry(u64::MAX),
        total: Amount(u128::MAX),
    }
}

/// A route of `n` hops: `n - 1` forwards then the payee, with node keys 10, 11, ...
fn route(n: usize) -> (Vec<SecretKey>, Vec<Hop>) {
    let keys: Vec<SecretKey> = (0..n).map(|i| key(10 + i as u8)).collect();
    let hops = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Hop {
            node: pubkey(k),
            payload: if i + 1 == n { fin() } else { forward(i as u8) },
        })
        .collect();
    (keys, hops)
}

const HL: B256 = B256::repeat_byte(0x42);

/// Every hop of every route length peels exactly its own instruction, in order, and the packet
/// keeps its size all the way.
#[test]
fn each_hop_reads_its_own_instruction() {
    for n in 1..=MAX_HOPS {
        let (keys, hops) = route(n);
        let (mut packet, secrets) = build(&key(1), &hops, HL).unwrap();
        let mut seen = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(packet.as_sphinx().unwrap().routing.len(), ROUTING_LEN);
            // Every hop gets an ephemeral key of its own (the payer chose each one).
            assert!(
                seen.insert(packet.as_sphinx().unwrap().ephemeral.clone()),
                "route {n}, hop {i}"
            );
            let peeled = peel(&packet, k, HL).unwrap();
            assert_eq!(peeled.payload, hops[i].payload, "route {n}, hop {i}");
            assert_eq!(peeled.secret, secrets[i]);
            match peeled.next {
                Some(next) => packet = next,
                None => assert_eq!(i + 1, n, "only the payee's layer is the last"),
            }
        }
    }
}

#[test]
fn a_route_longer_than_the_packet_or_empty_is_refused() {
    let (_, hops) = route(MAX_HOPS + 1);
    assert_eq!(
        build(&key(1), &hops, HL).unwrap_err(),
        OnionError::RouteLength(MAX_HOPS + 1)
    );
    assert_eq!(
        build(&key(1), &[], HL).unwrap_err(),
        OnionError::RouteLength(0)
    );
}

/// The packet is for one node: another key, another hashlock or any flipped bit fails the MAC.
#[test]
fn wrong_node_wrong_hashlock_or_tampering_fails_the_mac() {
    let (keys, hops) = route(3);
    let (packet, _) = build(&key(1), &hops, HL).unwrap();
    assert_eq!(peel(&packet, &keys[1], HL), Err(OnionError::BadMac));
    assert_eq!(
        peel(&packet, &keys[0], B256::repeat_byte(1)),
        Err(OnionError::BadMac)
    );
    for at in [0, PAYLOAD_LEN, ROUTING_LEN / 2, ROUTING_LEN - 1] {
        let mut bad = packet.clone();
        bad.as_sphinx_mut().unwrap().routing[at] ^= 1;
        assert_eq!(
            peel(&bad, &keys[0], HL),
            Err(OnionError::BadMac),
            "bit at {at}"
        );
    }
    let mut bad = packet.clone();
    bad.as_sphinx_mut().unwrap().mac.0[3] ^= 1;
    assert_eq!(peel(&bad, &keys[0], HL), Err(OnionError::BadMac));
    // A change made for the next hop by this hop is caught by the next hop.
    let mut next = peel(&packet, &keys[0], HL).unwrap().next.unwrap();
    next.as_sphinx_mut().unwrap().routing[17] ^= 0x80;
    assert_eq!(peel(&next, &keys[1], HL), Err(OnionError::BadMac));
}

#[test]
fn malformed_packets_are_refused_with_a_typed_error() {
    let (keys, hops) = route(2);
    let (packet, _) = build(&key(1), &hops, HL).unwrap();
    let mut short = packet.clone();
    short.as_sphinx_mut().unwrap().routing.pop();
    assert_eq!(peel(&short, &keys[0], HL), Err(OnionError::Malformed));
    // Version 0 (each node blinded the next key) and unknown versions are refused.
    for v in [0, 2, 255] {
        let mut version = packet.clone();
        version.as_sphinx_mut().unwrap().version = v;
        assert_eq!(peel(&version, &keys[0], HL), Err(OnionError::Malformed));
    }
    let mut eph = packet.clone();
    eph.as_sphinx_mut().unwrap().ephemeral = vec![2; 33];
    assert!(matches!(
        peel(&eph, &keys[0], HL),
        Err(OnionError::Malformed | OnionError::BadMac)
    ));
    eph.as_sphinx_mut().unwrap().ephemeral = vec![];
    assert_eq!(peel(&eph, &keys[0], HL), Err(OnionError::Malformed));
}

/// The payer's layers must be consistent: a forward as the last layer, or a payee's layer
/// followed by more, is refused rather than guessed at.
#[test]
fn a_final_layer_with_more_behind_it_or_a_forward_at_the_end_is_refused() {
    let (keys, mut hops) = route(2);
    hops[0].payload = fin();
    let (packet, _) = build(&key(1), &hops, HL).unwrap();
    assert_eq!(peel(&packet, &keys[0], HL), Err(OnionError::BadPayload));
    let (keys, mut hops) = route(1);
    hops[0].payload = forward(3);
    let (packet, _) = build(&key(1), &hops, HL).unwrap();
    assert_eq!(peel(&packet, &keys[0], HL), Err(OnionError::BadPayload));
}

/// A failure created at hop `k` and wrapped by every hop before it names hop `k` and its reason.
#[test]
fn a_failure_names_the_failing_hop() {
    let (_, hops) = route(5);
    let (_, secrets) = build(&key(1), &hops, HL).unwrap();
    for k in 0..5 {
        let mut pkt = fail(secrets[k], FailureReason::FeeInsufficient);
        for s in secrets[..k].iter().rev() {
            pkt = wrap(*s, pkt);
        }
        assert_eq!(
            decode_error(&secrets, &pkt),
            Some((k, FailureReason::FeeInsufficient))
        );
    }
    // The secrets recomputed from the keys alone read it too (a restarted payer).
    let nodes: Vec<PublicKey> = hops.iter().map(|h| h.node).collect();
    assert_eq!(route_secrets(&key(1), &nodes).unwrap(), secrets);
}

/// A node in between cannot make a failure look like it came from further down: without the
/// downstream hop's secret, whatever it sends decodes as its own failure or as nothing.
#[test]
fn a_node_cannot_blame_a_hop_behind_it() {
    let (_, hops) = route(4);
    let (_, secrets) = build(&key(1), &hops, HL).unwrap();
    // Hop 1 forges with a secret it invents, and with its own; then hop 0 wraps.
    let forged = wrap(
        secrets[0],
        wrap(secrets[1], ErrorPacket(vec![0x55; ERROR_LEN])),
    );
    assert_eq!(decode_error(&secrets, &forged), None);
    let own = wrap(secrets[0], fail(secrets[1], FailureReason::UnknownNextPeer));
    assert_eq!(
        decode_error(&secrets, &own),
        Some((1, FailureReason::UnknownNextPeer))
    );
    // A garbled packet from hop 3, wrapped by 2, 1, 0, names nobody.
    let mut pkt = fail(secrets[3], FailureReason::TemporaryChannelFailure);
    pkt.0[40] ^= 1;
    for s in secrets[..3].iter().rev() {
        pkt = wrap(*s, pkt);
    }
    assert_eq!(decode_error(&secrets, &pkt), None);
    // A packet of the wrong size is padded on the way, never a panic.
    let odd = wrap(secrets[0], ErrorPacket(vec![1, 2, 3]));
    assert_eq!(odd.0.len(), ERROR_LEN);
    assert_eq!(decode_error(&secrets, &ErrorPacket(vec![0; 5])), None);
}

/// The session key depends on the payment id (two payments never share ephemeral keys).
#[test]
fn session_keys_differ_per_payment() {
    let own = [9u8; 32];
    let a = session_key(&own, B256::repeat_byte(1)).unwrap();
    let b = session_key(&own, B256::repeat_byte(2)).unwrap();
    assert_ne!(a, b);
    assert_eq!(a, session_key(&own, B256::repeat_byte(1)).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any payload values survive the trip, and a byte flipped anywhere in the packet the
    /// first hop receives is caught there (never a different instruction).
    #[test]
    fn any_route_round_trips_and_any_flip_is_caught(
        n in 1usize..=MAX_HOPS,
        amounts in proptest::collection::vec(any::<u128>(), MAX_HOPS),
        expiries in proptest::collection::vec(any::<u64>(), MAX_HOPS),
        flip in 0usize..ROUTING_LEN,
        session in 1u8..=255,
    ) {
        let keys: Vec<SecretKey> = (0..n).map(|i| key(100 + i as u8)).collect();
        let hops: Vec<Hop> = (0..n).map(|i| Hop {
            node: pubkey(&keys[i]),
            payload: if i + 1 == n {
                HopPayload::Final { amount: Amount(amounts[i]), expiry: Expiry(expiries[i]), total: Amount(amounts[0]) }
            } else {
                HopPayload::Forward { next: Address::repeat_byte(i as u8), amount: Amount(amounts[i]), expiry: Expiry(expiries[i]) }
            },
        }).collect();
        let (packet, _) = build(&key(session), &hops, HL).unwrap();
        let mut bad = packet.clone();
        bad.as_sphinx_mut().unwrap().routing[flip] ^= 0x01;
        prop_assert_eq!(peel(&bad, &keys[0], HL), Err(OnionError::BadMac));
        let mut p = packet;
        for (i, k) in keys.iter().enumerate() {
            let peeled = peel(&p, k, HL).unwrap();
            prop_assert_eq!(peeled.payload, hops[i].payload);
            if let Some(next) = peeled.next { p = next; }
        }
    }
}

/// ADR 0029: a plain route reads hop by hop, in order, each with its own failure secret (the
/// ones the payer keeps); empty or oversized routes, a payee's hop with more after it, a
/// forward with nothing after it, and a part of a multi-path payment are refused.
#[test]
fn a_plain_route_reads_in_order_and_refuses_what_an_onion_would_not_carry() {
    use crate::onion::{Packet, PlainHop, plain};
    for n in 1..=MAX_HOPS {
        let (keys, hops) = route(n);
        let (mut packet, secrets) = plain(&key(1), &hops).unwrap();
        assert_eq!(
            secrets
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            n,
            "a secret per hop"
        );
        for (i, k) in keys.iter().enumerate() {
            let peeled = peel(&packet, k, HL).unwrap();
            assert_eq!(peeled.payload, hops[i].payload);
            assert_eq!(peeled.secret, secrets[i]);
            match peeled.next {
                Some(next) => packet = next,
                None => assert_eq!(i + 1, n),
            }
        }
    }
    assert_eq!(plain(&key(1), &[]).unwrap_err(), OnionError::RouteLength(0));
    let (_, long) = route(MAX_HOPS + 1);
    assert_eq!(
        plain(&key(1), &long).unwrap_err(),
        OnionError::RouteLength(MAX_HOPS + 1)
    );
    let (keys, hops) = route(2);
    let (packet, _) = plain(&key(1), &hops).unwrap();
    let Packet::Plain(h) = packet else {
        panic!("plain")
    };
    let hop = |payload| PlainHop {
        payload,
        secret: B256::ZERO,
    };
    let bad = [
        Packet::Plain(vec![]),
        Packet::Plain(vec![h[0]; MAX_HOPS + 1]),
        Packet::Plain(vec![h[1], h[1]]),
        Packet::Plain(vec![h[0]]),
        Packet::Plain(vec![hop(HopPayload::Final {
            amount: Amount(5),
            expiry: Expiry(9),
            total: Amount(10),
        })]),
    ];
    let want = [
        OnionError::Malformed,
        OnionError::Malformed,
        OnionError::BadPayload,
        OnionError::BadPayload,
        OnionError::BadPayload,
    ];
    for (p, w) in bad.iter().zip(want) {
        assert_eq!(peel(p, &keys[0], HL).unwrap_err(), w, "{p:?}");
    }
}
