//! The gas report: measure every entry point on anvil and compare with the committed
//! `contracts/GAS.md` (and the table in `contracts/README.md`), or rewrite them with
//! `VHUB_GAS_REPORT=write` (what `scripts/gas-report.sh` does).
//!
//! The comparison is exact. Everything that gas depends on is fixed: the anvil binary and
//! hardfork are pinned, keys are anvil's default dev keys, contract addresses follow from the
//! deployer's nonces, channel parameters, amounts and lock expiries are constants, and
//! signatures are deterministic (RFC 6979), so calldata is byte-identical run to run and
//! storage starts from the same values. A single unit of difference therefore means the contract,
//! the compiler settings or the scenario changed, which a reviewer should see in the diff of
//! GAS.md; a tolerance would only hide small regressions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, U256};
use common::*;
use contracts::bindings::{Adjudicator, SecretRegistry};
use htlc::{Amount, ChannelState, Side};
use std::collections::BTreeMap;

/// Expiry of the measured locks: a constant, so calldata does not depend on the clock.
const EXPIRY: u64 = 4_000_000_000;
const TARGET_COOPERATIVE: u64 = 80_000;
const TARGET_UNILATERAL: u64 = 150_000;

type Gas = BTreeMap<&'static str, u64>;

async fn measure(asset: Asset) -> Gas {
    let f = Fixture::new().await;
    let mut g = Gas::new();
    let params = |nonce: u64| f.params(asset, nonce);

    // Warm-up: the adjudicator already holds the asset for other channels (steady state).
    f.fund(&params(100), ETH, 0).await;

    // Deposits.
    let p = params(1);
    let out =
        f.a.client
            .deposit(&p, Amount(0), Amount(5 * ETH))
            .await
            .unwrap();
    g.insert("deposit_first", out.gas_used);
    let out =
        f.b.client
            .deposit(&p, Amount(5 * ETH), Amount(5 * ETH))
            .await
            .unwrap();
    g.insert("deposit_second", out.gas_used);

    // Cooperative close.
    let s = final_state(&p, 9, [6 * ETH, 4 * ETH]);
    let out =
        f.w.cooperative_close(&p, &s, &f.sign(&p, &s))
            .await
            .unwrap();
    g.insert("cooperative_close", out.gas_used);

    // Unilateral close, challenge, conclude.
    let p = params(2);
    f.fund(&p, 5 * ETH, 5 * ETH).await;
    let v1 = state(&p, 1, [5 * ETH, 5 * ETH]);
    let v2 = state(&p, 2, [4 * ETH, 6 * ETH]);
    g.insert(
        "close",
        f.w.close(&p, &v1, &f.sign(&p, &v1)).await.unwrap().gas_used,
    );
    g.insert(
        "challenge",
        f.w.challenge(&p, &v2, &f.sign(&p, &v2))
            .await
            .unwrap()
            .gas_used,
    );
    f.net.increase_time(WINDOW + 1).await.unwrap();
    g.insert("conclude", f.w.conclude(&p, &v2).await.unwrap().gas_used);

    // Locks: four pending, one unlocked with a revealed preimage (proof of two hashes).
    let p = params(3);
    f.fund(&p, 5 * ETH, 5 * ETH).await;
    let (l0, pre0) = lock(0, ETH, EXPIRY, Side::A, 1);
    let (l1, _) = lock(1, ETH, EXPIRY, Side::B, 2);
    let (l2, _) = lock(2, ETH, EXPIRY, Side::A, 3);
    let (l3, _) = lock(3, ETH, EXPIRY, Side::B, 4);
    let s = ChannelState {
        locks: vec![l0, l1, l2, l3],
        ..state(&p, 1, [3 * ETH, 3 * ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    g.insert(
        "conclude_with_locks",
        f.w.conclude(&p, &s).await.unwrap().gas_used,
    );
    g.insert(
        "register_secret",
        f.w.register_secret(&pre0).await.unwrap().gas_used,
    );
    g.insert("unlock", f.w.unlock(&p, &s, l0.id).await.unwrap().gas_used);

    // Guarantees: ledger (A, B) guaranteeing a virtual channel (A, C).
    let c = htlc::sig::Keys::from_signer(f.net.signer(4).unwrap());
    let virt = |nonce: u64| {
        f.w.channel_params(
            [f.a.address(), c.address()],
            f.asset(asset),
            WINDOW,
            U256::from(nonce),
        )
    };
    let v = virt(50);
    let vf = final_state(&v, 7, [2 * ETH, ETH]);
    let vf_sigs = sign_with([&f.a.keys, &c], &v, &vf);
    let v2 = virt(51);
    let v2s = state(&v2, 7, [2 * ETH, ETH]);
    let ledger = |nonce: u64, vid| {
        let p = params(nonce);
        let s = ChannelState {
            guarantees: vec![guarantee(vid, 2 * ETH, ETH)],
            ..state(&p, 1, [4 * ETH, 3 * ETH])
        };
        (p, s)
    };
    let (lp, ls) = ledger(4, v.id());
    let (lp2, ls2) = ledger(5, v2.id());
    let (lp3, ls3) = ledger(7, v.id());
    // A virtual channel never co-signed: its dispute starts from the guarantee (ADR 0026).
    let v3 = virt(52);
    let (lp4, ls4) = ledger(8, v3.id());
    for (p, s) in [(&lp, &ls), (&lp2, &ls2), (&lp3, &ls3), (&lp4, &ls4)] {
        f.fund(p, 5 * ETH, 5 * ETH).await;
        f.w.close(p, s, &f.sign(p, s)).await.unwrap();
    }
    g.insert(
        "dispute_virtual",
        f.w.dispute_virtual(&lp4, &ls4, &v3).await.unwrap().gas_used,
    );
    g.insert(
        "close_virtual",
        f.w.close(&v2, &v2s, &sign_with([&f.a.keys, &c], &v2, &v2s))
            .await
            .unwrap()
            .gas_used,
    );
    f.net.increase_time(WINDOW + 1).await.unwrap();
    g.insert(
        "conclude_with_guarantee",
        f.w.conclude(&lp, &ls).await.unwrap().gas_used,
    );
    f.w.conclude(&lp2, &ls2).await.unwrap();
    f.w.conclude(&lp3, &ls3).await.unwrap();
    g.insert(
        "resolve_guarantee_cosigned",
        f.w.resolve_guarantee(&lp, &ls, &v, &vf, Some(&vf_sigs))
            .await
            .unwrap()
            .gas_used,
    );
    g.insert(
        "resolve_guarantee_onchain",
        f.w.resolve_guarantee(&lp2, &ls2, &v2, &v2s, None)
            .await
            .unwrap()
            .gas_used,
    );
    g.insert(
        "resolve_guarantee_recorded",
        f.w.resolve_guarantee(&lp3, &ls3, &v, &vf, Some(&vf_sigs))
            .await
            .unwrap()
            .gas_used,
    );

    if asset == Asset::Eth {
        // A deferred payout, claimed: B's account refuses ETH.
        let p = params(6);
        f.fund(&p, 5 * ETH, 5 * ETH).await;
        let b = f.b.address();
        let code = common::hostile::HostileReceiver::DEPLOYED_BYTECODE.clone();
        f.net.set_code(b, code).await.unwrap();
        let r = common::hostile::HostileReceiver::new(b, f.net.provider().clone());
        r.setRefuse(true)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let s = final_state(&p, 1, [5 * ETH, 5 * ETH]);
        let out =
            f.w.cooperative_close(&p, &s, &f.sign(&p, &s))
                .await
                .unwrap();
        g.insert("cooperative_close_deferred", out.gas_used);
        let to = f.net.signer(5).unwrap().address();
        g.insert(
            "claim",
            f.b.client.claim(Address::ZERO, to).await.unwrap().gas_used,
        );

        // Deployment.
        let provider = f.net.provider();
        let receipt = SecretRegistry::deploy_builder(provider.clone())
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        g.insert("deploy_registry", receipt.gas_used);
        let registry = receipt.contract_address.unwrap();
        let receipt = Adjudicator::deploy_builder(provider.clone(), registry)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        g.insert("deploy_adjudicator", receipt.gas_used);
    }
    g
}

fn n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn cell(g: &Gas, key: &str) -> String {
    g.get(key).map_or_else(|| "—".to_owned(), |v| n(*v))
}

fn tables(eth: &Gas, tok: &Gas) -> String {
    let sum = |g: &Gas, keys: &[&str]| -> u64 { keys.iter().map(|k| g[k]).sum() };
    let unilateral = |g: &Gas| sum(g, &["close", "conclude"]);
    let sad_with_challenge = |g: &Gas| sum(g, &["close", "challenge", "conclude"]);
    let virtual_sad = |g: &Gas| {
        sum(
            g,
            &[
                "close",
                "close_virtual",
                "conclude_with_guarantee",
                "resolve_guarantee_onchain",
            ],
        )
    };
    let rows: [(&str, String, String, &str); 21] = [
        (
            "deposit, first into a channel",
            cell(eth, "deposit_first"),
            cell(tok, "deposit_first"),
            "A funds an empty channel (expected held 0)",
        ),
        (
            "deposit, second",
            cell(eth, "deposit_second"),
            cell(tok, "deposit_second"),
            "B tops up (expected held = A's deposit)",
        ),
        (
            "cooperativeClose",
            cell(eth, "cooperative_close"),
            cell(tok, "cooperative_close"),
            "final state, two signatures, both paid at once",
        ),
        (
            "close (unilateral)",
            cell(eth, "close"),
            cell(tok, "close"),
            "co-signed state registered, window opens",
        ),
        (
            "challenge",
            cell(eth, "challenge"),
            cell(tok, "challenge"),
            "higher version replaces it, window restarts",
        ),
        (
            "conclude (+ withdraw)",
            cell(eth, "conclude"),
            cell(tok, "conclude"),
            "after the window, both balances paid",
        ),
        (
            "**unilateral close to payout**",
            n(unilateral(eth)),
            n(unilateral(tok)),
            "close + conclude",
        ),
        (
            "sad path with one challenge",
            n(sad_with_challenge(eth)),
            n(sad_with_challenge(tok)),
            "close + challenge + conclude",
        ),
        (
            "conclude, state with 4 locks",
            cell(eth, "conclude_with_locks"),
            cell(tok, "conclude_with_locks"),
            "balances paid, locks left to unlock",
        ),
        (
            "registerSecret",
            cell(eth, "register_secret"),
            "—".to_owned(),
            "SecretRegistry, first reveal of a preimage",
        ),
        (
            "unlock one lock",
            cell(eth, "unlock"),
            cell(tok, "unlock"),
            "preimage revealed in time, proof of 2 hashes",
        ),
        (
            "close a virtual channel",
            cell(eth, "close_virtual"),
            cell(tok, "close_virtual"),
            "virtual channel disputed on chain (holds nothing)",
        ),
        (
            "disputeVirtual",
            cell(eth, "dispute_virtual"),
            cell(tok, "dispute_virtual"),
            "a virtual channel's dispute started from a ledger's guarantee (its opening as funded)",
        ),
        (
            "conclude, state with a guarantee",
            cell(eth, "conclude_with_guarantee"),
            cell(tok, "conclude_with_guarantee"),
            "ledger balances paid, guarantee left",
        ),
        (
            "resolveGuarantee, co-signed final (first)",
            cell(eth, "resolve_guarantee_cosigned"),
            cell(tok, "resolve_guarantee_cosigned"),
            "split by the virtual channel's co-signed final state, which it records for the other ledgers",
        ),
        (
            "resolveGuarantee, concluded on chain (first)",
            cell(eth, "resolve_guarantee_onchain"),
            cell(tok, "resolve_guarantee_onchain"),
            "split by the virtual channel's finalized dispute, recorded likewise",
        ),
        (
            "resolveGuarantee, outcome already recorded",
            cell(eth, "resolve_guarantee_recorded"),
            cell(tok, "resolve_guarantee_recorded"),
            "another ledger guaranteeing the same virtual channel",
        ),
        (
            "cooperativeClose, one payout deferred",
            cell(eth, "cooperative_close_deferred"),
            "—".to_owned(),
            "B's account refuses ETH; its share becomes claimable",
        ),
        (
            "claim",
            cell(eth, "claim"),
            "—".to_owned(),
            "B withdraws the deferred payout",
        ),
        (
            "deploy SecretRegistry",
            cell(eth, "deploy_registry"),
            "—".to_owned(),
            "once per chain",
        ),
        (
            "deploy Adjudicator",
            cell(eth, "deploy_adjudicator"),
            "—".to_owned(),
            "once per chain",
        ),
    ];
    let mut t = String::new();
    t.push_str("| entry point | ETH | ERC-20 | what is measured |\n|---|---:|---:|---|\n");
    for (name, e, k, what) in rows {
        t.push_str(&format!("| {name} | {e} | {k} | {what} |\n"));
    }
    t.push_str(&format!(
        "\nTargets: cooperative close ≤ {} (ETH {}, ERC-20 {}); unilateral close to payout ≤ {} \
         (ETH {}, ERC-20 {}).\n",
        n(TARGET_COOPERATIVE),
        n(eth["cooperative_close"]),
        n(tok["cooperative_close"]),
        n(TARGET_UNILATERAL),
        n(unilateral(eth)),
        n(unilateral(tok)),
    ));
    t.push_str("\n**Beside the anchors** (same operations as published by go-nitro and Raiden; ours in ETH):\n\n");
    t.push_str("| operation | vhub | anchor |\n|---|---:|---|\n");
    t.push_str(&format!(
        "| happy exit: cooperative close | {} | go-nitro 111,514; Raiden cooperativeSettle 112,270 |\n",
        n(eth["cooperative_close"])
    ));
    t.push_str(&format!(
        "| sad exit: close, wait, conclude | {} | go-nitro 195,172; Raiden closeChannel 118,501 + settleChannel 108,569 = 227,070 |\n",
        n(unilateral(eth))
    ));
    t.push_str(&format!(
        "| virtually-funded sad exit: ledger close + virtual close + ledger conclude + resolveGuarantee | {} | go-nitro 470,520 |\n",
        n(virtual_sad(eth))
    ));
    t.push_str(&format!(
        "| register a secret | {} | Raiden registerSecret 46,181 |\n",
        n(eth["register_secret"])
    ));
    t
}

const BEGIN: &str = "<!-- gas-table:begin (generated by scripts/gas-report.sh) -->\n";
const END: &str = "<!-- gas-table:end -->";

fn gas_md(tables: &str) -> String {
    format!(
        "# Gas per entry point\n\n\
         Generated by `contracts/scripts/gas-report.sh`; do not edit by hand. CI runs the\n\
         `gas_report_is_current` test (`contracts/tests/gas.rs`), which measures again and fails on\n\
         any difference: the scenario is fully deterministic (pinned anvil {anvil} on hardfork\n\
         `{fork}`, fixed keys, nonces, amounts and expiries, RFC 6979 signatures), so figures are\n\
         exact and a tolerance would only hide regressions.\n\n\
         Conditions: solc 0.8.37 (via-IR, optimizer 10,000 runs, EVM cancun). Closing, concluding\n\
         and unlocking transactions are sent by a third party (a watchtower), so both payees are\n\
         cold accounts; payees already hold ETH and tokens; the adjudicator already holds the\n\
         asset for other channels. Figures are whole-transaction gas (21,000 base and calldata\n\
         included), as the anchors report them.\n\n{tables}",
        anvil = "1.7.1",
        fork = contracts::devnet::HARDFORK,
    )
}

fn readme_with(readme: &str, tables: &str) -> Option<String> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = readme[start..].find(END)? + start;
    Some(format!("{}{}{}", &readme[..start], tables, &readme[end..]))
}

#[tokio::test]
async fn gas_report_is_current() {
    let eth = measure(Asset::Eth).await;
    let tok = measure(Asset::Token).await;
    let tables = tables(&eth, &tok);
    let gas_path = concat!(env!("CARGO_MANIFEST_DIR"), "/GAS.md");
    // The table appears in this crate's README and in the project's README.
    let readme_paths = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"),
    ];
    let fresh_gas = gas_md(&tables);
    let readmes: Vec<(String, String)> = readme_paths
        .iter()
        .map(|p| {
            let readme = std::fs::read_to_string(p).expect("README");
            let fresh = readme_with(&readme, &tables)
                .unwrap_or_else(|| panic!("{p} has the gas-table markers"));
            (readme, fresh)
        })
        .collect();

    if std::env::var("VHUB_GAS_REPORT").as_deref() == Ok("write") {
        std::fs::write(gas_path, &fresh_gas).unwrap();
        for (p, (_, fresh)) in readme_paths.iter().zip(&readmes) {
            std::fs::write(p, fresh).unwrap();
        }
        eprintln!("{fresh_gas}");
    } else {
        let committed = std::fs::read_to_string(gas_path).unwrap_or_default();
        assert!(
            committed == fresh_gas && readmes.iter().all(|(old, fresh)| old == fresh),
            "gas figures changed; run contracts/scripts/gas-report.sh and review the diff.\n\
             Fresh measurement:\n{fresh_gas}"
        );
    }

    assert!(
        eth["cooperative_close"] <= TARGET_COOPERATIVE,
        "cooperative close over target"
    );
    assert!(
        eth["close"] + eth["conclude"] <= TARGET_UNILATERAL,
        "unilateral close to payout over target"
    );
}
