//! Load driver: registers users, then measures concurrent PIN logins (and, with `--otp`, OTP
//! generate+validate pairs) against a release build of `latchkey serve`, over real HTTP/1.1 on
//! loopback.
//!
//! The server runs as a child process rather than in-process so that the figures include what a
//! client pays (TCP, HTTP parsing, the group-commit fsync behind every acknowledged login) and so
//! that its RSS and CPU can be read from `/proc` apart from the driver's. Every device keeps the
//! authKey its last login returned, as a real client must, because the server rotates it.
//!
//! Run `cargo bench --bench load -- --help` for the options; the defaults register 1,000 users
//! and run 10 s of logins at 1, 16 and 64 connections with the server's default durability.
//! `--otp` adds as many OTP phases on the same users, with the per-target OTP rate limits off.

// Cargo would take `benches/<name>.rs` for a bench target of its own, so the modules live under
// `load/` and are named by path.
#[path = "load/api.rs"]
mod api;
#[path = "load/report.rs"]
mod report;
#[path = "load/server.rs"]
mod server;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::api::{Device, Failures};
use crate::report::{Row, Snapshot};
use crate::server::{Server, Target, http_client};

/// Options; `cargo bench` appends `--bench` to every bench binary, so that flag is accepted.
#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Concurrent PIN logins (and OTP pairs) against a release build of latchkey"
)]
struct Args {
    /// Users to register (one device each) for the login and OTP phases; 0 skips those phases.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Length of each login phase and each OTP phase, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connection counts, one login phase (and one OTP phase) each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    connections: Vec<usize>,
    /// After the login phases, OTP phases of as long on the same users: each connection has an
    /// OTP issued for one of its users and validates it, again and again. The server then runs
    /// with the per-user OTP rate limits (otp_generate, otp_validate) turned off.
    #[arg(long)]
    otp: bool,
    /// Connections used while registering users.
    #[arg(long, default_value_t = 64)]
    register_connections: usize,
    /// Server durability mode, written to a config file; without it, the server's default (sync).
    #[arg(long, value_parser = ["sync", "buffered"])]
    durability: Option<String>,
    /// Afterwards, register this many users on a fresh server and report its RSS.
    #[arg(long, default_value_t = 0)]
    rss_users: usize,
    /// Seconds to wait before reading RSS again after that registration (idle actors stop).
    #[arg(long, default_value_t = 0)]
    rss_settle: u64,
    /// Server binary [default: the one cargo built with this bench, else target/release].
    #[arg(long, env = "LK_BIN")]
    bin: Option<PathBuf>,
    /// Keep each server's data dir and log instead of removing them.
    #[arg(long)]
    keep: bool,
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
}

/// Errors print as one chain of contexts: a backtrace says nothing to someone running a bench.
fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(&args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let bin = server::server_binary(args.bin.as_deref())?;
    let mode = args
        .durability
        .as_deref()
        .unwrap_or("sync (server default)");
    // Other work on these cores skews every figure; say so up front.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("n/a").to_owned();
    println!(
        "server {}, durability {mode}, load average {load}",
        bin.display()
    );
    if args.otp && args.users > 0 {
        println!(
            "--otp: the server runs with the per-user OTP rate limits off (burst 0), also \
             during the login phases: {}",
            OTP_LIMITS_OFF.trim_end().replace('\n', "; ")
        );
    }

    if args.users > 0 {
        login_bench(args, &bin).await?;
    }
    if args.rss_users > 0 {
        rss_bench(args, &bin).await?;
    }
    Ok(())
}

/// The driver's only clock read, in one place as the project's clock rule asks.
#[allow(clippy::disallowed_methods)] // a load driver measures wall time; there is nothing to fake
fn now() -> Instant {
    Instant::now()
}

/// The `[rate_limits]` section of `--otp`: OTPs for one username are otherwise limited to a burst
/// of 20 refilling at 0.5/s (generation) and 2/s (validation), which a bench exhausts at once.
const OTP_LIMITS_OFF: &str = "[rate_limits]\n\
                              otp_generate = { per_second = 0, burst = 0 }\n\
                              otp_validate = { per_second = 0, burst = 0 }\n";

/// The server's config file, or none when every setting is the server's default.
fn server_config(durability: Option<&str>, otp_limits_off: bool) -> Option<String> {
    let mut text = String::new();
    if let Some(mode) = durability {
        let _ = writeln!(text, "durability = \"{mode}\"");
    }
    if otp_limits_off {
        text.push_str(OTP_LIMITS_OFF);
    }
    (!text.is_empty()).then_some(text)
}

