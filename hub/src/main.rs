//! `hub`: run a vhub hub.
//!
//! ```text
//! hub keygen --out hub.key          # write a fresh private key (hex) and print its address
//! hub serve --config hub.toml       # run the hub until Ctrl-C / SIGTERM
//! ```

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hub::config::{Config, load_key, load_signer};
use hub::engine::{Node, NodeOptions};
use hub::store::Store;
use std::path::PathBuf;

/// A multi-hop virtual-channel routing hub for Ethereum state channels.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the hub: listen for peers over QUIC, keep channels in RocksDB.
    ///
    /// The configuration is a TOML file; see the README for every field and its default.
    Serve {
        /// Path of the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a new random private key as hex and print its Ethereum address.
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::Serve { config } => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(serve(config))
        }
    }
}

fn keygen(out: &PathBuf) -> Result<()> {
    if out.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", out.display());
    }
    let signer = alloy::signers::local::PrivateKeySigner::random();
    let hex = alloy::primitives::hex::encode(signer.credential().to_bytes());
    std::fs::write(out, format!("0x{hex}\n"))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", signer.address());
    Ok(())
}

async fn serve(path: PathBuf) -> Result<()> {
    let config = Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let keys = load_key(&config.key_file)?;
    let chain = match config.adjudicator {
        None => None,
        Some(adjudicator) => Some(connect_chain(&config, adjudicator).await?),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
    let opts = NodeOptions {
        chain_id: config.chain_id,
        adjudicator: config.adjudicator.unwrap_or_default(),
        limits: htlc::ops::Limits {
            max_pending_locks: config.limits.max_pending_htlcs,
            max_ops_per_update: config.limits.max_ops_per_update,
            ..htlc::ops::Limits::default()
        },
        max_frame: config.limits.max_frame_bytes,
        frames_per_second: config.limits.max_frames_per_second,
        max_channels_per_peer: config.limits.max_channels_per_peer,
        collateral: htlc::Amount(config.funding.collateral),
        auto_settle: config.funding.auto_settle,
        chain_poll: std::time::Duration::from_millis(config.funding.chain_poll_ms),
        chain_retry: std::time::Duration::from_secs(config.funding.chain_retry_secs),
        chain,
        ..NodeOptions::default()
    };
    let node = Node::start(keys, store, opts)?;
    let local = node.listen(config.listen)?;
    // One line on stdout that scripts and tests can wait for.
    println!("hub {} listening on {local}", node.address());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    node.shutdown();
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
    Ok(client)
}
