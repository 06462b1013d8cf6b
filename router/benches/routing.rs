//! Route-finding benchmarks on generated scale-free networks of 2,000, 16,000 and 100,000 nodes.
//!
//! Run: `cargo bench -p router --bench routing` (a few minutes on 2 cores). Besides criterion's
//! own figures (mean time per call over a rotating set of queries), the bench measures every
//! query once to print latency percentiles (p50/p90/p99) and the memory used by each graph, as a
//! Markdown table at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use router::{
    Amount, ChannelGraph, ChannelId, GeneratorConfig, MultiPathParams, NodeId, PathFinder,
    RouteQuery, ScoringParams, Side, generate,
};

const SIZES: [usize; 3] = [2_000, 16_000, 100_000];
const SEED: u64 = 42;
const QUERIES: usize = 200;
/// Final expiry delta of every query: one hour.
const FINAL_DELTA: u64 = 3600;

struct Row {
    nodes: usize,
    channels: usize,
    generate: Duration,
    single: Percentiles,
    single_found: usize,
    multi: Percentiles,
    multi_parts: f64,
    update_policy: Duration,
    add_remove: Duration,
    record: Duration,
    est_bytes: usize,
    rss_bytes: Option<usize>,
}

#[derive(Clone, Copy, Default)]
struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

/// Resident set size of this process, from /proc (Linux only; the bench may read files).
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Random payments of 0.0001–0.01 ETH between random nodes (log-uniform amounts).
fn single_queries(nodes: &[NodeId], rng: &mut ChaCha8Rng) -> Vec<RouteQuery> {
    (0..QUERIES)
        .map(|_| {
            let a = nodes[rng.random_range(0..nodes.len())];
            let mut b = nodes[rng.random_range(0..nodes.len())];
            while b == a {
                b = nodes[rng.random_range(0..nodes.len())];
            }
            let amount = 10f64.powf(rng.random_range(14.0..16.0)) as u128;
            RouteQuery::new(a, b, Amount(amount), FINAL_DELTA)
        })
        .collect()
}