async fn login_bench(args: &Args, bin: &Path) -> Result<()> {
    let config = server_config(args.durability.as_deref(), args.otp);
    let server = Server::start(bin, config.as_deref()).await?;
    let mut devices = register(&server, args.users, args.register_connections).await?;
    println!("server RSS after registration: {}", server.memory());
    println!(
        "\n{} s login phases; latency of successful logins; CPU in % of one core",
        args.seconds
    );
    println!("{}", report::HEADER);

    for &connections in &args.connections {
        let (row, tally) = login_phase(&server, devices, connections, args.seconds).await?;
        row.print();
        if !tally.failures.is_empty() {
            println!("       errors{}", describe_failures(&tally.failures));
        }
        devices = tally.devices;
    }

    let stale = devices.iter().filter(|device| !device.usable).count();
    if stale > 0 {
        println!("{stale} devices lost their authKey (refused as stale) and were skipped");
    }
    let actors = report::live_actors(&http_client()?, &server).await;
    println!(
        "server RSS after the login phases: {}; {actors}",
        server.memory()
    );

    if args.otp {
        let usernames: Vec<String> = devices.into_iter().map(|device| device.username).collect();
        otp_bench(args, &server, &usernames).await?;
    }
    server.stop(args.keep).await
}

async fn otp_bench(args: &Args, server: &Server, usernames: &[String]) -> Result<()> {
    println!(
        "\n{} s OTP phases over the same {} users, purpose \"{OTP_PURPOSE}\"; a pair is an OTP \
         issued then validated (two requests, one after the other); latency of successful pairs",
        args.seconds,
        usernames.len()
    );
    println!("{}", report::OTP_HEADER);
    for &connections in &args.connections {
        let (row, failures) = otp_phase(server, usernames, connections, args.seconds).await?;
        row.print();
        if !failures.is_empty() {
            println!("       errors{}", describe_failures(&failures));
        }
    }
    let actors = report::live_actors(&http_client()?, server).await;
    println!(
        "server RSS after the OTP phases: {}; {actors}",
        server.memory()
    );
    Ok(())
}

async fn rss_bench(args: &Args, bin: &Path) -> Result<()> {
    println!(
        "\nRSS: registering {} users on a fresh server",
        args.rss_users
    );
    let config = server_config(args.durability.as_deref(), false);
    let server = Server::start(bin, config.as_deref()).await?;
    println!("server RSS at start: {}", server.memory());
    let devices = register(&server, args.rss_users, args.register_connections).await?;
    let client = http_client()?;
    let actors = report::live_actors(&client, &server).await;
    let registered = devices.len();
    println!(
        "server RSS after {registered} registered users: {}; {actors}",
        server.memory()
    );

    if args.rss_settle > 0 {
        tokio::time::sleep(Duration::from_secs(args.rss_settle)).await;
        let actors = report::live_actors(&client, &server).await;
        println!(
            "server RSS {} s later: {}; {actors}",
            args.rss_settle,
            server.memory()
        );
    }
    server.stop(args.keep).await
}

// == Registration ==

/// Registers `count` users with a device each and prints how long it took.
async fn register(server: &Server, count: usize, connections: usize) -> Result<Vec<Device>> {
    let started = now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| tokio::spawn(register_worker(server.target.clone(), next.clone(), count)))
        .collect();
    let mut devices = Vec::with_capacity(count);
    let mut failures = Failures::new();
    for worker in workers {
        let (share, failed) = worker.await.context("a registration worker panicked")??;
        devices.extend(share);
        merge_failures(&mut failures, failed);
    }

    let took = started.elapsed().as_secs_f64();
    let rate = devices.len() as f64 / took;
    println!(
        "registered {} of {count} users with a device each in {took:.1} s ({rate:.0}/s, {} \
         connections){}",
        devices.len(),
        connections.max(1),
        describe_failures(&failures)
    );
    if devices.is_empty() {
        bail!("no user could be registered");
    }
    Ok(devices)
}

/// Takes user indexes from the shared counter until all `count` are taken.
async fn register_worker(
    target: Arc<Target>,
    next: Arc<AtomicUsize>,
    count: usize,
) -> Result<(Vec<Device>, Failures)> {
    let client = http_client()?;
    let mut devices = Vec::new();
    let mut failures = Failures::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= count {
            return Ok((devices, failures));
        }
        match api::register(&client, &target, index).await {
            Ok(device) => devices.push(device),
            Err(failure) => *failures.entry(failure).or_default() += 1,
        }
    }
}

fn merge_failures(into: &mut Failures, from: Failures) {
    for (label, count) in from {
        *into.entry(label).or_default() += count;
    }
}

fn describe_failures(failures: &Failures) -> String {
    failures
        .iter()
        .fold(String::new(), |mut text, (label, count)| {
            let _ = write!(text, "; {count} × {label}");
            text
        })
}

// == Login phases ==

/// What the login workers of a phase saw, merged; the devices carry their latest authKeys.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of each successful login, in microseconds.
    latencies: Vec<u32>,
    failures: Failures,
    devices: Vec<Device>,
}

