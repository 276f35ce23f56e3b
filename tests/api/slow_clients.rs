//! Clients that open connections and stall: they are cut off by deadlines, capped per
//! address, and never hold the places the other clients' requests are served in.

use std::time::Duration;

use latchkey::BASE;
use serde_json::Value;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::helpers::{TestApp, code, read_until};

/// Guards against a hang; a right server is far quicker. Not a timing assertion.
const GUARD: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = TestApp::spawn_with(|c| c.header_read_timeout_secs = 1).await;

    let mut stalled = connect(&app).await;
    stalled
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: latchkey\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stalled).await;
    assert!(
        !answer.contains("200 OK"),
        "half a request must not be served: {answer:?}"
    );

    let mut silent = connect(&app).await;
    let answer = read_until_closed(&mut silent).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );

    assert_eq!(
        get_live(&app).await,
        200,
        "the server serves others as before"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_deadline() {
    let app = TestApp::spawn_with(|c| c.header_read_timeout_secs = 1).await;
    let mut stream = connect(&app).await;

    stream.write_all(&live_request()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn a_stalled_body_does_not_hold_a_place_in_flight() {
    // One place only, and a body deadline far beyond the guard: if the stalled request held
    // the place, the health check below would wait for it and the guard would fail.
    let app = TestApp::spawn_with(|c| {
        c.max_in_flight = 1;
        c.body_read_timeout_secs = 600;
    })
    .await;
    let stalled = stalled_sign_up(&app).await;

    for _ in 0..3 {
        assert_eq!(get_live(&app).await, 200);
    }
    drop(stalled);
}

#[tokio::test]
async fn a_body_that_stops_short_gets_408_in_the_envelope() {
    let app = TestApp::spawn_with(|c| c.body_read_timeout_secs = 1).await;
    let mut stalled = stalled_sign_up(&app).await;

    let answer = read_until_closed(&mut stalled).await;

    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(code(&body), "AN-HTTP-1008", "{body}");
    assert_eq!(body["responseStatus"]["status"], "ERROR");
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections_per_address = 3;
        c.header_read_timeout_secs = 600;
    })
    .await;

    assert_capped_at(&app, 3).await;
}

#[tokio::test]
async fn the_server_holds_at_most_max_connections_in_all() {
    let app = TestApp::spawn_with(|c| {
        c.max_connections = 2;
        c.header_read_timeout_secs = 600;
    })
    .await;

    assert_capped_at(&app, 2).await;
}

/// `cap` kept-alive connections are served, one more is closed unserved, and closing one
/// lets the next in.
async fn assert_capped_at(app: &TestApp, cap: usize) {
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut stream = connect(app).await;
        stream.write_all(&live_request()).await.unwrap();
        assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }

    let mut over = connect(app).await;
    let _ = over.write_all(&live_request()).await;
    let answer = read_until_closed(&mut over).await;
    assert!(
        answer.is_empty(),
        "one over the cap is closed unserved: {answer:?}"
    );

    // A closed connection gives its place back (once the server has seen it close).
    drop(held.pop());
    let served = async {
        loop {
            let mut stream = connect(app).await;
            let _ = stream.write_all(&live_request()).await;
            if read_answer(&mut stream).await.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(GUARD, served)
        .await
        .expect("a freed place is given to the next connection");
}

#[tokio::test]
async fn a_client_that_shuts_its_side_after_the_request_still_gets_the_answer() {
    let app = TestApp::spawn().await;
    let mut stream = connect(&app).await;

    stream.write_all(&live_request()).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_until_closed(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

fn live_request() -> Vec<u8> {
    b"GET /health/live HTTP/1.1\r\nHost: latchkey\r\n\r\n".to_vec()
}

/// A connection on which a sign-up declared 200 body bytes and sent only 20.
async fn stalled_sign_up(app: &TestApp) -> TcpStream {
    let mut request = format!(
        "POST {BASE}/self-service/user HTTP/1.1\r\nHost: latchkey\r\n\
         Content-Type: application/json\r\nx-api-key: {}\r\nContent-Length: 200\r\n\r\n",
        app.api_key
    )
    .into_bytes();
    request.extend([b' '; 20]);
    let mut stream = connect(app).await;
    stream.write_all(&request).await.unwrap();
    stream
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let received = tokio::time::timeout(GUARD, read_until(stream, |_| false))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// The first answer's head (empty if the connection closed first); the connection stays open.
async fn read_answer(stream: &mut TcpStream) -> String {
    let head_read = |bytes: &[u8]| bytes.windows(4).any(|w| w == b"\r\n\r\n");
    let received = tokio::time::timeout(GUARD, read_until(stream, head_read))
        .await
        .expect("an answer or a close");
    String::from_utf8_lossy(&received).into_owned()
}

async fn get_live(app: &TestApp) -> u16 {
    let call = app.client.get(format!("{}/health/live", app.base)).send();
    let response = tokio::time::timeout(GUARD, call)
        .await
        .expect("the server answers while another client stalls")
        .unwrap();
    response.status().as_u16()
}
