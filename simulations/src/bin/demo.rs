//! `demo`: payer → hub → payee HTLC payments through the real protocol machines, in process.
//!
//! Every payment is two HTLCs, each added and settled by co-signed EIP-712 states; the hub runs
//! its forwarding decision (fees, expiry delta, liquidity) between them. Payments go in waves so
//! many ride in one signed update.

use anyhow::Result;
use clap::Parser;
use htlc::Amount;
use htlc::forward::ForwardPolicy;
use simulations::relay::Relay;
use std::time::Instant;

/// Run payments from a payer through a hub to a payee and print what happens.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Number of payments.
    #[arg(long, default_value_t = 2_000)]
    payments: u64,
    /// Payments per wave (they share signed updates).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    wave: u64,
    /// Amount of each payment, in wei.
    #[arg(long, default_value_t = 1_000_000)]
    amount: u128,
    /// Hub's flat fee per payment, in wei.
    #[arg(long, default_value_t = 1_000)]
    base_fee: u128,
    /// Hub's proportional fee, in millionths.
    #[arg(long, default_value_t = 100)]
    fee_ppm: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let policy = ForwardPolicy {
        base_fee: Amount(args.base_fee),
        fee_ppm: args.fee_ppm,
        ..ForwardPolicy::default()
    };
    let funds = 10u128.pow(24);
    let mut relay = Relay::new(funds, funds, policy)?;
    println!(
        "payer → hub → payee, {} payments of {} wei, fee {} + {} ppm",
        args.payments, args.amount, args.base_fee, args.fee_ppm
    );
    println!(
        "{:>8} {:>26} {:>26} {:>14} {:>10}",
        "paid", "payer balance", "payee balance", "hub fees", "updates"
    );
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < args.payments {
        let n = args.wave.min(args.payments - sent);
        for i in 0..n {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&(sent + i).to_le_bytes());
            relay.pay(Amount(args.amount), secret)?;
        }
        relay.run()?;
        sent += n;
        if sent.is_multiple_of(args.wave.saturating_mul(10)) || sent == args.payments {
            let [payer, hub_up, hub_down, payee] = relay.balances();
            let fees = hub_up.0 + hub_down.0 - funds;
            println!(
                "{:>8} {:>26} {:>26} {:>14} {:>10}",
                relay.tally.succeeded, payer, payee, fees, relay.tally.updates
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "\n{} succeeded, {} failed, {} co-signed updates in {:.2} s: {:.0} payments/s in process ({:.2} updates per payment)",
        relay.tally.succeeded,
        relay.tally.failed,
        relay.tally.updates,
        secs,
        relay.tally.succeeded as f64 / secs,
        relay.tally.updates as f64 / relay.tally.succeeded.max(1) as f64,
    );
    Ok(())
}
