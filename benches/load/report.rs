//! Figures of one phase (logins, or OTP pairs): the server's counters and CPU times read before
//! and after it, and the table line they make.

use std::time::Instant;

use crate::now;
use crate::server::{Server, cpu_seconds, memory};

const FSYNCS: &str = "latchkey_store_fsyncs_total";
const BATCHES: &str = "latchkey_store_batches_total";
const USER_ACTORS: &str = "latchkey_live_user_actors";
const SESSION_ACTORS: &str = "latchkey_live_session_actors";

/// Column titles of the login phases, aligned with [`Row::print`].
pub(crate) const HEADER: &str = "conns  logins/s  p50 ms  p99 ms  max ms  errors  fsyncs/s  \
                                 logins/fsync  batches/fsync  server cpu  driver cpu  RSS MiB";

/// Column titles of the OTP phases (one pair: an OTP issued, then validated), aligned likewise.
pub(crate) const OTP_HEADER: &str = "conns   pairs/s  p50 ms  p99 ms  max ms  errors  fsyncs/s   \
                                     pairs/fsync  batches/fsync  server cpu  driver cpu  RSS MiB";

/// Counters and CPU times read around a phase, so that the phase's own share can be computed.
#[derive(Debug)]
pub(crate) struct Snapshot {
    at: Instant,
    fsyncs: Option<f64>,
    batches: Option<f64>,
    server_cpu: Option<f64>,
    driver_cpu: Option<f64>,
    rss: Option<f64>,
}

impl Snapshot {
    /// Reads `/metrics` (absent counters stay `None` and print as n/a) and both processes' CPU.
    pub(crate) async fn take(client: &reqwest::Client, server: &Server) -> Self {
        let metrics = fetch_metrics(client, &server.target.url).await;
        Snapshot {
            at: now(),
            fsyncs: metrics.as_deref().and_then(|text| sample_sum(text, FSYNCS)),
            batches: metrics
                .as_deref()
                .and_then(|text| sample_sum(text, BATCHES)),
            server_cpu: cpu_seconds(&server.pid.to_string()),
            driver_cpu: cpu_seconds("self"),
            rss: memory(server.pid).map(|(_peak, current)| current),
        }
    }
}

async fn fetch_metrics(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(format!("{url}/metrics")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// Live actors, for a memory report line: RSS should follow them, not the registered users.
pub(crate) async fn live_actors(client: &reqwest::Client, server: &Server) -> String {
    let metrics = fetch_metrics(client, &server.target.url).await;
    let gauge = |name| metrics.as_deref().and_then(|text| sample_sum(text, name));
    let users = show(gauge(USER_ACTORS), 0);
    format!(
        "live actors: {users} user, {} session",
        show(gauge(SESSION_ACTORS), 0)
    )
}

/// The sum over all series of a Prometheus counter or gauge, whatever its labels.
fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let values = text.lines().filter_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = match rest.strip_prefix('{') {
            Some(labelled) => labelled.rsplit_once('}')?.1,
            None if rest.starts_with(' ') => rest,
            None => return None,
        };
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    values.fold(None, |sum, value| Some(sum.unwrap_or(0.0) + value))
}

/// One line of the results table; an operation is a login or an OTP pair.
#[derive(Debug)]
pub(crate) struct Row {
    connections: usize,
    per_second: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    errors: u64,
    fsyncs_per_second: Option<f64>,
    per_fsync: Option<f64>,
    batches_per_fsync: Option<f64>,
    server_cpu: Option<f64>,
    driver_cpu: Option<f64>,
    /// The server's resident memory at the end of the phase: a leak shows as growth per phase.
    rss: Option<f64>,
}

impl Row {
    /// `latencies` are those of the phase's successful operations, sorted, in microseconds.
    pub(crate) fn new(
        connections: usize,
        latencies: &[u32],
        errors: u64,
        before: &Snapshot,
        after: &Snapshot,
    ) -> Self {
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let done = latencies.len() as f64;
        let delta = |field: fn(&Snapshot) -> Option<f64>| Some(field(after)? - field(before)?);
        let fsyncs = delta(|s| s.fsyncs);
        let per_fsync = |count: f64| fsyncs.filter(|&n| n > 0.0).map(|n| count / n);
        let cpu_percent = |cpu: f64| 100.0 * cpu / seconds;
        Row {
            connections,
            per_second: done / seconds,
            p50: percentile(latencies, 0.50),
            p99: percentile(latencies, 0.99),
            max: percentile(latencies, 1.0),
            errors,
            fsyncs_per_second: fsyncs.map(|n| n / seconds),
            per_fsync: per_fsync(done),
            batches_per_fsync: delta(|s| s.batches).and_then(per_fsync),
            server_cpu: delta(|s| s.server_cpu).map(cpu_percent),
            driver_cpu: delta(|s| s.driver_cpu).map(cpu_percent),
            rss: after.rss,
        }
    }

    pub(crate) fn print(&self) {
        println!(
            "{:>5}  {:>8.0}  {:>6}  {:>6}  {:>6}  {:>6}  {:>8}  \
             {:>12}  {:>13}  {:>9}%  {:>9}%  {:>7}",
            self.connections,
            self.per_second,
            show(self.p50, 2),
            show(self.p99, 2),
            show(self.max, 1),
            self.errors,
            show(self.fsyncs_per_second, 0),
            show(self.per_fsync, 1),
            show(self.batches_per_fsync, 1),
            show(self.server_cpu, 0),
            show(self.driver_cpu, 0),
            show(self.rss, 0),
        );
    }
}

/// Nearest-rank percentile of sorted microsecond latencies, in milliseconds.
fn percentile(sorted: &[u32], fraction: f64) -> Option<f64> {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    let micros = sorted.get(rank.clamp(1, sorted.len().max(1)) - 1)?;
    Some(f64::from(*micros) / 1000.0)
}

fn show(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |value| format!("{value:.decimals$}"))
}
