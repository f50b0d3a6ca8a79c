//! Distributed locks: mutual exclusion, fencing, renewal and release by token.

mod common;

use std::time::Duration;

use common::RedisServer;
use redq::lock::{try_acquire, Acquired};

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn only_one_of_many_concurrent_acquirers_gets_the_lock() {
    let redis = RedisServer::start();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = redq::store::Store::connect(&redis.url(), "redq")
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            try_acquire(&store, "cron", TTL).await.unwrap()
        }));
    }
    let mut held = 0;
    for t in tasks {
        match t.await.unwrap() {
            Acquired::Held(g) => {
                held += 1;
                assert_eq!(g.fence(), 1);
            }
            Acquired::Busy { expires_in } => {
                assert!(expires_in <= TTL && expires_in > Duration::ZERO)
            }
        }
    }
    assert_eq!(held, 1);
}

#[tokio::test]
async fn fencing_numbers_grow_and_a_lapsed_holder_cannot_renew_or_release() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let store = client.store();
    let Acquired::Held(first) = try_acquire(store, "job-x", TTL).await.unwrap() else {
        panic!("free lock")
    };
    assert!(first.renew(TTL).await.unwrap());
    // The TTL lapses (as if the holder paused too long): delete the key as Redis would.
    redis.cli(&["DEL", "redq:lock:{job-x}"]).unwrap();
    let Acquired::Held(second) = try_acquire(store, "job-x", TTL).await.unwrap() else {
        panic!("lapsed lock")
    };
    assert!(second.fence() > first.fence());
    assert!(
        !first.renew(TTL).await.unwrap(),
        "the old holder cannot renew"
    );
    assert!(
        !first.clone().release().await.unwrap(),
        "nor release the new holder's lock"
    );
    assert!(matches!(
        try_acquire(store, "job-x", TTL).await.unwrap(),
        Acquired::Busy { .. }
    ));
    assert!(second.release().await.unwrap());
    let Acquired::Held(third) = try_acquire(store, "job-x", TTL).await.unwrap() else {
        panic!("released lock")
    };
    assert_eq!(third.fence(), 3);
    assert!(try_acquire(store, "bad name", TTL).await.is_err());
}