/// Payments larger than any single channel of payer and payee: 1.5 times the larger of the
/// payer's and the payee's biggest channel, capped at half of what either end has in total.
/// Only pairs whose payment the router does split (two parts or more) are kept.
fn multi_queries(
    graph: &ChannelGraph,
    nodes: &[NodeId],
    rng: &mut ChaCha8Rng,
    pf: &mut PathFinder,
) -> Vec<RouteQuery> {
    let caps = |n: NodeId| -> (u128, u128) {
        let ids = graph.channels_of(n).unwrap();
        let caps: Vec<u128> = ids
            .iter()
            .map(|id| graph.channel(id).unwrap().capacity.0)
            .collect();
        (
            caps.iter().copied().max().unwrap_or(0),
            caps.iter().sum::<u128>(),
        )
    };
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < QUERIES / 4 && tries < QUERIES * 20 {
        tries += 1;
        let a = nodes[rng.random_range(0..nodes.len())];
        let b = nodes[rng.random_range(0..nodes.len())];
        if a == b {
            continue;
        }
        let (ma, sa) = caps(a);
        let (mb, sb) = caps(b);
        let amount = (ma.max(mb) * 3 / 2).min(sa / 2).min(sb / 2);
        if amount <= ma.max(mb) {
            continue;
        }
        let q = RouteQuery::new(a, b, Amount(amount), FINAL_DELTA);
        if let Ok(mp) = pf.find_multipath(graph, &q, &MultiPathParams::default())
            && mp.parts.len() >= 2
        {
            out.push(q);
        }
    }
    out
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut rows = Vec::new();

    for n in SIZES {
        let rss0 = rss_bytes();
        let t0 = Instant::now();
        let mut graph = generate(&GeneratorConfig::new(n, SEED)).unwrap();
        let gen_time = t0.elapsed();
        let rss1 = rss_bytes();
        let mut nodes: Vec<NodeId> = graph.nodes().collect();
        nodes.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ n as u64);
        let mut pf = PathFinder::new(ScoringParams::default());

        // Single path: every query once, for percentiles.
        let singles = single_queries(&nodes, &mut rng);
        let mut times = Vec::with_capacity(singles.len());
        let mut found = 0;
        for q in &singles {
            let t = Instant::now();
            let r = pf.find_route(&graph, q);
            times.push(t.elapsed());
            found += usize::from(r.is_ok());
        }
        let single = percentiles(times);

        let multis = multi_queries(&graph, &nodes, &mut rng, &mut pf);
        let mut times = Vec::with_capacity(multis.len());
        let mut parts = 0usize;
        for q in &multis {
            let t = Instant::now();
            let r = pf.find_multipath(&graph, q, &MultiPathParams::default());
            times.push(t.elapsed());
            parts += r.map_or(0, |m| m.parts.len());
        }
        let multi = percentiles(times);
        let multi_parts = parts as f64 / multis.len().max(1) as f64;

        let mut group = c.benchmark_group(format!("routing/{n}"));
        let mut i = 0;
        group.bench_function("single_path", |b| {
            b.iter(|| {
                i = (i + 1) % singles.len();
                black_box(pf.find_route(&graph, &singles[i]).ok())
            })
        });
        if !multis.is_empty() {
            let mut i = 0;
            group.bench_function("multi_path", |b| {
                b.iter(|| {
                    i = (i + 1) % multis.len();
                    black_box(
                        pf.find_multipath(&graph, &multis[i], &MultiPathParams::default())
                            .ok(),
                    )
                })
            });
        }

        // Updates: a policy change, an open + close, a learned failure.
        let ids: Vec<ChannelId> = {
            let mut v: Vec<ChannelId> = graph.channels().map(|ch| ch.id).collect();
            v.sort();
            v
        };
        let mut k = 0usize;
        let t = Instant::now();
        let rounds = 10_000;
        for _ in 0..rounds {
            k = (k + 7919) % ids.len();
            let mut p = *graph.channel(&ids[k]).unwrap().policy(Side::A);
            p.fee_ppm = p.fee_ppm.wrapping_add(1) % 5000;
            graph.set_policy(&ids[k], Side::A, p).unwrap();
        }
        let update_policy = t.elapsed() / rounds;
        group.bench_function("update_policy", |b| {
            b.iter(|| {
                k = (k + 7919) % ids.len();
                let mut p = *graph.channel(&ids[k]).unwrap().policy(Side::A);
                p.fee_ppm = p.fee_ppm.wrapping_add(1) % 5000;
                graph.set_policy(&ids[k], Side::A, p).unwrap();
            })
        });
        let t = Instant::now();
        for _ in 0..rounds {
            k = (k + 7919) % ids.len();
            let ch = graph.remove_channel(&ids[k]).unwrap();
            graph.add_channel(ch).unwrap();
        }
        let add_remove = t.elapsed() / rounds;
        group.bench_function("close_and_reopen_channel", |b| {
            b.iter(|| {
                k = (k + 7919) % ids.len();
                let ch = graph.remove_channel(&ids[k]).unwrap();
                graph.add_channel(ch).unwrap();
            })
        });
        let t = Instant::now();
        let mut now = 1_700_000_000u64;
        for _ in 0..rounds {
            k = (k + 7919) % ids.len();
            now += 1;
            let cap = graph.channel(&ids[k]).unwrap().capacity;
            graph
                .record_failure(&ids[k], Side::B, Amount(cap.0 / 2 + 1), now)
                .unwrap();
        }
        let record = t.elapsed() / rounds;
        group.bench_function("record_failure", |b| {
            b.iter(|| {
                k = (k + 7919) % ids.len();
                now += 1;
                let cap = graph.channel(&ids[k]).unwrap().capacity;
                graph
                    .record_failure(&ids[k], Side::B, Amount(cap.0 / 2 + 1), now)
                    .unwrap();
            })
        });
        group.finish();

        rows.push(Row {
            nodes: n,
            channels: graph.channel_count(),
            generate: gen_time,
            single,
            single_found: found,
            multi,
            multi_parts,
            update_policy,
            add_remove,
            record,
            est_bytes: graph.memory_estimate().total_bytes,
            rss_bytes: rss0.zip(rss1).map(|(a, b)| b.saturating_sub(a)),
        });
        drop(graph);
    }

    c.final_summary();
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!();
    println!(
        "| nodes | channels | single path p50 / p90 / p99 | found | multi-path p50 / p90 / p99 | parts (mean) | policy update | close+reopen | record failure | memory (estimate) | bytes/node | bytes/channel | RSS growth | generate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} / {} / {} | {}/{} | {} / {} / {} | {:.1} | {} | {} | {} | {:.1} MiB | {} | {} | {} | {} |",
            r.nodes,
            r.channels,
            ms(r.single.p50),
            ms(r.single.p90),
            ms(r.single.p99),
            r.single_found,
            QUERIES,
            ms(r.multi.p50),
            ms(r.multi.p90),
            ms(r.multi.p99),
            r.multi_parts,
            us(r.update_policy),
            us(r.add_remove),
            us(r.record),
            r.est_bytes as f64 / (1024.0 * 1024.0),
            r.est_bytes / r.nodes.max(1),
            r.est_bytes / r.channels.max(1),
            r.rss_bytes.map_or("n/a".to_string(), |b| format!(
                "{:.1} MiB",
                b as f64 / (1024.0 * 1024.0)
            )),
            ms(r.generate),
        );
    }
}
