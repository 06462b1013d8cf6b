//! Client commands: each is one request to a running node's HTTP API (see `hub::api`).

use crate::{Command, VirtualCmd};
use anyhow::{Context, Result, bail};
use hub::api::{
    Balance, ChainInfo, ChannelInfo, GossipInfo, HtlcInfo, NodeInfo, PaymentInfo, ReceivedInfo,
    VirtualInfo, Wei,
};
use hub::api_client::ApiClient;
use indicatif::{ProgressBar, ProgressStyle};
use std::net::SocketAddr;
use std::time::Duration;

/// The API token: `VHUB_API_TOKEN`, else the first line of `file`.
pub fn read_token(file: &std::path::Path) -> Result<String> {
    if let Ok(t) = std::env::var("VHUB_API_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read the API token at {} (`hub serve` writes it to <data_dir>/api.token; \
             pass --api-token-file or set VHUB_API_TOKEN)",
            file.display()
        )
    })?;
    Ok(text.trim().to_string())
}

/// Ether with six decimals, for people.
pub fn eth(w: Wei) -> String {
    let whole = w.0 / 1_000_000_000_000_000_000;
    let frac = (w.0 % 1_000_000_000_000_000_000) / 1_000_000_000_000;
    format!("{whole}.{frac:06} ETH")
}

