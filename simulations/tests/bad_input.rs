//! Bad input gets a typed error naming what is wrong, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use router::io::GraphFileError;
use serde_json::{Value, json};
use simulations::sim::{Engine, FastLedger, RunOptions, Scenario, SimError};

fn err(v: &Value) -> SimError {
    Scenario::from_json_str(&v.to_string(), None).expect_err("must be refused")
}

/// The hand-worked scenario with `f` applied to it.
fn edited(f: impl FnOnce(&mut Value)) -> Value {
    let mut v = common::three_node_scenario();
    f(&mut v);
    v
}

fn field_of(e: &SimError) -> String {
    match e {
        SimError::InvalidValue { field, .. } | SimError::NonPositiveAmount { field, .. } => {
            field.clone()
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn malformed_json_is_a_json_error() {
    for text in ["", "{", "[1, 2", "{\"network\": 5}", "{\"nonsense\": true}"] {
        let e = Scenario::from_json_str(text, None).expect_err(text);
        assert!(matches!(e, SimError::Json(_)), "{text}: {e:?}");
    }
    // Fractions where an integer amount is required.
    let e = err(&edited(|v| v["activity"][0]["amount"] = json!(1.5)));
    assert!(matches!(e, SimError::Json(_)), "{e:?}");
}

#[test]
fn unknown_nodes_are_named() {
    let e = err(&edited(|v| {
        v["activity"][1]["destination"] = json!("mallory")
    }));
    match e {
        SimError::UnknownNode { reference, context } => {
            assert_eq!(reference, "mallory");
            assert_eq!(context, "activity[1].destination");
        }
        other => panic!("{other:?}"),
    }
    let e = err(&edited(|v| {
        v["activity"][0]["source"] = json!(common::addr(99))
    }));
    assert!(matches!(e, SimError::UnknownNode { .. }), "{e:?}");
    // #N names nodes of generated networks only.
    let e = err(&edited(|v| v["hubs"][0]["node"] = json!("#1")));
    assert!(matches!(e, SimError::UnknownNode { .. }), "{e:?}");
}

#[test]
fn zero_and_negative_amounts_are_refused() {
    for (value, expect) in [(json!(0), 0i128), (json!(-5), -5), (json!("-7"), -7)] {
        let e = err(&edited(|v| v["activity"][0]["amount"] = value));
        match e {
            SimError::NonPositiveAmount { field, value } => {
                assert_eq!(field, "activity[0].amount");
                assert_eq!(value, expect);
            }
            other => panic!("{other:?}"),
        }
    }
    let e = err(&json!({
        "network": {"generate": {"nodes": 10}},
        "random_activity": {"expected_payment": 0},
        "simulation": {"max_payments": 5}
    }));
    assert_eq!(field_of(&e), "random_activity.expected_payment");
    let e = err(&edited(|v| v["hubs"][0]["collateral"] = json!(-1)));
    assert_eq!(field_of(&e), "hubs[0].collateral");
}

#[test]
fn bad_configuration_values_are_refused() {
    let cases: Vec<(Value, &str)> = vec![
        (
            edited(|v| v["simulation"]["final_expiry_delta_secs"] = json!(100)),
            "simulation.final_expiry_delta_secs",
        ),
        (
            edited(|v| v["simulation"]["max_attempts"] = json!(0)),
            "simulation.max_attempts",
        ),
        (
            edited(|v| v["simulation"]["initial_balance_a"] = json!(1.5)),
            "simulation.initial_balance_a",
        ),
        (
            edited(|v| v["simulation"]["depletion_threshold"] = json!(-0.1)),
            "simulation.depletion_threshold",
        ),
        (
            edited(|v| v["simulation"]["decay_interval_secs"] = json!(0)),
            "simulation.decay_interval_secs",
        ),
        (
            edited(|v| v["activity"][0]["interval_secs"] = json!(0)),
            "activity[0].interval_secs",
        ),
        (
            edited(|v| v["activity"][0]["interval_secs"] = json!([5, 1])),
            "activity[0].interval_secs",
        ),
        (
            edited(|v| v["activity"][0]["destination"] = json!("A")),
            "activity[0].destination",
        ),
        (
            edited(|v| v["activity"][0]["amount_msat"] = json!(5)),
            "activity[0].amount",
        ),
        (
            edited(|v| v["hubs"][0]["collateral_multiplier"] = json!(0.0)),
            "hubs[0].collateral_multiplier",
        ),
        (
            edited(|v| {
                v["hubs"][0]["collateral"] = json!(5);
                v["hubs"][0]["collateral_multiplier"] = json!(2.0);
            }),
            "hubs[0].collateral",
        ),
        (
            edited(|v| v["hubs"] = json!([{"node": "H"}, {"node": "H"}])),
            "hubs[1].node",
        ),
        (
            json!({"network": {"generate": {"nodes": 1}}, "random_activity": {"expected_payment": 5}, "simulation": {"max_payments": 1}}),
            "network.generate.nodes",
        ),
    ];
    for (v, field) in cases {
        let e = err(&v);
        assert_eq!(field_of(&e), field, "{e}");
    }
}

#[test]
fn scenarios_without_network_or_end_are_refused() {
    let e = err(&edited(|v| {
        v.as_object_mut().unwrap().remove("network");
    }));
    assert!(matches!(e, SimError::NetworkChoice), "{e:?}");
    let e = err(&edited(|v| v["sim_network"] = json!([])));
    assert!(matches!(e, SimError::NetworkChoice), "{e:?}");
    let e = err(&edited(|v| v["network"] = json!({"file": "missing.json"})));
    assert!(
        matches!(e, SimError::MissingNetworkFile(ref p) if p == "missing.json"),
        "{e:?}"
    );
    let e = err(&edited(|v| v["activity"] = json!([])));
    assert!(matches!(e, SimError::NoActivity), "{e:?}");
    let e = err(&edited(|v| {
        v["activity"][0].as_object_mut().unwrap().remove("count");
    }));
    assert!(matches!(e, SimError::Unbounded), "{e:?}");
    let e = err(&edited(|v| v["network"]["inline"]["channels"] = json!([])));
    assert!(matches!(e, SimError::EmptyNetwork), "{e:?}");
}

#[test]
fn bad_networks_are_refused_by_the_router_reader() {
    // A SimLN key that is not a point of the curve.
    let mut simln: Value = serde_json::from_str(include_str!("../examples/simln.json")).unwrap();
    simln["sim_network"][0]["node_1"]["pubkey"] = json!("02".to_owned() + &"ff".repeat(32));
    let e = err(&simln);
    assert!(
        matches!(e, SimError::Network(GraphFileError::NodeKey { .. })),
        "{e:?}"
    );
    // A SimLN channel whose HTLC maximum exceeds its capacity.
    let mut simln: Value = serde_json::from_str(include_str!("../examples/simln.json")).unwrap();
    simln["sim_network"][1]["node_2"]["max_htlc_size_msat"] = json!(10_000_000_000u64);
    let e = err(&simln);
    assert!(
        matches!(e, SimError::Network(GraphFileError::SimLn { index: 1, .. })),
        "{e:?}"
    );
    // Our format: a self-loop, and a wrong version.
    let e = err(&edited(|v| {
        v["network"]["inline"]["channels"][0]["node_b"] = json!(common::addr(1))
    }));
    assert!(
        matches!(e, SimError::Network(GraphFileError::Graph { index: 0, .. })),
        "{e:?}"
    );
    let e = err(&edited(|v| v["network"]["inline"]["version"] = json!(9)));
    assert!(
        matches!(e, SimError::Network(GraphFileError::Version(9))),
        "{e:?}"
    );
    // A network file that is not JSON.
    let s = edited(|v| v["network"] = json!({"file": "net.json"}));
    let e = Scenario::from_json_str(&s.to_string(), Some("not json")).expect_err("refused");
    assert!(
        matches!(e, SimError::Network(GraphFileError::Json(_))),
        "{e:?}"
    );
}

#[test]
fn a_virtual_channel_its_path_cannot_fund_is_refused() {
    let v = edited(|v| {
        v["virtual_channels"] = json!([{"between": ["A", "B"], "fund_a": 10, "fund_b": 5000}]);
    });
    let s = Scenario::from_json_str(&v.to_string(), None).unwrap();
    match Engine::<FastLedger>::new(&s, RunOptions::default()) {
        Err(SimError::VirtualChannel(m)) => assert!(m.contains("needs 5000"), "{m}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("funded a virtual channel beyond the balances"),
    }
    let e = err(&edited(|v| {
        v["virtual_channels"] = json!([{"between": ["A", "A"], "fund_a": 1, "fund_b": 1}]);
    }));
    assert_eq!(field_of(&e), "virtual_channels[0].between");
}

#[test]
fn the_binary_reports_bad_input_without_panicking() {
    let dir = std::env::temp_dir().join(format!("simulate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.json");
    std::fs::write(
        &path,
        edited(|v| v["activity"][0]["amount"] = json!(0)).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("activity[0].amount: amount must be positive"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Examples:") && help.contains("collateral"),
        "{help}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
