use axum::http::{HeaderValue, StatusCode};
use governor::clock::FakeRelativeClock;

use super::*;

fn limiters(trusted: &[&str]) -> Limiters {
    let trusted = trusted.iter().map(|t| t.parse().unwrap()).collect();
    Limiters::new(&RateLimits::default(), trusted).unwrap()
}

fn forwarded(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
    }
    headers
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
    let limits = limiters(&["10.0.0.1"]);
    let headers = forwarded(&["203.0.113.9"]);
    assert_eq!(
        limits.client_address(ip("198.51.100.7"), &headers),
        ip("198.51.100.7")
    );
}

#[test]
fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
    let limits = limiters(&["10.0.0.0/8"]);
    // The client forged the first hop; the proxies appended the real ones.
    let headers = forwarded(&["6.6.6.6, 203.0.113.9", "10.0.0.2"]);
    assert_eq!(
        limits.client_address(ip("10.0.0.1"), &headers),
        ip("203.0.113.9")
    );

    let ported = forwarded(&["[2001:db8::5]:443, 198.51.100.1:8080"]);
    assert_eq!(
        limits.client_address(ip("10.0.0.1"), &ported),
        ip("198.51.100.1")
    );

    let all_trusted = forwarded(&["10.9.9.9, 10.0.0.3"]);
    assert_eq!(
        limits.client_address(ip("10.0.0.1"), &all_trusted),
        ip("10.9.9.9")
    );

    let garbage = forwarded(&["203.0.113.9, unknown, 10.0.0.3"]);
    assert_eq!(
        limits.client_address(ip("10.0.0.1"), &garbage),
        ip("10.0.0.3")
    );

    assert_eq!(
        limits.client_address(ip("10.0.0.1"), &HeaderMap::new()),
        ip("10.0.0.1")
    );
}

#[test]
fn an_ipv4_mapped_peer_matches_ipv4_proxies() {
    let limits = limiters(&["127.0.0.1"]);
    let headers = forwarded(&["203.0.113.9"]);
    assert_eq!(
        limits.client_address(ip("::ffff:127.0.0.1"), &headers),
        ip("203.0.113.9")
    );
}

#[test]
fn an_exhausted_bucket_says_how_long_to_wait_and_refills() {
    let clock = FakeRelativeClock::default();
    let bucket: Bucket<u8, FakeRelativeClock> = Bucket::new("t", Rate::new(0.5, 2), clock.clone());
    bucket.check(&1).unwrap();
    bucket.check(&1).unwrap();
    let refused = bucket.check(&1).unwrap_err().into_response();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "2");
    bucket.check(&2).unwrap();

    clock.advance(Duration::from_millis(1500));
    let refused = bucket.check(&1).unwrap_err().into_response();
    assert_eq!(refused.headers()["retry-after"], "1", "0.5 s rounds up");
    clock.advance(Duration::from_millis(500));
    bucket.check(&1).unwrap();
}

#[test]
fn full_buckets_are_forgotten_and_busy_ones_kept() {
    let clock = FakeRelativeClock::default();
    let bucket: Bucket<u8, FakeRelativeClock> = Bucket::new("t", Rate::new(1.0, 3), clock.clone());
    bucket.check(&1).unwrap();
    for _ in 0..3 {
        let _ = bucket.check(&2);
    }
    assert_eq!(bucket.len(), 2);
    // governor keeps a key one refill period past full, so look after two.
    clock.advance(Duration::from_secs(2));
    bucket.retain_recent();
    assert_eq!(bucket.len(), 1, "key 1 refilled; key 2 is still short");
    clock.advance(Duration::from_secs(10));
    bucket.retain_recent();
    assert_eq!(bucket.len(), 0);
}

#[test]
fn a_limit_that_is_off_never_refuses() {
    let bucket: Bucket<u8> = Bucket::live("t", Rate::new(0.0, 0));
    for _ in 0..1000 {
        bucket.check(&1).unwrap();
    }
}

#[test]
fn ipv6_clients_share_a_bucket_per_64() {
    let config = RateLimits {
        per_address: Rate::new(0.01, 1),
        ..RateLimits::default()
    };
    let limits = Limiters::new(&config, Vec::new()).unwrap();
    limits
        .check_address(AddressKind::Client, ip("2001:db8:1:2::1"))
        .unwrap();
    assert!(
        limits
            .check_address(AddressKind::Client, ip("2001:db8:1:2::ffff"))
            .is_err()
    );
    limits
        .check_address(AddressKind::Client, ip("2001:db8:1:3::1"))
        .unwrap();
}
