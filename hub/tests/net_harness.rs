//! The network harness (`hub net`, issue 16): the example topologies parse and have the shape
//! they say, bad ones are refused with a clear error, and a ring of hubs runs end to end on
//! anvil with every node a real `hub serve` process (every payment routed across hubs
//! succeeds, every channel is paid out on chain exactly as its final state says).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hub::network::{NetOptions, Shape, Topology, Workload, run};

mod common;
use common::TempDir;

fn example(name: &str) -> Topology {
    let path = format!(
        "{}/../examples/topologies/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn options() -> NetOptions {
    NetOptions {
        hub_exe: env!("CARGO_BIN_EXE_hub").into(),
        verbose: false,
        log: std::env::var("VHUB_TEST_HUB_LOG").unwrap_or_else(|_| "warn".into()),
    }
}

#[test]
fn the_example_topologies_have_the_shapes_they_say() {
    let line = example("line3");
    assert_eq!(line.edges().unwrap(), [(0, 1), (1, 2)]);
    let ring = example("ring4");
    assert_eq!(ring.edges().unwrap(), [(0, 1), (1, 2), (2, 3), (3, 0)]);
    let star = example("star5");
    assert_eq!(star.edges().unwrap(), [(0, 1), (0, 2), (0, 3), (0, 4)]);
    let random = example("random6");
    assert_eq!(random.shape, Shape::Random);
    let e = random.edges().unwrap();
    assert_eq!(e.len(), 5 + 2, "a spanning tree plus two");
    // Connected: every hub reaches hub 0.
    let mut seen = [false; 6];
    seen[0] = true;
    for _ in 0..6 {
        for &(a, b) in &e {
            if seen[a] || seen[b] {
                seen[a] = true;
                seen[b] = true;
            }
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(random.edges().unwrap(), e, "seeded: the same every time");
    for n in 1..=3 {
        let across = example(&format!("across{n}"));
        assert_eq!((across.hubs, across.workload), (n, Workload::Across));
        assert_eq!(across.edges().unwrap().len(), n - 1);
    }
}

#[test]
fn bad_topologies_are_refused_with_a_clear_error() {
    for (toml, needle) in [
        ("shape = \"line\"\nhubs = 0\n", "1 to 200 hubs"),
        (
            "shape = \"edges\"\nhubs = 2\nedges = [[0, 5]]\n",
            "not there",
        ),
        (
            "shape = \"edges\"\nhubs = 2\nedges = [[1, 1]]\n",
            "not there",
        ),
        (
            "shape = \"line\"\nhubs = 1\npeers_per_hub = 1\n",
            "two peers",
        ),
        ("shape = \"line\"\nhubs = 2\nmax_amount = \"5\"\n", "1 gwei"),
        ("shape = \"hexagon\"\nhubs = 2\n", "unknown variant"),
        (
            "shape = \"line\"\nhubs = 1\npeers_per_hub = 1\nworkload = \"across\"\n",
            "two peers",
        ),
        (
            "shape = \"line\"\nhubs = 2\nworkload = \"sideways\"\n",
            "unknown variant",
        ),
        ("shape = \"line\"\nhubs = 2\ncolour = 1\n", "unknown field"),
    ] {
        let err = Topology::parse(toml).unwrap_err().to_string();
        assert!(err.contains(needle), "{toml:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_hubs_runs_end_to_end_and_every_payout_is_exact() {
    let mut t = example("ring4");
    t.payments = 12;
    let dir = TempDir::new("net-harness");
    let r = run(&t, dir.0.join("net"), &options()).await.unwrap();
    assert_eq!(r.succeeded, 12, "{r:?}");
    assert!(r.fees > 0);
    assert_eq!(
        r.channels_paid_out,
        4 + 4,
        "four ring channels and four clients"
    );
    assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms);
}
