//! `hub`: run a vhub hub.
//!
//! ```text
//! hub keygen --out hub.key          # write a fresh private key (hex) and print its address
//! hub serve --config hub.toml       # run a hub (or a peer) until Ctrl-C / SIGTERM
//! hub demo                          # a local network with a chain, streaming payments
//! hub bench                         # payments per second through one hub
//! hub invoice | pay | balance | channels | history | open | close   # client commands
//! ```

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hub::config::{Config, load_key, load_signer};
use hub::node::{Node, NodeOptions};
use hub::store::Store;
use std::path::{Path, PathBuf};

mod cli;
use cli::{client, demo};

/// A multi-hop virtual-channel routing hub for Ethereum state channels.
///
/// Operators run `hub serve`. Peers run `hub serve` too (with a `[[connect]]` entry naming
/// their hub and an `api` address), then drive their node with the client commands, which talk
/// to that node's HTTP API (`--api`, default 127.0.0.1:9736).
///
/// Try it all on one machine: `hub demo` starts a local chain, a hub and four peers and streams
/// payments between them; `hub bench` measures payments per second through one hub.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  hub deploy --rpc http://127.0.0.1:8545 --key hub.key   the contracts, once per chain
  hub keygen --out peer.key                      a key for a new node
  hub serve --config peer.toml                   run it (api = \"127.0.0.1:9736\", [[connect]] its hub)
  hub open --hub 0xHUB --deposit 1000000000000000000
  hub invoice --hub 0xHUB --amount 5000000       prints vhub1...; give it to the payer
  hub pay vhub1...                               waits for the outcome, prints the fee paid
  hub balance; hub channels; hub history
  hub close 0xCHANNEL
  hub demo                                       a whole local network, payments streaming
  hub bench --payers 2,16,128                    payments per second through one hub";

/// How a client command reaches its node's HTTP API.
#[derive(clap::Args, Debug, Clone)]
struct Conn {
    /// Address of the node's HTTP API, for the client commands.
    #[arg(
        long,
        env = "VHUB_API",
        default_value = "127.0.0.1:9736",
        value_parser = parse_api_addr
    )]
    api: std::net::SocketAddr,
    /// File holding the node's API token (written by `hub serve` as <data_dir>/api.token). The
    /// token itself may be given in VHUB_API_TOKEN instead.
    #[arg(
        long,
        env = "VHUB_API_TOKEN_FILE",
        default_value = "hub-data/api.token"
    )]
    api_token_file: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (a hub, or a peer): QUIC for channels, RocksDB for state, optional HTTP API.
    ///
    /// The configuration is a TOML file; see the README for every field and its default.
    Serve {
        /// Path of the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a watchtower: a node that keeps the latest co-signed state its clients hand it for
    /// each of their channels and answers a stale close of one on chain while the client is
    /// offline. Same configuration as `serve` (its `[tower]` section, defaults if absent);
    /// clients list it under `[[watchtower]]`.
    Watchtower {
        /// Path of the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Deploy the contracts (the secret registry, then the adjudicator that reads it) from the
    /// account of `--key`, and print their addresses and the configuration lines that name them.
    Deploy {
        /// The chain's JSON-RPC URL.
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        /// Key file of the account that pays for the deployment (hex, as `hub keygen` writes).
        #[arg(long)]
        key: PathBuf,
    },
    /// Write a new random private key as hex and print its Ethereum address.
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Start a local network (anvil, contracts, one hub, peers with funded channels) and stream
    /// payments between the peers, printing balances, fees and payments per second; on Ctrl-C
    /// (or at --payments / --seconds) close every channel and check the on-chain payouts.
    Demo(DemoArgs),
    /// Run a network of hubs and peers from a topology file on a local chain (anvil, the
    /// contracts, every channel funded), stream payments routed across the hubs printing the
    /// success rate, latency and fees, then close every channel and check each payout on chain.
    Net {
        /// The topology (TOML: shape, hubs, peers_per_hub, payments...; see
        /// `examples/topologies/`).
        #[arg(long)]
        topology: PathBuf,
        /// Override the topology's number of payments.
        #[arg(long)]
        payments: Option<usize>,
    },
    /// Measure A → hub → B payments: throughput and p50/p99 latency for each number of
    /// concurrent payers, durable storage on, real QUIC on loopback (no chain).
    Bench(BenchArgs),
    /// Measure virtual channels over one hub: open and close latency, and payments inside one
    /// per second for each batch size, durable storage on, real QUIC on loopback (no chain).
    BenchVirtual(BenchVirtualArgs),
    /// The idle peers of `hub bench --idle` (internal: started by the bench).
    #[command(hide = true)]
    IdlePeers {
        /// The hub's QUIC address.
        #[arg(long)]
        hub_addr: std::net::SocketAddr,
        /// The hub's address.
        #[arg(long)]
        hub: alloy::primitives::Address,
        /// How many.
        #[arg(long)]
        count: usize,
    },
    /// Show the node: address, channels, payments, fees earned.
    Info {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show what the node has to do on chain and by when: transactions decided and not yet in
    /// effect, disputed channels, claim deadlines, the transaction waiting to be mined.
    Chain {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the node's channels with balances and pending HTLCs.
    Channels {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show what the node can send and receive, and what is locked in flight.
    Balance {
        #[command(flatten)]
        conn: Conn,
    },
    /// List pending HTLC locks.
    Htlcs {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the payments the node sent (with their outcomes) and received.
    History {
        #[command(flatten)]
        conn: Conn,
    },
    /// Make an invoice to be paid through `--hub`; prints the string to hand to the payer.
    Invoice {
        #[command(flatten)]
        conn: Conn,
        /// The hub the node has its channel with.
        #[arg(long)]
        hub: alloy::primitives::Address,
        /// Amount to receive, wei.
        #[arg(long)]
        amount: u128,
        /// Seconds the invoice stays valid.
        #[arg(long, default_value_t = 3600)]
        valid_secs: u64,
    },
    /// Pay an invoice and wait for the outcome (a repeated id never pays twice).
    Pay {
        #[command(flatten)]
        conn: Conn,
        /// The invoice string (vhub1...).
        invoice: String,
        /// Payment id (default: the invoice's hashlock, so an invoice is paid once).
        #[arg(long, value_parser = parse_id)]
        id: Option<alloy::primitives::B256>,
        /// Return at once instead of waiting for the outcome.
        #[arg(long)]
        no_wait: bool,
        /// Routes to try: after a failure at a hub on the way, route again around the hop it
        /// names (1 to 10; with more than one, the command waits for the outcome).
        #[arg(long, default_value_t = 1)]
        attempts: usize,
    },
    /// Connect to another node (a hub, or a hub's peer hub) and keep the session up.
    Connect {
        #[command(flatten)]
        conn: Conn,
        /// Where it listens (QUIC).
        addr: std::net::SocketAddr,
        /// Its address (checked in the handshake).
        #[arg(long)]
        address: alloy::primitives::Address,
    },
    /// Show the network map the node believes: announced channels (checked on chain) and each
    /// direction's fees.
    Gossip {
        #[command(flatten)]
        conn: Conn,
    },
    /// Open a ledger channel with a connected hub and deposit on chain.
    Open {
        #[command(flatten)]
        conn: Conn,
        /// The hub.
        #[arg(long)]
        hub: alloy::primitives::Address,
        /// Our deposit, wei.
        #[arg(long)]
        deposit: u128,
    },
    /// Virtual channels (ADR 0026): open one with another peer of a hub, pay inside it, list,
    /// close.
    #[command(subcommand)]
    Virtual(VirtualCmd),
    /// Close a channel cooperatively; the payout follows on chain.
    Close {
        #[command(flatten)]
        conn: Conn,
        /// The channel id.
        #[arg(value_parser = parse_id)]
        channel: alloy::primitives::B256,
        /// Close on chain with our latest co-signed state, without the peer (when it is gone
        /// or refuses everything); paid out after the challenge window.
        #[arg(long)]
        force: bool,
    },
}

/// `hub virtual ...`.
#[derive(Subcommand, Debug)]
enum VirtualCmd {
    /// Open a virtual channel with `--peer` over `--hub` (both connected through the hub's
    /// ledger channels): our `--deposit` is locked on our ledger with the hub, the hub locks as
    /// much toward the peer. Returns once it carries payments.
    Open {
        #[command(flatten)]
        conn: Conn,
        /// The hub.
        #[arg(long)]
        hub: alloy::primitives::Address,
        /// The other party.
        #[arg(long)]
        peer: alloy::primitives::Address,
        /// Our deposit, wei.
        #[arg(long)]
        deposit: u128,
        /// Its life, seconds.
        #[arg(long, default_value_t = hub::api::DEFAULT_VIRTUAL_SECS)]
        lifetime: u64,
        /// Further hubs after `--hub`, in order toward the peer (a chain of hubs; give each
        /// one's fees first with `hub virtual policy`).
        #[arg(long, value_delimiter = ',')]
        then: Vec<alloy::primitives::Address>,
    },
    /// Record a further hub's opening fees for virtual channels, as it announces them (to open
    /// over it with `--then`; the first hub's come with its channel).
    Policy {
        #[command(flatten)]
        conn: Conn,
        /// The hub.
        #[arg(long)]
        hub: alloy::primitives::Address,
        /// Its flat opening fee, wei.
        #[arg(long)]
        open_fee_base: u128,
        /// Its proportional opening fee, millionths of the value.
        #[arg(long)]
        open_fee_ppm: u32,
    },
    /// Pay the other party of a virtual channel (one update signed by the two of you; the hub
    /// only passes it on).
    Pay {
        #[command(flatten)]
        conn: Conn,
        /// The virtual channel.
        #[arg(value_parser = parse_id)]
        channel: alloy::primitives::B256,
        /// Amount, wei.
        #[arg(long)]
        amount: u128,
    },
    /// List the virtual channels we take part in.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Close a virtual channel: its final state releases the guarantees on its ledgers.
    Close {
        #[command(flatten)]
        conn: Conn,
        /// The virtual channel.
        #[arg(value_parser = parse_id)]
        channel: alloy::primitives::B256,
    },
}

impl Command {
    /// The API connection of a client command (`None` for the others).
    fn conn(&self) -> Option<&Conn> {
        match self {
            Command::Info { conn }
            | Command::Chain { conn }
            | Command::Channels { conn }
            | Command::Balance { conn }
            | Command::Htlcs { conn }
            | Command::History { conn }
            | Command::Invoice { conn, .. }
            | Command::Pay { conn, .. }
            | Command::Connect { conn, .. }
            | Command::Gossip { conn }
            | Command::Open { conn, .. }
            | Command::Close { conn, .. }
            | Command::Virtual(
                VirtualCmd::Open { conn, .. }
                | VirtualCmd::Policy { conn, .. }
                | VirtualCmd::Pay { conn, .. }
                | VirtualCmd::List { conn }
                | VirtualCmd::Close { conn, .. },
            ) => Some(conn),
            _ => None,
        }
    }
}

/// Options of `hub bench`.
#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Numbers of concurrent payers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,16,128")]
    payers: Vec<usize>,
    /// Payments each payer keeps in flight, comma-separated (each value is a run).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    in_flight: Vec<usize>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Amount of each payment, wei.
    #[arg(long, default_value_t = 1_000_000)]
    amount: u128,
    /// Strangers flooding the hub with frames it must refuse during each run (issue 12):
    /// compare the honest payers' latency with and without.
    #[arg(long, default_value_t = 0)]
    flood: usize,
    /// Idle peers connected to the hub during each run, each with a channel (run in a
    /// process of their own; the hub's added memory is reported).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Run the hub on threads of its own and report their CPU per payment (the extra
    /// thread switches lower the throughput somewhat).
    #[arg(long)]
    hub_cpu: bool,
}

/// Options of `hub bench-virtual`.
#[derive(clap::Args, Debug)]
struct BenchVirtualArgs {
    /// Virtual channels opened and closed one after the other (latency samples).
    #[arg(long, default_value_t = 100)]
    opens: usize,
    /// Transfers A issues together per round, comma-separated (each value is a run).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    batch: Vec<usize>,
    /// Seconds measured per run of payments.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

/// Options of `hub demo`.
#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Peers (at most 8: the local chain's funded accounts).
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Each peer's deposit and the hub's collateral per channel, wei (default 10 ETH).
    #[arg(long, default_value_t = 10_000_000_000_000_000_000)]
    deposit: u128,
    /// Largest payment, wei (amounts are drawn uniformly up to it; default 0.01 ETH).
    #[arg(long, default_value_t = 10_000_000_000_000_000)]
    max_amount: u128,
    /// Stop after this many payments (default: run until Ctrl-C).
    #[arg(long)]
    payments: Option<u64>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Where the hub's HTTP API and /metrics listen while the demo runs.
    #[arg(long, default_value = "127.0.0.1:0")]
    hub_api: std::net::SocketAddr,
}

/// `hub net`: run a topology file.
async fn net(path: &Path, payments: Option<usize>) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the topology {}", path.display()))?;
    let mut t =
        hub::network::Topology::parse(&text).with_context(|| format!("in {}", path.display()))?;
    if let Some(p) = payments {
        t.payments = p;
    }
    let dir = std::env::temp_dir().join(format!("vhub-net-{}", std::process::id()));
    let opts = hub::network::NetOptions {
        hub_exe: std::env::current_exe().context("finding the hub binary")?,
        verbose: true,
        log: std::env::var("VHUB_NET_LOG").unwrap_or_else(|_| "warn".into()),
    };
    let r = match hub::network::run(&t, dir.clone(), &opts).await {
        Ok(r) => {
            let _ = std::fs::remove_dir_all(&dir);
            r
        }
        Err(e) => {
            // Kept for the post-mortem: every node's configuration, database and log.
            eprintln!(
                "the nodes' configurations, databases and logs: {}",
                dir.display()
            );
            return Err(e.into());
        }
    };
    if r.succeeded == 0 && r.payments > 0 {
        anyhow::bail!("no payment succeeded");
    }
    Ok(())
}

/// The API address as an operator writes it: `127.0.0.1:9736`, `localhost:9736`,
/// `http://localhost:9736/` or `[::1]:9736`.
fn parse_api_addr(s: &str) -> std::result::Result<std::net::SocketAddr, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .unwrap_or(t);
    let t = t.trim_end_matches('/');
    let t = match t.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => t.to_string(),
    };
    t.parse().map_err(|_| {
        format!("{s:?} is not an address: write HOST:PORT, e.g. 127.0.0.1:9736 or localhost:9736")
    })
}

/// A 32-byte id (payment or channel): 64 hex digits, `0x` optional.
fn parse_id(s: &str) -> std::result::Result<alloy::primitives::B256, String> {
    let hex = s.trim().trim_start_matches("0x");
    if hex.len() != 64 {
        return Err(format!(
            "an id is 32 bytes: 64 hex digits (0x optional); {s:?} has {} digits",
            hex.len()
        ));
    }
    hex.parse()
        .map_err(|_| format!("an id is 64 hex digits (0-9, a-f); {s:?} is not hex"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: what failed and why, each cause once (no backtrace for an operator).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    if std::env::args().nth(1).is_some_and(|c| c == "serve") {
                        "info"
                    } else {
                        "warn"
                    },
                )
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::Deploy { rpc, key } => rt.block_on(deploy(&rpc, &key)),
        Command::Serve { config } => rt.block_on(serve(config, false)),
        Command::Watchtower { config } => rt.block_on(serve(config, true)),
        Command::Demo(args) => rt.block_on(demo::run(args)),
        Command::Net { topology, payments } => rt.block_on(net(&topology, payments)),
        Command::Bench(args) => rt.block_on(demo::bench(args)),
        Command::BenchVirtual(args) => rt.block_on(demo::bench_virtual(args)),
        Command::IdlePeers {
            hub_addr,
            hub,
            count,
        } => rt.block_on(async {
            let held = hub::localnet::idle_peers(hub_addr, hub, count)
                .await
                .context("idle peers")?;
            // The line `hub bench` waits for; then the peers stay until it kills us.
            println!("ready {}", held.1.len());
            std::future::pending::<()>().await;
            drop(held);
            Ok(())
        }),
        cmd => {
            let Some(conn) = cmd.conn().cloned() else {
                anyhow::bail!("not a client command");
            };
            let token = client::read_token(&conn.api_token_file)?;
            rt.block_on(client::run(conn.api, &token, cmd))
        }
    }
}

/// The API token of the node whose data is in `data_dir`: read from `api.token`, or created
/// there on first start (random, readable and writable by the owner only).
fn api_token(data_dir: &std::path::Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("api.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty; delete it to make a new token", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = hub::node::new_api_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

async fn deploy(rpc: &str, key: &std::path::Path) -> Result<()> {
    let url = rpc
        .parse()
        .with_context(|| format!("--rpc {rpc:?} is not a URL"))?;
    let signer = load_signer(key)?;
    let provider = contracts::http_provider(url, signer);
    let chain_id = alloy::providers::Provider::get_chain_id(&provider)
        .await
        .with_context(|| format!("no chain answers at {rpc}"))?;
    let d = contracts::deploy::deploy(&provider)
        .await
        .context("deploying the contracts")?;
    println!("registry    {}", d.registry);
    println!("adjudicator {}", d.adjudicator);
    println!();
    println!("# for the configuration of every node on this chain:");
    println!("chain_rpc = \"{rpc}\"");
    println!("chain_id = {chain_id}");
    println!("adjudicator = \"{}\"", d.adjudicator);
    Ok(())
}

fn keygen(out: &PathBuf) -> Result<()> {
    if out.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", out.display());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let signer = alloy::signers::local::PrivateKeySigner::random();
    let hex = alloy::primitives::hex::encode(signer.credential().to_bytes());
    // Readable by the owner only, like the API token.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    writeln!(f, "0x{hex}").with_context(|| format!("writing {}", out.display()))?;
    f.sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", signer.address());
    Ok(())
}

async fn serve(path: PathBuf, tower: bool) -> Result<()> {
    let mut config = Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    if tower && config.tower.is_none() {
        config.tower = Some(hub::config::TowerConfig::default());
    }
    let keys = load_key(&config.key_file)?;
    let chain = match config.adjudicator {
        None => None,
        Some(adjudicator) => Some(connect_chain(&config, adjudicator).await?),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
    let api_token = api_token(&config.data_dir)?;
    let opts = NodeOptions {
        api_token,
        chain_id: config.chain_id,
        adjudicator: config.adjudicator.unwrap_or_default(),
        limits: config.limits.channel_limits(),
        assets: config.assets.clone(),
        min_peer_deposit: htlc::Amount(config.funding.min_peer_deposit),
        max_connections: config.limits.max_connections,
        handshakes_per_second: config.limits.max_handshakes_per_second,
        stranger_frames_per_second: config.limits.stranger_frames_per_second,
        max_frame: config.limits.max_frame_bytes,
        frames_per_second: config.limits.max_frames_per_second,
        max_channels_per_peer: config.limits.max_channels_per_peer,
        collateral: htlc::Amount(config.funding.collateral),
        auto_settle: config.funding.auto_settle,
        chain_poll: std::time::Duration::from_millis(config.funding.chain_poll_ms),
        chain_retry: std::time::Duration::from_secs(config.funding.chain_retry_secs),
        close_grace: std::time::Duration::from_secs(config.funding.close_grace_secs),
        virtual_end_margin: std::time::Duration::from_secs(config.funding.virtual_end_margin_secs),
        challenge_duration: config.funding.challenge_secs,
        chain,
        policy: config.forward_policy(),
        tower: config.tower.as_ref().map(|t| t.max_watched),
        towers: config.watchtower.iter().map(|t| t.address).collect(),
        withdraw_to: config.funding.withdraw_to,
        virtual_policy: config.virtual_channels.as_ref().map(|v| v.policy()),
        announce: config.announce,
        ..NodeOptions::default()
    };
    let node = Node::start(keys, store, opts)?;
    let local = node.listen(config.listen)?;
    let api = match config.api {
        Some(api) => Some(node.serve_api(api).await?),
        None => None,
    };
    for c in config.connect.iter().chain(&config.watchtower) {
        node.keep_connected(c.addr, c.address, std::time::Duration::from_secs(2));
    }
    // The first line on stdout is the one scripts and tests wait for; the API's address (its
    // port may be chosen by the OS: `api = "127.0.0.1:0"`) follows on the second.
    println!("node {} listening on {local}", node.address());
    if let Some(bound) = api {
        println!("api on http://{bound}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    node.stop().await;
    Ok(())
}

/// Connect to the chain and the adjudicator the configuration names, and check that they are
/// what it says (a wrong RPC URL or chain id is a clear error, not a hub on the wrong chain).
async fn connect_chain(
    config: &Config,
    adjudicator: alloy::primitives::Address,
) -> Result<contracts::ChainClient> {
    let url = config
        .chain_rpc
        .parse()
        .with_context(|| format!("chain_rpc {:?} is not a URL", config.chain_rpc))?;
    let signer = load_signer(&config.key_file)?;
    let client = contracts::ChainClient::connect_adjudicator(url, signer, adjudicator)
        .await
        .with_context(|| {
            format!(
                "no adjudicator answers at {adjudicator} on {} (check chain_rpc and adjudicator)",
                config.chain_rpc
            )
        })?;
    if client.chain_id() != config.chain_id {
        anyhow::bail!(
            "chain_rpc {} is chain {}, but the configuration says chain_id = {}",
            config.chain_rpc,
            client.chain_id(),
            config.chain_id
        );
    }
    client.set_poll_interval(std::time::Duration::from_millis(
        config.funding.chain_poll_ms.min(250),
    ));
    // Crash tests abort the process right after a transaction is handed to the node.
    let client = client.with_on_sent(std::sync::Arc::new(|| hub::failpoint::point("tx_sent")));
    client.set_confirmations(config.funding.confirmations);
    client.set_tx_policy(contracts::TxPolicy {
        timeout: std::time::Duration::from_secs(config.funding.tx_timeout_secs),
        max_fee_per_gas: u128::from(config.funding.max_fee_gwei) * 1_000_000_000,
        ..contracts::TxPolicy::default()
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses_as_operators_write_them() {
        let want: std::net::SocketAddr = "127.0.0.1:9736".parse().unwrap();
        for s in [
            "127.0.0.1:9736",
            "localhost:9736",
            "http://localhost:9736",
            "http://127.0.0.1:9736/",
            " localhost:9736 ",
        ] {
            assert_eq!(parse_api_addr(s), Ok(want), "{s}");
        }
        assert_eq!(
            parse_api_addr("[::1]:9736"),
            Ok("[::1]:9736".parse().unwrap())
        );
        let e = parse_api_addr("9736").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn ids_say_the_length_expected() {
        let id = format!("0x{}", "ab".repeat(32));
        assert!(parse_id(&id).is_ok());
        assert!(parse_id(&"ab".repeat(32)).is_ok());
        let e = parse_id("0x1234").unwrap_err();
        assert!(e.contains("64 hex digits") && e.contains("has 4"), "{e}");
        let e = parse_id(&"zz".repeat(32)).unwrap_err();
        assert!(e.contains("not hex"), "{e}");
    }

    #[test]
    fn key_files_are_for_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vhub-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let _ = std::fs::remove_file(&path);
        keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert!(hub::config::load_key(&path).is_ok());
        // Never overwritten.
        assert!(keygen(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
