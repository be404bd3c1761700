//! The module's promise, checked over random sequences of operations: a
//! request passes only with an answer the IdP gave, under the *reader's*
//! policy, newer than the token's last purge and than an inactive answer
//! the gateway replaced an entry with.
//!
//! The real flow (`flow::step`, `flow::refreshed`), the real table (a heap
//! slab per gateway), the real Redis tier's seals, pipelines and choice of
//! entry (`fleet`, `write::commands`, `tier_read::first_fresh`), the real
//! breaker and the real reading of the IdP's JSON, around a world of two
//! gateways sharing one Redis, three locations with different policies on
//! one key, three tokens and a scripted IdP. Operations: requests (which
//! stop where the flow waits: the Redis tier, the IdP, another worker),
//! their answers arriving in any order, background refreshes, clients
//! leaving, workers dying (marks left behind), revocation at the IdP,
//! purges (here and through the channel), the IdP failing (5xx, 503 with
//! `Retry-After`, 429, timeouts), Redis replaying any value it ever held or
//! losing everything, reloads (breakers closed) and the clock.
//!
//! Every answered request is judged: each active answer the IdP gives names
//! itself (`sub`), so the judge knows when it was obtained. A pass needs
//! that answer to be within the reader's `max_ttl` (or its stale window
//! when this request's call failed and it was served `STALE`), before the
//! token's `exp`, after its last purge and after the last inactive answer
//! this gateway replaced an entry with. Conversely, a request whose token
//! is active while the IdP has been up long enough for every breaker to
//! close is not refused.
//!
//! `cargo test` runs a bounded number of sequences; `PROMISE_MODEL_CASES=N`
//! runs N (10,000: about two million operations).

use std::cell::RefCell;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

mod parts;
mod world;

use crate::shm::table::tests::Zone;
use parts::{IdpMode, Op, GATEWAYS, LOCATIONS, TOKENS, ZONES};
use world::World;

