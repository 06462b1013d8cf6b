//! `simulate`: the liquidity simulator's command line. It reads the scenario (and the network
//! file it names), runs the library's simulation, and writes the summary, CSVs and plots.

use std::fs;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use htlc::Amount;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use simulations::sim::config::ScenarioFile;
use simulations::sim::questions::{
    CollateralSearch, Measure, collateral_for, fee_sweep, virtual_channel_savings,
};
use simulations::sim::report::{
    self, PAYMENTS_CSV_HEADER, depletion_text, display_amount, payment_csv_row,
};
use simulations::sim::{
    Observer, PaymentRecord, Progress, Protocol, RunOptions, RunOutput, Scenario, plot, run,
};

const LONG_ABOUT: &str = "\
Liquidity simulator for vhub operators.

It runs payments over a network of channels in virtual time, deterministically: the same
scenario and seed give the same output, byte for byte. Payments are routed by the hub's own
router (its scorer learns from every success and failure), locked as HTLCs hop by hop, settled
or failed with the protocol's failure reasons (temporary_channel_failure, ...), and retried on
the next cheapest route. Channel balances move and deplete.

A scenario is a JSON file: the network (our router JSON, a SimLN sim_network list, or a
generated scale-free network), the activity (SimLN-style flows and/or random activity: Poisson
arrivals, log-normal amounts, capacity-weighted destinations), the hubs (fee policy,
collateral) and simulation parameters. A SimLN simulation file is a valid scenario as is.
See simulations/examples/ and the module docs of simulations::sim::config.

Each subcommand answers one operator question:
  run         what happens under this load: summary, per-payment CSV, balances, plots
  collateral  how much collateral my hub needs for a 99% success rate
  deplete     which channels deplete first, and when
  fees        what a fee change does to my revenue and to success
  virtual     what a virtual channel between two busy peers saves
  bench       how fast the simulator is (1,000,000 payments over 16,000 nodes)";

const EXAMPLES: &str = "\
Examples:
  simulate run simulations/examples/simln.json
  simulate run simulations/examples/star.json --out out/star
  simulate collateral simulations/examples/star.json --hub hub1 --target 0.99
  simulate deplete simulations/examples/generated.json --top 10
  simulate fees simulations/examples/star.json --hub hub1 --fee-ppm 100,500,2000
  simulate virtual simulations/examples/star.json
  simulate bench --nodes 16000 --payments 1000000";