/// Run one client command against the node at `addr`.
pub async fn run(addr: SocketAddr, token: &str, cmd: Command) -> Result<()> {
    let api = ApiClient::new(addr, token, Duration::from_secs(120))?;
    match cmd {
        Command::Info { .. } => {
            let i: NodeInfo = api.get("/info").await?;
            println!("address      {}", i.address);
            println!("channels     {}", i.channels);
            println!("payments     {}", i.payments);
            println!("forwards     {}", i.forwards);
            println!(
                "fees earned  {} ({} wei)",
                eth(i.fees_earned),
                i.fees_earned.0
            );
        }
        Command::Chain { .. } => {
            let c: ChainInfo = api.get("/chain").await?;
            println!("confirmations  {}", c.confirmations);
            if c.watched > 0 {
                println!("watching       {} channels for clients", c.watched);
            }
            match &c.in_flight {
                Some(t) => println!(
                    "in flight      nonce {}, up to {} gwei per gas",
                    t.nonce,
                    t.max_fee.0 / 1_000_000_000
                ),
                None => println!("in flight      nothing"),
            }
            if c.intents.is_empty() {
                println!("nothing to send on chain");
            }
            for i in &c.intents {
                let channel = i.channel.map_or_else(|| "-".to_string(), |c| c.to_string());
                match i.not_before {
                    Some(t) => println!("to send        {:<17} {channel}  not before {t}", i.kind),
                    None => println!("to send        {:<17} {channel}", i.kind),
                }
            }
            for id in &c.disputed {
                println!("disputed       {id}");
            }
            for d in &c.claim_deadlines {
                println!(
                    "claim          lock {} of {}  on chain at {} unless settled",
                    d.lock, d.channel, d.at
                );
            }
        }
        Command::Channels { .. } => {
            let cs: Vec<ChannelInfo> = api.get("/channels").await?;
            if cs.is_empty() {
                println!("no channels (open one with `hub open --hub 0x... --deposit WEI`)");
            }
            for c in cs {
                println!(
                    "{}  {:<8}  peer {}  v{}  ours {}  theirs {}  htlcs {}",
                    c.id,
                    c.status.as_str(),
                    c.peer,
                    c.version,
                    eth(c.ours),
                    eth(c.theirs),
                    c.htlcs.len(),
                );
            }
        }
        Command::Balance { .. } => {
            let b: Balance = api.get("/balance").await?;
            println!("spendable          {}", eth(b.spendable));
            println!("receivable         {}", eth(b.receivable));
            println!("offered in flight  {}", eth(b.offered_in_flight));
            println!("received in flight {}", eth(b.received_in_flight));
            println!("open channels      {}", b.channels);
        }
        Command::Htlcs { .. } => {
            let hs: Vec<HtlcInfo> = api.get("/htlcs").await?;
            for h in hs {
                println!(
                    "{} #{} {} {} expires {} hash {}",
                    h.channel,
                    h.id,
                    if h.offered { "offered" } else { "received" },
                    h.amount.0,
                    h.expiry,
                    h.hashlock
                );
            }
        }
        Command::History { .. } => {
            let ps: Vec<PaymentInfo> = api.get("/payments").await?;
            let rs: Vec<ReceivedInfo> = api.get("/received").await?;
            if ps.is_empty() && rs.is_empty() {
                println!("no payments yet");
            }
            for p in ps {
                print!("sent      ");
                print_payment(&p);
            }
            for r in rs {
                println!(
                    "received  {}  via hub {}  hashlock {}",
                    eth(r.amount),
                    r.hub,
                    r.hashlock
                );
            }
        }
        Command::Invoice {
            hub,
            amount,
            valid_secs,
            ..
        } => {
            let v: serde_json::Value = api
                .post(
                    "/invoice",
                    serde_json::json!({"amount": amount.to_string(), "hub": hub, "valid_secs": valid_secs}),
                )
                .await?;
            let inv = v
                .get("invoice")
                .and_then(|i| i.as_str())
                .context("the node's reply has no invoice")?;
            println!("{inv}");
        }
        Command::Pay {
            invoice,
            id,
            no_wait,
            attempts,
            ..
        } => {
            let mut p: PaymentInfo = api
                .post(
                    "/pay",
                    serde_json::json!({"invoice": invoice, "id": id, "attempts": attempts}),
                )
                .await?;
            if p.attempts > 1 {
                println!("{} routes tried", p.attempts);
            }
            if p.repeated {
                println!(
                    "already paid: payment {} was made before; its outcome:",
                    p.id
                );
            }
            if !no_wait && p.status == "pending" {
                let bar = ProgressBar::new_spinner()
                    .with_message(format!("waiting for {} to reveal the preimage", p.payee));
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(100));
                while p.status == "pending" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    p = api.get(&format!("/payments/{}", p.id)).await?;
                }
                bar.finish_and_clear();
            }
            print_payment(&p);
            if p.status == "failed" || p.status == "expired" {
                bail!("payment {} {}", p.id, p.status);
            }
        }
        Command::Connect { addr, address, .. } => {
            let _: serde_json::Value = api
                .post(
                    "/connect",
                    serde_json::json!({"addr": addr, "address": address}),
                )
                .await?;
            println!("connected to {address} at {addr} (kept up while the node runs)");
        }
        Command::Gossip { .. } => {
            let g: Vec<GossipInfo> = api.get("/gossip").await?;
            if g.is_empty() {
                println!("no announced channels known (hubs announce theirs with announce = true)");
            }
            for c in g {
                let dir = |p: &Option<hub::api::PolicyInfo>| match p {
                    Some(p) if p.enabled => format!("{} wei + {} ppm", p.base_fee.0, p.fee_ppm),
                    Some(_) => "disabled".to_string(),
                    None => "no policy heard".to_string(),
                };
                let kind = match c.virtual_until {
                    Some(until) => format!("virtual until {until}"),
                    None => "ledger".to_string(),
                };
                println!(
                    "{}  {} ⇄ {}  {kind}  capacity {}  A→B {}  B→A {}",
                    c.id,
                    c.nodes[0],
                    c.nodes[1],
                    eth(c.capacity),
                    dir(&c.policies[0]),
                    dir(&c.policies[1])
                );
            }
        }
        Command::Open { hub, deposit, .. } => {
            let bar = ProgressBar::new_spinner()
                .with_message("opening: countersignature, deposit on chain, hub collateral");
            bar.enable_steady_tick(Duration::from_millis(100));
            let v: serde_json::Value = api
                .post(
                    "/open",
                    serde_json::json!({"hub": hub, "deposit": deposit.to_string()}),
                )
                .await?;
            bar.finish_and_clear();
            println!(
                "channel {}",
                v.get("channel").and_then(|c| c.as_str()).unwrap_or("?")
            );
        }
        Command::Close { channel, force, .. } => {
            let _: serde_json::Value = api
                .post(
                    "/close",
                    serde_json::json!({"channel": channel, "force": force}),
                )
                .await?;
            if force {
                println!(
                    "closing on chain with our latest state; paid out after the challenge window (see `hub chain`)"
                );
            } else {
                println!("close proposed; the payout follows on chain (see `hub channels`)");
            }
        }
        Command::Virtual(VirtualCmd::Open {
            hub,
            peer,
            deposit,
            lifetime,
            then,
            ..
        }) => {
            let bar = ProgressBar::new_spinner().with_message(
                "opening: our leg's guarantee, the hub's toward the peer, its signature",
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            let v: serde_json::Value = api
                .post(
                    "/virtual/open",
                    serde_json::json!({
                        "hub": hub,
                        "peer": peer,
                        "deposit": deposit.to_string(),
                        "lifetime_secs": lifetime,
                        "then": then,
                    }),
                )
                .await?;
            bar.finish_and_clear();
            println!(
                "virtual channel {}",
                v.get("channel").and_then(|c| c.as_str()).unwrap_or("?")
            );
        }
        Command::Virtual(VirtualCmd::Policy {
            hub,
            open_fee_base,
            open_fee_ppm,
            ..
        }) => {
            let _: serde_json::Value = api
                .post(
                    "/virtual/policy",
                    serde_json::json!({
                        "hub": hub,
                        "open_fee_base": open_fee_base.to_string(),
                        "open_fee_ppm": open_fee_ppm,
                    }),
                )
                .await?;
            println!("hub {hub}: opening fee {open_fee_base} wei + {open_fee_ppm} ppm");
        }
        Command::Virtual(VirtualCmd::Pay {
            channel, amount, ..
        }) => {
            let _: serde_json::Value = api
                .post(
                    "/virtual/pay",
                    serde_json::json!({"channel": channel, "amount": amount.to_string()}),
                )
                .await?;
            println!("paid {} ({amount} wei)", eth(Wei(amount)));
        }
        Command::Virtual(VirtualCmd::List { .. }) => {
            let list: Vec<VirtualInfo> = api.get("/virtual").await?;
            if list.is_empty() {
                println!("no virtual channels");
            }
            for v in list {
                let balances = v.balances.map_or_else(
                    || "(relayed by us)".to_string(),
                    |b| format!("{} / {}", eth(b[0]), eth(b[1])),
                );
                println!(
                    "{}  {:8} {:8} {} ↔ {}  via {}  {}",
                    v.channel, v.role, v.phase, v.parties[0], v.parties[1], v.hub, balances
                );
            }
        }
        Command::Virtual(VirtualCmd::Close { channel, .. }) => {
            let _: serde_json::Value = api
                .post("/virtual/close", serde_json::json!({"channel": channel}))
                .await?;
            println!(
                "close proposed; its final state releases the guarantees (see `hub virtual list`)"
            );
        }
        Command::Serve { .. }
        | Command::Watchtower { .. }
        | Command::Keygen { .. }
        | Command::Deploy { .. }
        | Command::Demo(_)
        | Command::Net { .. }
        | Command::Bench(_)
        | Command::BenchVirtual(_)
        | Command::IdlePeers { .. } => {
            bail!("not a client command")
        }
    }
    Ok(())
}

fn print_payment(p: &PaymentInfo) {
    let detail = match (&p.reason, &p.preimage) {
        (Some(r), _) => format!(" reason {r}"),
        (None, Some(pre)) => format!(" preimage {pre}"),
        _ => String::new(),
    };
    println!(
        "{} {} to {} amount {} fee {} wei{}",
        p.id, p.status, p.payee, p.amount.0, p.fee.0, detail
    );
}
