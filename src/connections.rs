//! Accepting connections: HTTP/1.1 served by hyper with a header-read deadline, and a cap on
//! the connections one client address holds. A client that opens connections and then stalls
//! (partial headers, an idle keep-alive) must cost a bounded amount and go away on its own,
//! or a single address could starve every other client of sockets.

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
        .keep_alive(true);
    let open = OpenConnections::new(limits.per_address);
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

        // A trusted proxy carries many clients on its connections; it is not capped.
        let slot = if proxies.is_trusted(peer.ip()) {
            None
        } else {
            match open.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(client = %address_bucket(peer.ip()), "too many connections");
                    continue;
                }
            }
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

/// Open connections per client address.
#[derive(Debug, Clone)]
struct OpenConnections {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    cap: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    bucket: IpAddr,
}

impl OpenConnections {
    fn new(cap: usize) -> Self {
        Self {
            counts: Arc::default(),
            cap,
        }
    }

    fn admit(&self, peer: IpAddr) -> Option<Slot> {
        let bucket = address_bucket(peer);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(bucket).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.counts.clone(),
            bucket,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.bucket) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_cap_and_a_place_back_when_one_closes() {
        let open = OpenConnections::new(2);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let first = open.admit(peer).unwrap();
        let _second = open.admit(peer).unwrap();
        assert!(open.admit(peer).is_none());
        assert!(open.admit("192.0.2.2".parse().unwrap()).is_some());

        drop(first);
        assert!(open.admit(peer).is_some());
    }

    #[test]
    fn an_ipv6_subscriber_s_whole_block_counts_as_one() {
        let open = OpenConnections::new(1);
        let _held = open.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(open.admit("2001:db8::ffff:2".parse().unwrap()).is_none());
        assert!(open.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
    }

    #[test]
    fn closed_addresses_leave_nothing_behind() {
        let open = OpenConnections::new(4);
        drop(open.admit("192.0.2.9".parse().unwrap()));
        assert!(open.counts.lock().unwrap().is_empty());
    }
}
