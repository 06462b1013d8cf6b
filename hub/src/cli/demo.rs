//! `hub demo` (a local network on a real chain with a stream of payments) and `hub bench`.

use super::client::eth;
use crate::{BenchArgs, BenchVirtualArgs, DemoArgs};
use anyhow::{Context, Result, bail};
use htlc::Amount;
use hub::api::Wei;
use hub::localnet::{LocalNet, LocalNetOptions, PayOutcome};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn scratch(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vhub-{tag}-{}", std::process::id()))
}

/// Run the demo.
pub async fn run(a: DemoArgs) -> Result<()> {
    if a.max_amount == 0 || a.max_amount > a.deposit {
        bail!("--max-amount must be positive and at most --deposit");
    }
    let policy = htlc::forward::ForwardPolicy {
        base_fee: Amount(1_000_000_000), // 1 gwei
        fee_ppm: 1_000,                  // 0.1 %
        ..htlc::forward::ForwardPolicy::default()
    };
    println!(
        "starting a local network: anvil with the contracts, one hub, {} peers (deposit {} each, hub collateral {} each)",
        a.peers,
        eth(Wei(a.deposit)),
        eth(Wei(a.deposit))
    );
    let bar =
        ProgressBar::new_spinner().with_message("deploying, opening and funding channels on chain");
    bar.enable_steady_tick(Duration::from_millis(100));
    let net = LocalNet::start(LocalNetOptions {
        peers: a.peers,
        deposit: Amount(a.deposit),
        chain: true,
        policy,
        dir: scratch("demo"),
        api: Some(a.hub_api),
        connections: None,
        hub_runtime: None,
        virtual_policy: None,
    })
    .await
    .context("starting the local network")?;
    bar.finish_and_clear();
    let net = Arc::new(net);
    if let Some(d) = &net.devnet {
        println!(
            "chain     {} (chain id {}), adjudicator {}",
            d.endpoint(),
            d.chain_id(),
            d.deployment().adjudicator
        );
    }
    println!(
        "hub       {} on {} (fee 1 gwei + 1000 ppm)",
        net.hub.address(),
        net.hub_addr
    );
    if let Some(api) = net.api {
        println!("hub API   http://{api}/channels   metrics http://{api}/metrics");
    }
    for (i, p) in net.peers.iter().enumerate() {
        println!("peer {i}    {}  channel {}", p.address(), net.channels[i]);
    }
    let total0 = net.total_held().await;
    println!(
        "\nstreaming payments between random peers (Ctrl-C to stop, then channels close on chain)\n"
    );
    println!(
        "{:>6} {:>9} {:>7} {:>8}  {:>22}  peers' spendable balances",
        "secs", "paid", "failed", "pay/s", "hub fees earned"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let paid = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..net.peers.len() {
        let (net, stop, paid, failed) = (net.clone(), stop.clone(), paid.clone(), failed.clone());
        let max = a.max_amount;
        let limit = a.payments;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = net.peers.len();
                let to = (i + 1 + rand::random_range(0..n - 1)) % n;
                let amount = Amount(rand::random_range(1_000_000_000..=max.max(1_000_000_000)));
                match net.pay(i, to, amount).await {
                    Ok(PayOutcome::Paid { .. }) => {
                        let done = paid.fetch_add(1, Ordering::Relaxed) + 1;
                        if limit.is_some_and(|l| done >= l) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(PayOutcome::Failed(reason)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(?reason, "payment failed");
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "payment error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => { stop.store(true, Ordering::Relaxed); }
        }
        if a.seconds
            .is_some_and(|s| started.elapsed() >= Duration::from_secs(s))
        {
            stop.store(true, Ordering::Relaxed);
        }
        let p = paid.load(Ordering::Relaxed);
        let rate = (p - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), p);
        let (balances, fees) = net.snapshot().await?;
        let b: Vec<String> = balances
            .iter()
            .map(|w| format!("{:.4}", w.0 as f64 / 1e18))
            .collect();
        println!(
            "{:>6.0} {:>9} {:>7} {:>8.0}  {:>22}  {}",
            started.elapsed().as_secs_f64(),
            p,
            failed.load(Ordering::Relaxed),
            rate,
            eth(fees),
            b.join(" ")
        );
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    for t in tasks {
        t.await.context("a payer task failed")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let p = paid.load(Ordering::Relaxed);
    let (_, fees) = net.snapshot().await?;
    let total1 = net.total_held().await;
    println!(
        "\n{p} payments in {secs:.1} s ({:.0}/s), {} failed; hub earned {}; money in channels {} (conservation: {})",
        p as f64 / secs,
        failed.load(Ordering::Relaxed),
        eth(fees),
        eth(Wei(total1)),
        if total0 == total1 { "held" } else { "BROKEN" },
    );
    close_all(&net).await?;
    if total0 != total1 {
        bail!("the channels hold {total1} wei, they held {total0}");
    }
    Ok(())
}

/// Close every channel cooperatively and check each on-chain payout against the final state.
async fn close_all(net: &LocalNet) -> Result<()> {
    let Some(devnet) = &net.devnet else {
        return Ok(());
    };
    println!("\nclosing every channel cooperatively on chain");
    let bar = ProgressBar::new(net.peers.len() as u64);
    if let Ok(s) = ProgressStyle::with_template("{bar:30} {pos}/{len} channels paid out") {
        bar.set_style(s);
    }
    for (peer, id) in net.peers.iter().zip(&net.channels) {
        // In-flight payments have ended (every payer waited for its outcome); locks are gone.
        peer.close(*id).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = vec![false; net.peers.len()];
    while done.iter().any(|d| !d) {
        for (i, (peer, id)) in net.peers.iter().zip(&net.channels).enumerate() {
            if !done[i] && peer.is_concluded(*id).await == Some(true) {
                done[i] = true;
                bar.inc(1);
            }
        }
        if Instant::now() > deadline {
            bail!("channels were not paid out within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    let client = devnet.client(0).await?;
    for (i, (peer, id)) in net.peers.iter().zip(&net.channels).enumerate() {
        let st = peer.channel(*id).await.context("channel")?.state;
        let held = client.holdings(*id).await?;
        println!(
            "peer {i}: final state pays the peer {} and the hub {}; still held on chain: {}",
            eth(Wei(st.balances[0].0)),
            eth(Wei(st.balances[1].0)),
            held.0
        );
        if !held.is_zero() {
            bail!("channel {id} still holds {} wei after its payout", held.0);
        }
    }
    println!("every channel paid out on chain as its final co-signed state says");
    Ok(())
}

/// Run the benchmark and print its table.
pub async fn bench(a: BenchArgs) -> Result<()> {
    let BenchArgs {
        payers,
        in_flight,
        seconds,
        warmup,
        amount,
        flood,
        idle,
        hub_cpu,
    } = a;
    if payers.iter().any(|p| *p < 2) {
        bail!("--payers: each run needs at least 2 payers");
    }
    if in_flight.iter().any(|k| *k == 0 || *k > 1_000) {
        bail!("--in-flight: 1 to 1000 payments in flight per payer");
    }
    println!(
        "A → hub → B payments, durable RocksDB (synced group commits), QUIC on loopback, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if idle > 0 {
        println!(
            "with {idle} idle peers connected to the hub, each with a channel (in a process of their own)"
        );
    }
    if flood > 0 {
        println!(
            "with {flood} strangers flooding the hub with frames it must refuse (a fresh key per connection)"
        );
    }
    println!(
        "{:>7} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>12} {:>10} {:>14} {:>14} {:>12} {:>13} {:>11} {:>12} {:>8} {:>12} {:>12} {:>10}",
        "payers",
        "in flight",
        "paid",
        "failed",
        "pay/s",
        "p50 ms",
        "p99 ms",
        "updates/pay",
        "fsyncs/pay",
        "all fsyncs/pay",
        "batches/fsync",
        "writer busy",
        "machine busy",
        "CPU µs/pay",
        "hub µs/pay",
        "cores",
        "flood frames",
        "store +keys",
        "RSS MiB"
    );
    for n in payers {
        for &k in &in_flight {
            let bar = ProgressBar::new_spinner().with_message(format!(
                "{n} payers × {k} in flight: {warmup} s warm-up + {seconds} s"
            ));
            bar.enable_steady_tick(Duration::from_millis(200));
            let r = hub::localnet::bench(hub::localnet::BenchOptions {
                payers: n,
                in_flight: k,
                duration: Duration::from_secs(seconds),
                warmup: Duration::from_secs(warmup),
                amount: Amount(amount),
                dir: scratch(&format!("bench-{n}-{k}")),
                flood,
                idle,
                idle_exe: Some(std::env::current_exe().context("finding the hub binary")?),
                hub_cpu,
            })
            .await?;
            bar.finish_and_clear();
            if r.idle > 0 {
                println!(
                    "  {} idle peers added {:.0} MiB to the hub's resident memory ({:.1} KiB each)",
                    r.idle,
                    r.idle_rss_kib as f64 / 1024.0,
                    r.idle_rss_kib as f64 / r.idle as f64
                );
            }
            println!(
                "{:>7} {:>9} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>12.2} {:>10.2} {:>14.2} {:>14.1} {:>11.0}% {:>12.0}% {:>11.0} {:>12.0} {:>8.2} {:>12} {:>12} {:>10.0}",
                r.payers,
                r.in_flight,
                r.paid,
                r.failed,
                r.per_sec(),
                r.p50_ms,
                r.p99_ms,
                r.updates_per_payment,
                r.syncs_per_payment,
                r.all_syncs_per_payment,
                r.batches_per_sync,
                r.writer_busy * 100.0,
                r.machine_busy * 100.0,
                r.cpu_us_per_payment,
                r.hub_cpu_us_per_payment,
                r.cpu_share,
                r.flood_frames,
                r.store_growth,
                r.rss_kib as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// `hub bench-virtual`: open/close latency and payments inside a virtual channel.
pub async fn bench_virtual(a: BenchVirtualArgs) -> Result<()> {
    println!(
        "virtual channel A ⇄ B over one hub (and A ⇄ C over two), durable RocksDB (synced group commits), QUIC on loopback, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let bar = ProgressBar::new_spinner().with_message(format!(
        "{} opens and closes, then {} s per batch size",
        a.opens, a.seconds
    ));
    bar.enable_steady_tick(Duration::from_millis(200));
    let r = hub::virtual_bench::bench_virtual(hub::virtual_bench::VirtualBenchOptions {
        opens: a.opens,
        batches: a.batch,
        duration: Duration::from_secs(a.seconds),
        dir: scratch("bench-virtual"),
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "open  (until A may pay: 4 message delays)      p50 {:>7.2} ms  p99 {:>7.2} ms  ({} samples)",
        r.open_ms[0], r.open_ms[1], r.opens
    );
    println!(
        "close (until both legs are released)            p50 {:>7.2} ms  p99 {:>7.2} ms",
        r.close_ms[0], r.close_ms[1]
    );
    println!(
        "open over two hubs (6 message delays)            p50 {:>7.2} ms  p99 {:>7.2} ms",
        r.open2_ms[0], r.open2_ms[1]
    );
    println!(
        "close over two hubs (all three legs released)    p50 {:>7.2} ms  p99 {:>7.2} ms",
        r.close2_ms[0], r.close2_ms[1]
    );
    println!(
        "{:>7} {:>9} {:>10} {:>9} {:>9} {:>12}",
        "batch", "paid", "pay/s", "p50 ms", "p99 ms", "updates/pay"
    );
    for row in &r.rows {
        println!(
            "{:>7} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>12.3}",
            row.batch, row.paid, row.per_sec, row.p50_ms, row.p99_ms, row.updates_per_payment
        );
    }
    Ok(())
}