/// Splits the devices among `connections` workers, each on its own connection, for `seconds`.
async fn login_phase(
    server: &Server,
    devices: Vec<Device>,
    connections: usize,
    seconds: u64,
) -> Result<(Row, Tally)> {
    let workers = connections.clamp(1, devices.len().max(1));
    let mut shares: Vec<Vec<Device>> = (0..workers).map(|_| Vec::new()).collect();
    for (index, device) in devices.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(index % workers) {
            share.push(device);
        }
    }

    let client = http_client()?;
    let before = Snapshot::take(&client, server).await;
    let deadline = now() + Duration::from_secs(seconds);
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| tokio::spawn(login_worker(server.target.clone(), share, deadline)))
        .collect();
    let mut tally = Tally::default();
    for handle in handles {
        let share = handle.await.context("a login worker panicked")??;
        tally.latencies.extend(share.latencies);
        tally.devices.extend(share.devices);
        merge_failures(&mut tally.failures, share.failures);
    }
    let after = Snapshot::take(&client, server).await;

    tally.latencies.sort_unstable();
    let errors = tally.failures.values().sum();
    Ok((
        Row::new(workers, &tally.latencies, errors, &before, &after),
        tally,
    ))
}

/// Logs the worker's own devices in, round robin, until the deadline.
async fn login_worker(
    target: Arc<Target>,
    devices: Vec<Device>,
    deadline: Instant,
) -> Result<Tally> {
    let client = http_client()?;
    let mut tally = Tally {
        devices,
        ..Tally::default()
    };
    let mut cursor = 0;
    while now() < deadline {
        let Some(device) = next_usable(&mut tally.devices, &mut cursor) else {
            break;
        };
        let started = now();
        match api::login(&client, &target, device).await {
            Ok(auth_key) => {
                device.auth_key = auth_key;
                let micros = started.elapsed().as_micros();
                tally
                    .latencies
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Err(failure) => {
                device.usable &= !failure.contains("AN-HENG-1001");
                *tally.failures.entry(failure).or_default() += 1;
            }
        }
    }
    Ok(tally)
}

fn next_usable<'a>(devices: &'a mut [Device], cursor: &mut usize) -> Option<&'a mut Device> {
    let count = devices.len();
    for _ in 0..count {
        let index = *cursor % count;
        *cursor += 1;
        if devices.get(index).is_some_and(|device| device.usable) {
            return devices.get_mut(index);
        }
    }
    None
}

// == OTP phases ==

/// The purpose every OTP of the bench is issued for.
const OTP_PURPOSE: &str = "bench";

/// What the OTP workers of a phase saw, merged.
#[derive(Debug, Default)]
struct OtpTally {
    /// Latency of each successful pair (issue, then validate), in microseconds.
    latencies: Vec<u32>,
    failures: Failures,
}

/// Splits the users among `connections` workers, each on its own connection, for `seconds`. A
/// user belongs to one worker only, so that no worker's OTP supersedes another's.
async fn otp_phase(
    server: &Server,
    usernames: &[String],
    connections: usize,
    seconds: u64,
) -> Result<(Row, Failures)> {
    let workers = connections.clamp(1, usernames.len().max(1));
    let mut shares: Vec<Vec<String>> = (0..workers).map(|_| Vec::new()).collect();
    for (index, username) in usernames.iter().enumerate() {
        if let Some(share) = shares.get_mut(index % workers) {
            share.push(username.clone());
        }
    }

    let client = http_client()?;
    let before = Snapshot::take(&client, server).await;
    let deadline = now() + Duration::from_secs(seconds);
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| tokio::spawn(otp_worker(server.target.clone(), share, deadline)))
        .collect();
    let mut tally = OtpTally::default();
    for handle in handles {
        let share = handle.await.context("an OTP worker panicked")??;
        tally.latencies.extend(share.latencies);
        merge_failures(&mut tally.failures, share.failures);
    }
    let after = Snapshot::take(&client, server).await;

    tally.latencies.sort_unstable();
    let errors = tally.failures.values().sum();
    Ok((
        Row::new(workers, &tally.latencies, errors, &before, &after),
        tally.failures,
    ))
}

/// Issues and validates OTPs for the worker's own users, round robin, until the deadline.
async fn otp_worker(
    target: Arc<Target>,
    usernames: Vec<String>,
    deadline: Instant,
) -> Result<OtpTally> {
    let client = http_client()?;
    let mut tally = OtpTally::default();
    for username in usernames.iter().cycle() {
        if now() >= deadline {
            break;
        }
        let started = now();
        match api::otp_pair(&client, &target, username, OTP_PURPOSE).await {
            Ok(()) => {
                let micros = started.elapsed().as_micros();
                tally
                    .latencies
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Err(failure) => *tally.failures.entry(failure).or_default() += 1,
        }
    }
    Ok(tally)
}
