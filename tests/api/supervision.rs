//! Supervision: a user actor that fails is respawned from storage; its user logs in
//! afterwards with the latest authKey, and other users never notice.

use std::{
    cell::RefCell,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{TestApp, code, eventually};

#[tokio::test]
async fn a_crashed_user_actor_is_respawned_and_no_other_user_notices() {
    let app = Arc::new(TestApp::spawn().await);
    let mut a = app.new_device("Alpha").await;
    let mut b = app.new_device("Bravo").await;

    // Both actors are live: a login loads each.
    for d in [&mut a, &mut b] {
        let (status, resp) = app.login(d).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        d.take(&resp);
    }
    let a_token_before = a.token.clone();

    // B keeps logging in, before, during and after A's crash; every login must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let b_logins = Arc::new(AtomicUsize::new(0));
    let b_loop = {
        let (app, stop, b_logins, mut b) = (app.clone(), stop.clone(), b_logins.clone(), b);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, resp) = app.login(&b).await;
                assert_eq!(status, StatusCode::OK, "B noticed: {resp}");
                b.take(&resp);
                b_logins.fetch_add(1, Ordering::SeqCst);
            }
            b
        })
    };
    eventually("B has logged in a few times", || {
        let n = b_logins.clone();
        async move { n.load(Ordering::SeqCst) >= 3 }
    })
    .await;

    let a_user = Uuid::parse_str(&a.user_uuid).unwrap();
    assert!(
        app.engine().crash_user_actor(a_user),
        "A's actor was not live"
    );

    // A logs in with its latest authKey once the supervisor has respawned the actor.
    let granted = RefCell::new(None);
    eventually("A logs in after the crash", || {
        let (app, a, granted) = (&app, &a, &granted);
        async move {
            let (status, resp) = app.login(a).await;
            match status {
                StatusCode::OK => {
                    *granted.borrow_mut() = Some(resp);
                    true
                }
                // Only "busy" may be seen while the actor is replaced; never a refusal.
                StatusCode::SERVICE_UNAVAILABLE => false,
                _ => panic!("A's login after the crash: {status} {resp}"),
            }
        }
    })
    .await;
    a.take(&granted.into_inner().unwrap());

    // A's session survived the crash: the token issued before it still validates.
    let (status, resp) = app
        .bearer(Method::GET, "/jwt/validate", &a_token_before, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    let seen = b_logins.load(Ordering::SeqCst);
    eventually("B logs in after A's recovery", || {
        let n = b_logins.clone();
        async move { n.load(Ordering::SeqCst) >= seen + 3 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let b = b_loop.await.unwrap();

    // B's token validates, and B's and A's next logins succeed.
    let (status, resp) = app
        .bearer(Method::GET, "/jwt/validate", &b.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    for d in [&a, &b] {
        let (status, resp) = app.login(d).await;
        assert_eq!(status, StatusCode::OK, "{}: {resp}", d.username);
    }

    // The authKey A held before its last login is stale, as after any rotation.
    let (status, resp) = app.login(&a).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-HENG-1001"),
        "{resp}"
    );
}
