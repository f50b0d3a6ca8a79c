//! Distributed locks: mutual exclusion, fencing, renewal and release by token.

mod common;

use std::time::Duration;

use common::server::RedisServer;
use common::wait::within;
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

// ---------------------------------------------------------------------------
// Leader lease
// ---------------------------------------------------------------------------

use redq::leader::{Leader, LeaderWatch};
use redq::store::Store;

/// Short enough to keep the tests quick: renewal and retries every 200ms.
const LEASE: Duration = Duration::from_millis(600);

async fn leaders(redis: &RedisServer, n: usize) -> Vec<Leader> {
    let mut out = Vec::new();
    for _ in 0..n {
        let store = Store::connect(&redis.url(), "redq").await.unwrap();
        out.push(Leader::start(store, "duty", LEASE).unwrap());
    }
    out
}

/// Waits (bounded) until `watch` says this process leads; returns the fence.
async fn until_leader(watch: &mut LeaderWatch) -> u64 {
    within(10, async {
        loop {
            if let Some(f) = watch.fence() {
                return f;
            }
            assert!(watch.changed().await, "lease task ended");
        }
    })
    .await
}

/// Waits (bounded) until exactly one of `leaders` leads; returns its index and fence.
async fn the_leader(leaders: &[Leader]) -> (usize, u64) {
    let mut watches: Vec<LeaderWatch> = leaders.iter().map(Leader::watch).collect();
    within(10, async {
        loop {
            let now: Vec<(usize, u64)> = leaders
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.fence().map(|f| (i, f)))
                .collect();
            assert!(now.len() <= 1, "two leaders at once: {now:?}");
            if let [one] = now[..] {
                return one;
            }
            // Wake on any change of any contender's state.
            let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
            futures::future::select_all(changes).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_among_three_and_a_graceful_step_down_hands_over_at_once() {
    let redis = RedisServer::start();
    let mut contenders = leaders(&redis, 3).await;
    let (first, first_fence) = the_leader(&contenders).await;
    // Several renewals later the same one still leads, alone.
    let until = tokio::time::Instant::now() + LEASE * 3;
    let mut watch = contenders[first].watch();
    while tokio::time::Instant::now() < until {
        let _ = tokio::time::timeout_at(until, watch.changed()).await;
    }
    let leading: Vec<usize> = (0..3).filter(|&i| contenders[i].is_leader()).collect();
    assert_eq!(leading, vec![first], "the leader kept its lease");
    assert_eq!(contenders[first].fence(), Some(first_fence));

    // Step down: a successor leads well before the old lease would have expired.
    let old = contenders.remove(first);
    let stepped = tokio::time::Instant::now();
    old.step_down().await;
    let (_, second_fence) = the_leader(&contenders).await;
    assert!(
        stepped.elapsed() < LEASE,
        "hand-over took {:?}, as long as the TTL",
        stepped.elapsed()
    );
    assert!(second_fence > first_fence);

    // And once more: fencing numbers of successive leaders only grow.
    let (second, _) = the_leader(&contenders).await;
    contenders.remove(second).step_down().await;
    let last = contenders.pop().unwrap();
    let third_fence = until_leader(&mut last.watch()).await;
    assert!(third_fence > second_fence);
    last.step_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_cannot_renew_stops_claiming_within_the_ttl() {
    let mut redis = RedisServer::start();
    let contenders = leaders(&redis, 1).await;
    let mut watch = contenders[0].watch();
    let fence = until_leader(&mut watch).await;

    // The lock is taken from under it (as if its TTL lapsed during a pause and
    // another process took it): the next renewal is refused.
    let taken = tokio::time::Instant::now();
    redis
        .cli(&[
            "SET",
            "redq:lock:{leader:duty}",
            "someone-else:99",
            "PX",
            "60000",
        ])
        .unwrap();
    within(5, async {
        while watch.fence().is_some() {
            watch.changed().await;
        }
    })
    .await;
    assert!(
        taken.elapsed() < LEASE,
        "still leader after {:?}",
        taken.elapsed()
    );

    // Given back, it leads again under a larger fence.
    redis.cli(&["DEL", "redq:lock:{leader:duty}"]).unwrap();
    let again = until_leader(&mut watch).await;
    assert!(again > fence);

    // Redis goes away: it stops claiming within the TTL (by its own clock).
    let killed = tokio::time::Instant::now();
    redis.kill();
    within(5, async {
        while watch.fence().is_some() {
            let _ = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        }
    })
    .await;
    assert!(
        killed.elapsed() < LEASE,
        "still leader after {:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn leader_names_and_ttls_are_checked() {
    let redis = RedisServer::start();
    let store = Store::connect(&redis.url(), "redq").await.unwrap();
    assert!(Leader::start(store.clone(), "bad name", LEASE).is_err());
    assert!(Leader::start(store, "ok", Duration::from_millis(10)).is_err());
}
