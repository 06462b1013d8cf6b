//! Fuzz the frame decoder: any bytes must give a frame or a typed error, never a panic, and a
//! decoded frame must re-encode to bytes that decode to the same frame.
#![no_main]

use hub::wire::{DEFAULT_MAX_FRAME, decode, decode_payload, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_payload(data) {
        let bytes = encode(&frame).expect("a decoded frame encodes");
        assert_eq!(decode(&bytes, usize::MAX).expect("round trip"), frame);
    }
    let _ = decode(data, DEFAULT_MAX_FRAME);
});