fn ops() -> impl Strategy<Value = Op> {
    let n = 0u8..8;
    prop_oneof![
        6 => (0..GATEWAYS as u8, 0..LOCATIONS.len() as u8, 0..TOKENS as u8)
            .prop_map(|(gw, loc, token)| Op::Request { gw, loc, token }),
        6 => n.clone().prop_map(|n| Op::Deliver { n }),
        1 => n.clone().prop_map(|n| Op::Refreshed { n }),
        1 => (n, any::<bool>()).prop_map(|(n, died)| Op::Abandon { n, died }),
        1 => (0..TOKENS as u8).prop_map(|token| Op::Revoke { token }),
        1 => (0..TOKENS as u8).prop_map(|token| Op::Purge { token }),
        2 => prop_oneof![
            3 => Just(IdpMode::Up),
            1 => Just(IdpMode::Failing),
            1 => (0u64..100_000_000).prop_map(IdpMode::Busy),
            1 => Just(IdpMode::Throttling),
            1 => Just(IdpMode::Timeout),
        ]
        .prop_map(Op::Idp),
        1 => any::<u16>().prop_map(|n| Op::Replay { n }),
        1 => Just(Op::FlushRedis),
        1 => (0..GATEWAYS as u8).prop_map(|gw| Op::Reload { gw }),
        4 => prop_oneof![0i64..50, 0i64..3_000, 0i64..400_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn fresh_world() -> World {
    ZONES.with_borrow_mut(|zones| {
        zones.clear();
        for gw in 0..GATEWAYS {
            zones.push(Zone::with_key(1 << 20, [gw as u8 + 1; 16]));
        }
    });
    World::new()
}

fn run_sequence(ops: Vec<Op>) -> Result<[usize; 3], TestCaseError> {
    let mut world = fresh_world();
    for op in ops {
        world.apply(op)?;
    }
    Ok(world.passes)
}

#[test]
fn the_promise_holds_over_random_sequences() {
    let cases = std::env::var("PROMISE_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let totals = RefCell::new([0usize; 3]);
    let operations = RefCell::new(0usize);
    let started = std::time::Instant::now();
    runner
        .run(&vec(ops(), 1..400), |ops| {
            *operations.borrow_mut() += ops.len();
            let passes = run_sequence(ops)?;
            let mut totals = totals.borrow_mut();
            for (total, n) in totals.iter_mut().zip(passes) {
                *total += n;
            }
            Ok(())
        })
        .unwrap();
    let [fresh, stale, shared] = *totals.borrow();
    eprintln!(
        "promise model: {cases} sequences, {} operations in {:?}; passes: {fresh} fresh, {stale} stale, {shared} from the Redis tier",
        operations.borrow(),
        started.elapsed()
    );
    // The sequences reach every way a request passes.
    assert!(
        fresh > 0 && stale > 0 && shared > 0,
        "{fresh} {stale} {shared}"
    );
}

#[test]
fn a_stale_answer_stands_in_for_a_failing_idp_and_a_purge_voids_it() {
    use Op::*;
    let learn = [
        Request {
            gw: 0,
            loc: 1,
            token: 0,
        },
        Deliver { n: 0 },
        Deliver { n: 0 },
        Advance { ms: 3_000 },
        Idp(IdpMode::Failing),
    ];
    let stale = [
        Request {
            gw: 0,
            loc: 1,
            token: 0,
        },
        Deliver { n: 0 },
        Deliver { n: 0 },
    ];
    let ops: Vec<Op> = learn.iter().chain(&stale).cloned().collect();
    assert_eq!(
        run_sequence(ops).unwrap(),
        [1, 1, 0],
        "learnt, then served stale"
    );
    // A purge while the call is under way: no stale answer from before it.
    let mut ops: Vec<Op> = learn.iter().chain(&stale[..2]).cloned().collect();
    ops.extend([Purge { token: 0 }, Deliver { n: 0 }]);
    assert_eq!(
        run_sequence(ops).unwrap(),
        [1, 0, 0],
        "the purge voids the stale answer"
    );
}

#[test]
fn an_entry_from_redis_that_fails_the_checks_of_a_fresh_answer_is_a_miss() {
    use crate::oauth::cache::slot::TierEntry;
    use crate::oauth::cache::CachedIntrospection;
    use crate::oauth::introspection::{IntrospectionResult, TokenClaims};
    use crate::oauth::named_claims::NamedClaims;
    let mut world = fresh_world();
    // Sealed with the fleet's key (a gateway of another version, or whoever
    // holds the secret), a claim that would split a header.
    let claims = TokenClaims {
        named: NamedClaims::new(Some("a0\r\nX-Injected: yes"), None, None),
        ..TokenClaims::default()
    };
    let now = world.now();
    let planted = TierEntry {
        obtained_ms: now,
        fresh_until_ms: now + 60_000,
        stale_until_ms: now + 60_000,
        entry: CachedIntrospection::encode(&IntrospectionResult::Active(claims)),
    };
    world.write_sealed(0, &planted, now);
    for op in [
        Op::Request {
            gw: 0,
            loc: 0,
            token: 0,
        },
        Op::Deliver { n: 0 },
        Op::Deliver { n: 0 },
    ] {
        world.apply(op).unwrap();
    }
    assert_eq!(world.refused_from_tier, 1, "refused, and counted");
    assert_eq!(
        world.passes,
        [1, 0, 0],
        "the IdP's own answer passed, not Redis'"
    );
}

/// Found by the model: a request whose look found an old entry, then
/// started again after a purge, got "inactive" from the IdP; it must still
/// replace the old knowledge (purge what was obtained before), or another
/// request's call, asked before the token expired, passes after.
#[test]
fn an_inactive_answer_after_a_fresh_start_still_voids_older_answers() {
    use Op::*;
    let ops = vec![
        Request {
            gw: 0,
            loc: 0,
            token: 0,
        },
        Deliver { n: 0 },
        Deliver { n: 0 },
        Advance { ms: 2000 },
        Request {
            gw: 0,
            loc: 0,
            token: 2,
        },
        Request {
            gw: 0,
            loc: 0,
            token: 1,
        },
        Request {
            gw: 0,
            loc: 0,
            token: 1,
        },
        Deliver { n: 1 },
        Request {
            gw: 0,
            loc: 1,
            token: 0,
        },
        Abandon { n: 4, died: false },
        Deliver { n: 7 },
        Purge { token: 0 },
        Request {
            gw: 0,
            loc: 0,
            token: 0,
        },
        Request {
            gw: 0,
            loc: 0,
            token: 2,
        },
        Advance { ms: 263147 },
        Request {
            gw: 0,
            loc: 0,
            token: 0,
        },
        Request {
            gw: 0,
            loc: 0,
            token: 2,
        },
        Deliver { n: 2 },
        Deliver { n: 7 },
        Request {
            gw: 0,
            loc: 1,
            token: 0,
        },
        Advance { ms: 334853 },
        Deliver { n: 0 },
        Abandon { n: 0, died: false },
        Deliver { n: 3 },
        Deliver { n: 5 },
        Deliver { n: 5 },
        Deliver { n: 2 },
    ];
    run_sequence(ops).unwrap();
}
