//! Shared fixtures: two participants with a funded, co-signed channel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{Address, U256};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::{Amount, Channel, ChannelParams, ChannelState, Effect, Message, SignedState};

pub fn keys(byte: u8) -> Keys {
    Keys::from_bytes([byte; 32]).unwrap()
}

pub fn params(a: &Keys, b: &Keys) -> ChannelParams {
    ChannelParams {
        chain_id: 31337,
        adjudicator: Address::repeat_byte(0xAD),
        participants: [a.address(), b.address()],
        asset: Address::ZERO,
        challenge_duration: 3600,
        nonce: U256::from(1),
    }
}

/// A funded pair (A, B) with the given opening balances.
pub fn pair(balances: [u128; 2], limits: Limits) -> (Channel, Channel) {
    let (ka, kb) = (keys(0xA1), keys(0xB2));
    let p = params(&ka, &kb);
    let state = ChannelState::opening(p.id(), [Amount(balances[0]), Amount(balances[1])]);
    let sigs = [
        sign_state(&p, &ka, &state).unwrap(),
        sign_state(&p, &kb, &state).unwrap(),
    ];
    let signed = SignedState { state, sigs };
    (
        Channel::from_cosigned(p.clone(), ka, limits, signed.clone()).unwrap(),
        Channel::from_cosigned(p, kb, limits, signed).unwrap(),
    )
}

pub fn sent(effects: &[Effect]) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

pub fn events(effects: &[Effect]) -> Vec<htlc::Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}
