//! Accepting connections: HTTP/1.1 served by hyper with a header-read deadline, a bounded read
//! buffer, and caps on the connections one client address, and everyone together, hold open.
//! A client that opens connections and then stalls (partial headers, an idle keep-alive) must
//! cost a bounded amount and go away on its own, or a few addresses could starve every other
//! client of sockets (file descriptors run out long before memory does).

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo, http::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::{config::address_bucket, http::rate_limit::Limiters};

/// How connections are admitted and read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Time to send a request's headers, an idle kept-alive connection's next one included.
    pub(crate) header_read_timeout: Duration,
    /// Open connections per client address (IPv6: per /64).
    pub(crate) per_address: usize,
    /// Open connections in all.
    pub(crate) total: usize,
}

/// Largest read buffer of a connection, and so of a request's head: hyper's default (about
/// 400 KiB) let each stalled connection hold that much; no request of this API needs a tenth.
const MAX_BUFFER: usize = 64 * 1024;

/// File descriptors kept for the store, the listener and the log, out of the open-file limit.
const RESERVED_FILES: u64 = 512;

/// The configured connection cap, lowered if the process's open-file limit cannot hold it
/// (accepting would then fail for everyone, however fairly the connections were shared).
pub(crate) fn fit_to_file_limit(configured: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if room >= configured {
        return configured;
    }
    let fitted = room.max(64);
    tracing::warn!(
        configured,
        fitted,
        open_file_limit = soft,
        "max_connections lowered to fit the open-file limit (raise it: ulimit -n, LimitNOFILE=)"
    );
    fitted
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// open connection to finish its request in progress and close, and waits for them.
///
/// Limitation: HTTP/1.1 only. Prior-knowledge HTTP/2 in clear text, which axum's own server
/// also accepted, needs a version sniff that has no deadline of its own; TLS (and so ALPN
/// HTTP/2) is a reverse proxy's job here anyway.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    proxies: Arc<Limiters>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUFFER)
        // A client may send its request and shut its side (`nc -N`): it still gets the answer.
        .half_close(true)
        .keep_alive(true);
    let open = OpenConnections::new(limits.per_address, limits.total);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };

        // A trusted proxy carries many clients on its connections: only the total counts it.
        let Some(slot) = open.admit(peer.ip(), !proxies.is_trusted(peer.ip())) else {
            tracing::debug!(client = %address_bucket(peer.ip()), "too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);

        // Per-address rate limits read the peer from ConnectInfo, as axum's server set it.
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    graceful.shutdown().await;
}

/// Accept fails for reasons of one connection (reset before it was taken) and of the process
/// (out of file descriptors); for the latter, retrying at once would spin.
async fn pause_after(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};

    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Open connections, per client address and in all.
#[derive(Debug, Clone)]
struct OpenConnections {
    counts: Arc<Mutex<Counts>>,
    per_address: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    counts: Arc<Mutex<Counts>>,
    /// The address it counts against, unless exempt.
    bucket: Option<IpAddr>,
}

impl OpenConnections {
    fn new(per_address: usize, total: usize) -> Self {
        Self {
            counts: Arc::default(),
            per_address,
            total,
        }
    }

    /// A place for a connection from `peer`, counted against its address when `capped`.
    fn admit(&self, peer: IpAddr, capped: bool) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.total {
            return None;
        }
        let bucket = capped.then(|| address_bucket(peer));
        if let Some(bucket) = bucket {
            let count = counts.by_address.entry(bucket).or_default();
            if *count >= self.per_address {
                return None;
            }
            *count += 1;
        }
        counts.total += 1;
        Some(Slot {
            counts: self.counts.clone(),
            bucket,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(bucket) = self.bucket
            && let Some(count) = counts.by_address.get_mut(&bucket)
        {
            *count -= 1;
            if *count == 0 {
                counts.by_address.remove(&bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_cap_and_a_place_back_when_one_closes() {
        let open = OpenConnections::new(2, 100);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let first = open.admit(peer, true).unwrap();
        let _second = open.admit(peer, true).unwrap();
        assert!(open.admit(peer, true).is_none());
        assert!(open.admit("192.0.2.2".parse().unwrap(), true).is_some());

        drop(first);
        assert!(open.admit(peer, true).is_some());
    }

    #[test]
    fn an_ipv6_subscriber_s_whole_block_counts_as_one() {
        let open = OpenConnections::new(1, 100);
        let _held = open.admit("2001:db8::1".parse().unwrap(), true).unwrap();
        assert!(
            open.admit("2001:db8::ffff:2".parse().unwrap(), true)
                .is_none()
        );
        assert!(
            open.admit("2001:db8:0:1::1".parse().unwrap(), true)
                .is_some()
        );
    }

    #[test]
    fn the_total_caps_every_address_and_exempt_ones_too() {
        let open = OpenConnections::new(2, 3);
        let held: Vec<_> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .iter()
            .map(|a| open.admit(a.parse().unwrap(), true).unwrap())
            .collect();
        assert!(open.admit("192.0.2.4".parse().unwrap(), true).is_none());
        assert!(
            open.admit("10.0.0.1".parse().unwrap(), false).is_none(),
            "a proxy too"
        );

        drop(held);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let _through_proxy: Vec<_> = (0..3).map(|_| open.admit(proxy, false).unwrap()).collect();
    }

    #[test]
    fn closed_connections_leave_nothing_behind() {
        let open = OpenConnections::new(4, 4);
        drop(open.admit("192.0.2.9".parse().unwrap(), true));
        drop(open.admit("10.0.0.1".parse().unwrap(), false));
        let counts = open.counts.lock().unwrap();
        assert!(counts.by_address.is_empty() && counts.total == 0);
    }
}