/// The liquidity simulator.
#[derive(Parser, Debug)]
#[command(version, about = "Liquidity simulator for vhub operators", long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate a scenario: print the summary; with --out, also write the CSVs and plots.
    #[command(
        after_help = "Writes to --out: summary.txt, summary.json, payments.csv (one row per payment:\nsource, destination, amount, hash, dispatch_time, htlc_count, outcome, ...),\nbalances.csv (sampled channel balances), success_rate.svg, balances.svg, fees.svg.\n\nExample:\n  simulate run simulations/examples/star.json --out out/star"
    )]
    Run {
        #[command(flatten)]
        input: Input,
        /// Directory for the summary, CSVs and plots (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Hub whose channels balances.svg shows (default: the first hub).
        #[arg(long)]
        plot_hub: Option<String>,
    },
    /// Find the smallest collateral at which a hub reaches a target success rate.
    #[command(
        after_help = "The hub's collateral (its side of each of its channels) is multiplied by a\nfactor: doubled (or halved) from 1 until the target is met, then bisected.\nEvery run dispatches exactly the same payments.\n\nExample:\n  simulate collateral simulations/examples/star.json --hub hub1 --target 0.99"
    )]
    Collateral {
        #[command(flatten)]
        input: Input,
        /// The hub (address, alias, SimLN key or #N; default: the scenario's first hub).
        #[arg(long)]
        hub: Option<String>,
        /// Target success rate, in (0, 1].
        #[arg(long, default_value_t = 0.99)]
        target: f64,
        /// Which success rate the target applies to.
        #[arg(long, value_enum, default_value_t = MeasureArg::Overall)]
        measure: MeasureArg,
        /// Largest multiplier tried.
        #[arg(long, default_value_t = 64.0)]
        max_multiplier: f64,
        /// Bisection steps once bracketed.
        #[arg(long, default_value_t = 5)]
        steps: u32,
    },
    /// Which channel directions deplete first, and when (and how many HTLCs they refused).
    #[command(
        after_help = "A direction is depleted when its sender's free balance falls below\n--threshold of the channel's capacity.\n\nExample:\n  simulate deplete simulations/examples/generated.json --top 10"
    )]
    Deplete {
        #[command(flatten)]
        input: Input,
        /// Rows to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Depletion threshold, fraction of capacity (default: the scenario's, else 0.05).
        #[arg(long)]
        threshold: Option<f64>,
    },
    /// Compare a hub's revenue and the success rate under other fees.
    #[command(
        after_help = "Runs the scenario as given, then once per fee setting (every combination of\nthe --base-fee and --fee-ppm values given).\n\nExample:\n  simulate fees simulations/examples/star.json --hub hub1 --fee-ppm 100,500,2000"
    )]
    Fees {
        #[command(flatten)]
        input: Input,
        /// The hub (default: the scenario's first hub).
        #[arg(long)]
        hub: Option<String>,
        /// Flat fees to try (base units), comma-separated.
        #[arg(long, value_delimiter = ',')]
        base_fee: Vec<u128>,
        /// Proportional fees to try (millionths), comma-separated.
        #[arg(long, value_delimiter = ',')]
        fee_ppm: Vec<u32>,
    },
    /// What a virtual channel between two busy peers saves them and the network.
    #[command(
        after_help = "Without --peers, picks the two peers without a direct channel that exchanged\nthe most payments. The virtual channel is funded by guarantees locked in the\nledger channels of the cheapest path between them (or --via).\n\nExample:\n  simulate virtual simulations/examples/star.json --peers alice,bob"
    )]
    Virtual {
        #[command(flatten)]
        input: Input,
        /// The two peers, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 2)]
        peers: Vec<String>,
        /// The first peer's balance in the virtual channel (default: what it sent the other).
        #[arg(long)]
        fund_a: Option<u128>,
        /// The second peer's balance (default: what it sent the first).
        #[arg(long)]
        fund_b: Option<u128>,
        /// Intermediaries of the funding path, comma-separated.
        #[arg(long, value_delimiter = ',')]
        via: Vec<String>,
        /// Each hub's flat fee for opening a virtual channel (default: the hub's default).
        #[arg(long)]
        open_fee_base: Option<u128>,
        /// Each hub's opening fee in millionths of the channel's value (default: the hub's).
        #[arg(long)]
        open_fee_ppm: Option<u32>,
    },
    /// Measure the simulator's speed: random payments over a generated network.
    #[command(
        after_help = "Prints wall-clock figures (the only command that does).\n\nExample:\n  simulate bench --nodes 16000 --payments 1000000"
    )]
    Bench {
        /// Nodes of the generated network.
        #[arg(long, default_value_t = 16_000)]
        nodes: usize,
        /// Payments to dispatch.
        #[arg(long, default_value_t = 1_000_000)]
        payments: u64,
        /// Mean payment amount, wei.
        #[arg(long, default_value_t = 1_000_000_000_000_000)]
        expected_payment: u128,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Route-search threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write a generated network as router JSON (to use as a scenario's network file).
    Generate {
        /// Nodes.
        #[arg(long)]
        nodes: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The scenario and what may override it.
#[derive(Args, Debug)]
struct Input {
    /// Scenario file (JSON; a SimLN simulation file works as is).
    scenario: PathBuf,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Most payments (overrides simulation.max_payments).
    #[arg(long)]
    max_payments: Option<u64>,
    /// Virtual seconds of activity (overrides simulation.duration_secs).
    #[arg(long)]
    duration: Option<u64>,
    /// Channel ledger: fast (apply_batch, no signatures) or signed (real machines; slow).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Fast)]
    protocol: ProtocolArg,
    /// Route-search threads (default: all cores; the result never depends on it).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    Fast,
    Signed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MeasureArg {
    /// All payments.
    Overall,
    /// Payments that tried a route through the hub.
    ViaHub,
}

impl Input {
    fn load(&self) -> Result<Scenario> {
        let text = fs::read_to_string(&self.scenario)
            .with_context(|| format!("reading {}", self.scenario.display()))?;
        let mut file = ScenarioFile::from_json_str(&text)
            .with_context(|| format!("in {}", self.scenario.display()))?;
        if let Some(s) = self.seed {
            file.seed = Some(s);
        }
        if let Some(m) = self.max_payments {
            file.simulation.max_payments = Some(m);
        }
        if let Some(d) = self.duration {
            file.simulation.duration_secs = Some(d);
        }
        let network_text = match file.network_file() {
            Some(rel) => {
                let base = self.scenario.parent().unwrap_or(Path::new("."));
                let path = base.join(rel);
                Some(
                    fs::read_to_string(&path)
                        .with_context(|| format!("reading network file {}", path.display()))?,
                )
            }
            None => None,
        };
        Scenario::build(file, network_text.as_deref())
            .with_context(|| format!("in {}", self.scenario.display()))
    }

    fn protocol(&self) -> Protocol {
        match self.protocol {
            ProtocolArg::Fast => Protocol::Fast,
            ProtocolArg::Signed => Protocol::Signed,
        }
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            threads: threads(self.threads),
        }
    }
}

fn threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// A progress bar on stderr (hidden when stderr is not a terminal), and optionally the
/// per-payment CSV as the payments finish.
struct Reporter {
    bar: ProgressBar,
    csv: Option<BufWriter<fs::File>>,
    labels: Vec<String>,
    error: Option<std::io::Error>,
}

impl Reporter {
    fn new(scenario: &Scenario, csv: Option<&Path>) -> Result<Reporter> {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let csv = match csv {
            Some(p) => {
                let mut w = BufWriter::new(
                    fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
                );
                writeln!(w, "{PAYMENTS_CSV_HEADER}")?;
                Some(w)
            }
            None => None,
        };
        let labels = (0..scenario.network.nodes.len() as u32)
            .map(|i| scenario.network.label(i))
            .collect();
        Ok(Reporter {
            bar,
            csv,
            labels,
            error: None,
        })
    }

    fn done(mut self) -> Result<()> {
        self.bar.finish_and_clear();
        if let Some(e) = self.error.take() {
            return Err(e).context("writing payments.csv");
        }
        if let Some(mut w) = self.csv.take() {
            w.flush().context("writing payments.csv")?;
        }
        Ok(())
    }
}

impl Observer for Reporter {
    fn payment(&mut self, record: &PaymentRecord) {
        if let (Some(w), None) = (&mut self.csv, &self.error) {
            let labels = &self.labels;
            let label = |i: u32| labels.get(i as usize).cloned().unwrap_or_default();
            if let Err(e) = writeln!(w, "{}", payment_csv_row(record, &label)) {
                self.error = Some(e);
            }
        }
    }

    fn progress(&mut self, p: Progress) {
        match p.max_payments {
            Some(m) => {
                self.bar.set_length(m);
                self.bar.set_position(p.completed);
                self.bar.set_message("payments");
            }
            None => {
                self.bar.set_length(p.expected_end_ms / 1000);
                self.bar
                    .set_position((p.virtual_ms / 1000).min(p.expected_end_ms / 1000));
                self.bar
                    .set_message(format!("virtual s, {} payments", p.completed));
            }
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn hub_arg(scenario: &Scenario, hub: Option<&str>) -> Result<u32> {
    match hub {
        Some(h) => Ok(scenario.network.resolve(h, "--hub")?),
        None => match scenario.hubs.first() {
            Some(h) => Ok(h.node),
            None => bail!("the scenario names no hub: pass --hub"),
        },
    }
}

fn run_cmd(input: &Input, out: Option<&Path>, plot_hub: Option<&str>) -> Result<()> {
    let scenario = input.load()?;
    if let Some(dir) = out {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let csv = out.map(|d| d.join("payments.csv"));
    let mut obs = Reporter::new(&scenario, csv.as_deref())?;
    let output = run(&scenario, input.protocol(), input.options(), &mut obs)?;
    obs.done()?;
    let text = output.summary.to_text();
    print!("{text}");
    if let Some(dir) = out {
        write_outputs(&scenario, &output, dir, plot_hub)?;
        println!("\nwrote {}", dir.display());
    }
    Ok(())
}

fn write_outputs(
    scenario: &Scenario,
    output: &RunOutput,
    dir: &Path,
    plot_hub: Option<&str>,
) -> Result<()> {
    write(&dir.join("summary.txt"), &output.summary.to_text())?;
    write(&dir.join("summary.json"), &output.summary.to_json()?)?;
    let f = fs::File::create(dir.join("balances.csv")).context("creating balances.csv")?;
    report::write_balances_csv(&output.samples, BufWriter::new(f))
        .context("writing balances.csv")?;
    let hub = match plot_hub {
        Some(h) => {
            let n = scenario.network.resolve(h, "--plot-hub")?;
            Some(
                scenario
                    .hubs
                    .iter()
                    .position(|x| x.node == n)
                    .context("--plot-hub is not a hub of the scenario")?,
            )
        }
        None => (!scenario.hubs.is_empty()).then_some(0),
    };
    write(
        &dir.join("success_rate.svg"),
        &plot::success_rate_svg(&output.samples)?,
    )?;
    write(
        &dir.join("balances.svg"),
        &plot::balances_svg(&output.samples, hub)?,
    )?;
    write(
        &dir.join("fees.svg"),
        &plot::fees_svg(&output.samples, &scenario.params.unit)?,
    )?;
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            input,
            out,
            plot_hub,
        } => run_cmd(&input, out.as_deref(), plot_hub.as_deref()),
        Command::Collateral {
            input,
            hub,
            target,
            measure,
            max_multiplier,
            steps,
        } => {
            let scenario = input.load()?;
            let hub = hub_arg(&scenario, hub.as_deref())?;
            let search = CollateralSearch {
                hub,
                target,
                measure: match measure {
                    MeasureArg::Overall => Measure::Overall,
                    MeasureArg::ViaHub => Measure::ViaHub,
                },
                max_multiplier,
                steps,
            };
            let a = collateral_for(&scenario, &search, input.protocol(), input.options())?;
            let unit = &scenario.params.unit;
            println!(
                "hub {}: collateral for {} success ({:?})",
                a.hub,
                pct(a.target),
                a.measure
            );
            println!(
                "  {:>10} {:>26} {:>10} {:>10} {:>22}",
                "multiplier", "collateral", "overall", "via hub", "fees earned"
            );
            for t in &a.trials {
                println!(
                    "  {:>10.4} {:>26} {:>10} {:>10} {:>22}",
                    t.multiplier,
                    display_amount(t.collateral.0, unit),
                    pct(t.success_rate),
                    pct(t.success_rate_via_hub),
                    display_amount(t.fees_earned.0, unit)
                );
            }
            match &a.answer {
                Some(t) => println!(
                    "answer: {} ({} base units), {:.4} × the scenario's",
                    display_amount(t.collateral.0, unit),
                    t.collateral.0,
                    t.multiplier
                ),
                None => println!(
                    "answer: not reached at {max_multiplier} × the scenario's collateral (other channels limit success)"
                ),
            }
            Ok(())
        }
        Command::Deplete {
            input,
            top,
            threshold,
        } => {
            let mut scenario = input.load()?;
            if let Some(t) = threshold {
                if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
                    bail!("--threshold must be in [0, 1], got {t}");
                }
                scenario.params.depletion_threshold = t;
            }
            let mut obs = Reporter::new(&scenario, None)?;
            let output = run(&scenario, input.protocol(), input.options(), &mut obs)?;
            obs.done()?;
            println!(
                "{} payments, success rate {}; directions below {} of capacity, earliest first:",
                output.summary.payments,
                pct(output.summary.success_rate),
                pct(scenario.params.depletion_threshold)
            );
            print!(
                "{}",
                depletion_text(&output.depletion, top, &scenario.params.unit)
            );
            Ok(())
        }
        Command::Fees {
            input,
            hub,
            base_fee,
            fee_ppm,
        } => {
            let scenario = input.load()?;
            let hub = hub_arg(&scenario, hub.as_deref())?;
            let bases: Vec<Option<Amount>> = if base_fee.is_empty() {
                vec![None]
            } else {
                base_fee.iter().map(|b| Some(Amount(*b))).collect()
            };
            let ppms: Vec<Option<u32>> = if fee_ppm.is_empty() {
                vec![None]
            } else {
                fee_ppm.iter().map(|p| Some(*p)).collect()
            };
            let settings: Vec<_> = bases
                .iter()
                .flat_map(|b| ppms.iter().map(move |p| (*b, *p)))
                .filter(|s| *s != (None, None))
                .collect();
            if settings.is_empty() {
                bail!("give --base-fee and/or --fee-ppm values to compare");
            }
            let trials = fee_sweep(&scenario, hub, &settings, input.protocol(), input.options())?;
            let unit = &scenario.params.unit;
            println!("hub {}", scenario.network.label(hub));
            println!(
                "  {:>14} {:>9} {:>22} {:>10} {:>10} {:>10} {:>22}",
                "base fee",
                "ppm",
                "fees earned",
                "forwarded",
                "via hub",
                "overall",
                "fees paid (all)"
            );
            for (i, t) in trials.iter().enumerate() {
                let f = |o: Option<String>| o.unwrap_or_else(|| "as given".into());
                println!(
                    "{} {:>14} {:>9} {:>22} {:>10} {:>10} {:>10} {:>22}",
                    if i == 0 { "*" } else { " " },
                    f(t.base_fee.map(|b| b.0.to_string())),
                    f(t.fee_ppm.map(|p| p.to_string())),
                    display_amount(t.fees_earned.0, unit),
                    t.forwarded,
                    pct(t.success_rate_via_hub),
                    pct(t.success_rate),
                    display_amount(t.fees_paid.0, unit)
                );
            }
            println!("(* the scenario as given)");
            Ok(())
        }
        Command::Virtual {
            input,
            peers,
            fund_a,
            fund_b,
            via,
            open_fee_base,
            open_fee_ppm,
        } => {
            let scenario = input.load()?;
            let mut policy = htlc::vchan::VirtualPolicy::default();
            if let Some(b) = open_fee_base {
                policy.open_fee_base = Amount(b);
            }
            if let Some(p) = open_fee_ppm {
                policy.open_fee_ppm = p;
            }
            let pair = match peers.as_slice() {
                [] => None,
                [a, b] => Some((
                    scenario.network.resolve(a, "--peers")?,
                    scenario.network.resolve(b, "--peers")?,
                )),
                _ => bail!("--peers takes two nodes"),
            };
            let fund = match (fund_a, fund_b) {
                (None, None) => None,
                (a, b) => Some([Amount(a.unwrap_or(0)), Amount(b.unwrap_or(0))]),
            };
            let via = if via.is_empty() {
                None
            } else {
                Some(
                    via.iter()
                        .map(|v| scenario.network.resolve(v, "--via"))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let a = virtual_channel_savings(
                &scenario,
                pair,
                fund,
                via,
                &policy,
                input.protocol(),
                input.options(),
            )?;
            let unit = &scenario.params.unit;
            let amt = |x: u128| display_amount(x, unit);
            println!(
                "virtual channel {} ↔ {}, funded {} / {}",
                a.peers[0],
                a.peers[1],
                amt(a.fund[0].0),
                amt(a.fund[1].0)
            );
            println!("{:<34} {:>22} {:>22}", "", "without", "with");
            let row = |name: &str, x: String, y: String| println!("{name:<34} {x:>22} {y:>22}");
            row(
                "pair: payments",
                a.before.payments.to_string(),
                a.after.payments.to_string(),
            );
            row(
                "pair: succeeded",
                a.before.succeeded.to_string(),
                a.after.succeeded.to_string(),
            );
            row(
                "pair: fees paid",
                amt(a.before.fees_paid.0),
                amt(a.after.fees_paid.0),
            );
            row(
                "pair: HTLC hops",
                a.before.hops.to_string(),
                a.after.hops.to_string(),
            );
            row(
                "network: success rate",
                pct(a.network_before.success_rate),
                pct(a.network_after.success_rate),
            );
            row(
                "network: fees paid",
                amt(a.network_before.fees_paid.0),
                amt(a.network_after.fees_paid.0),
            );
            row(
                "network: locked × time (·s)",
                amt(a.network_before.locked_amount_secs),
                amt(a.network_after.locked_amount_secs),
            );
            row(
                "network: channel updates",
                a.network_before.channel_updates.to_string(),
                a.network_after.channel_updates.to_string(),
            );
            let c = &a.cost;
            println!(
                "its cost over {} hub(s): opening fees {}; {} co-signed updates to open, {} to close, \
                 no gas when all cooperate ({} gas for one leg's sad exit with the channel's close)",
                c.hubs,
                amt(c.open_fee.0),
                c.open_updates,
                c.close_updates,
                c.sad_exit_gas
            );
            let saving = if c.net_saving < 0 {
                format!("-{}", amt(c.net_saving.unsigned_abs()))
            } else {
                amt(c.net_saving.unsigned_abs())
            };
            println!("the pair's fees saved less the opening fees: {saving}");
            Ok(())
        }
        Command::Bench {
            nodes,
            payments,
            expected_payment,
            seed,
            threads: t,
        } => bench(nodes, payments, expected_payment, seed, threads(t)),
        Command::Generate { nodes, seed, out } => {
            if nodes < 2 {
                bail!("--nodes must be at least 2");
            }
            let g = router::generate(&router::GeneratorConfig::new(nodes, seed))?;
            router::io::save_file(&g, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({} nodes, {} channels)",
                out.display(),
                g.node_count(),
                g.channel_count()
            );
            Ok(())
        }
    }
}

fn bench(nodes: usize, payments: u64, expected: u128, seed: u64, threads: usize) -> Result<()> {
    let scenario_json = serde_json::json!({
        "seed": seed,
        "network": {"generate": {"nodes": nodes, "seed": seed}},
        "random_activity": {"expected_payment": expected.to_string()},
        "simulation": {"max_payments": payments}
    });
    let t0 = Instant::now();
    let scenario = Scenario::from_json_str(&scenario_json.to_string(), None)?;
    let setup = t0.elapsed();
    let mut obs = Reporter::new(&scenario, None)?;
    let t1 = Instant::now();
    let output = run(&scenario, Protocol::Fast, RunOptions { threads }, &mut obs)?;
    let elapsed = t1.elapsed();
    obs.done()?;
    let s = &output.summary;
    println!(
        "network: {} nodes, {} channels (generated, seed {seed}) in {:.2} s",
        s.nodes,
        s.channels,
        setup.as_secs_f64()
    );
    println!(
        "payments: {} ({} succeeded, {}), {:.2} attempts and {:.2} hops on average",
        s.payments,
        s.succeeded,
        pct(s.success_rate),
        s.avg_attempts,
        s.avg_hops
    );
    println!(
        "simulated {:.0} virtual s in {:.2} s wall clock with {threads} route-search threads: {:.0} payments/s",
        s.virtual_secs,
        elapsed.as_secs_f64(),
        s.payments as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
