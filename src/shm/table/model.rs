//! The table against a reference model, over random sequences of
//! operations: answers inserted with the times they were obtained, look-ups
//! by readers of different policies (`max_ttl`, stale window, refresh),
//! claims and releases, purges with cutoffs, the clock moving on, and
//! workers dying at a random step of any change (also of the repair that
//! follows). After every operation the table must agree with the model:
//!
//! - an answer is served (`Hit`, `Due`) only if it is the key's last one
//!   stored, was obtained after its token's last cutoff (and after the last
//!   repair), and is within the reader's `max_ttl` and the writer's end;
//! - `Stale` only within the reader's stale window, never past the writer's;
//! - an answer obtained at or before its token's cutoff is never stored;
//! - after a death, the next `open` notices it and the table is empty and
//!   consistent (chains, queue, allocator, counters) and works.
//!
//! In a zone with room for everything ("roomy": no eviction, no full chain)
//! the model predicts every result exactly, so an answer that may be served
//! is served too; where chains overflow (24 keys in one chain) or the zone
//! is small (room for 10 nodes) only the rules above are checked, and that
//! a claim never evicts an answer. `cargo test` runs a bounded number of sequences;
//! `TABLE_MODEL_CASES=N` runs N (a long run: see `ARCHITECTURE.md`).

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::tests::{room_for, tagged, DieAt, Zone, NOW};
use super::*;

/// The readers' policies: `max_ttl`, stale window, refresh share.
const READERS: [(i64, i64, u8); 5] = [
    (300_000, 0, 0),
    (10_000, 0, 0),
    (10_000, 30_000, 0),
    (300_000, 60_000, 80),
    (2_000, 1_000, 50),
];
const REFRESH_FOR_MS: i64 = 5_000;
const DAY_MS: i64 = 86_400_000;
/// The furthest a node's times reach from when its answer was obtained.
const KEPT_MS: i64 = i32::MAX as i64;
/// Tokens, all in one chain.
const TAGS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Stores an answer obtained `back_ms` ago, fresh until `fresh_ms`
    /// after it was obtained, then stale for `stale_ms`.
    Insert {
        key: u8,
        back_ms: i64,
        fresh_ms: i64,
        stale_ms: i64,
    },
    Lookup {
        key: u8,
        reader: u8,
    },
    Claim {
        key: u8,
        reader: u8,
        for_ms: i64,
    },
    Release {
        key: u8,
    },
    /// Purges a token with a cutoff `back_ms` ago, kept for `keep_ms`.
    Purge {
        tag: u8,
        back_ms: i64,
        keep_ms: i64,
    },
    Cutoff {
        tag: u8,
    },
    Advance {
        ms: i64,
    },
    /// `op`, its worker dying at `step`; then, if `again`, the worker that
    /// repairs the table dies at that step of the repair.
    Die {
        op: Box<Op>,
        step: usize,
        again: Option<usize>,
    },
}

fn back() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0..2_000i64, 1 => 0..400_000i64]
}

fn op() -> impl Strategy<Value = Op> {
    let base = prop_oneof![
        6 => (any::<u8>(), back(), 1..400_000i64, prop_oneof![Just(0i64), 0..60_000i64])
            .prop_map(|(key, back_ms, fresh_ms, stale_ms)| Op::Insert { key, back_ms, fresh_ms, stale_ms }),
        // Lifetimes past the 24 days a node's 32-bit times reach.
        1 => (any::<u8>(), back(), 1..40 * DAY_MS, 0..10 * DAY_MS)
            .prop_map(|(key, back_ms, fresh_ms, stale_ms)| Op::Insert { key, back_ms, fresh_ms, stale_ms }),
        6 => (any::<u8>(), any::<u8>()).prop_map(|(key, reader)| Op::Lookup { key, reader }),
        3 => (any::<u8>(), any::<u8>(), 1..10_000i64)
            .prop_map(|(key, reader, for_ms)| Op::Claim { key, reader, for_ms }),
        1 => any::<u8>().prop_map(|key| Op::Release { key }),
        1 => (any::<u8>(), 0..5_000i64, prop_oneof![0..2_000i64, 0..600_000i64])
            .prop_map(|(tag, back_ms, keep_ms)| Op::Purge { tag, back_ms, keep_ms }),
        1 => any::<u8>().prop_map(|tag| Op::Cutoff { tag }),
        4 => prop_oneof![0..2_000i64, 0..400_000i64].prop_map(|ms| Op::Advance { ms }),
        1 => (0..30 * DAY_MS).prop_map(|ms| Op::Advance { ms }),
    ];
    prop_oneof![
        20 => base.clone(),
        1 => (base, 0..40usize, proptest::option::of(0..10usize))
            .prop_map(|(op, step, again)| Op::Die { op: Box::new(op), step, again }),
    ]
}

/// What the model holds for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Entry { id: u64, refreshing_until: i64 },
    Mark { deadline: i64 },
}

/// An answer the table stored.
#[derive(Debug, Clone, Copy)]
struct Answer {
    key: usize,
    obtained: i64,
    fresh_until: i64,
    stale_until: i64,
}

/// What a look-up may find, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Fresh {
        id: u64,
        due: bool,
    },
    Stale(u64),
    /// An entry this reader may not use, of use to another.
    Expired,
    /// An entry of use to no one (removed, or reclaimed already).
    Dead,
    Pending,
    Nothing,
}

struct Model {
    roomy: bool,
    now: i64,
    tags: Vec<[u8; 8]>,
    per_tag: usize,
    slots: Vec<Slot>,
    answers: HashMap<u64, Answer>,
    /// The highest cutoff of each token's purges.
    cutoffs: Vec<Option<i64>>,
    /// When the table was last made in place of a damaged one.
    floor: i64,
    /// The most a purge may have moved a cutoff to (1 ms past the most the
    /// table refused before it).
    moved: i64,
    next_id: u64,
}

impl Model {
    /// `zone`: 0 roomy, 1 with chains that overflow, 2 small.
    fn new(zone: u8, bucket_key: [u8; 16]) -> (Model, Zone) {
        let roomy = zone == 0;
        let budget = match zone {
            2 => room_for(10),
            _ => 1 << 20,
        };
        let mut zone = Zone::with_key(budget, bucket_key);
        let first: [u8; 8] = bucket_key[..8].try_into().expect("8 bytes");
        let mut tags = vec![first];
        tags.extend(zone.neighbours(first, TAGS - 1));
        // Roomy: 3 tokens of 4 keys and 3 cutoffs never fill a chain.
        let per_tag = if roomy { 4 } else { 8 };
        let model = Model {
            roomy,
            now: NOW,
            tags,
            per_tag,
            slots: vec![Slot::Empty; TAGS * per_tag],
            answers: HashMap::new(),
            cutoffs: vec![None; TAGS],
            floor: i64::MIN,
            moved: i64::MIN,
            next_id: 0,
        };
        (model, zone)
    }

    fn key(&self, k: usize) -> CacheKey {
        tagged(self.tags[k / self.per_tag], (k % self.per_tag) as u32)
    }

    fn pick(&self, key: u8) -> usize {
        key as usize % self.slots.len()
    }

    fn reader(&self, reader: u8) -> At {
        let (max_ttl_ms, stale_ms, refresh_pct) = READERS[reader as usize % READERS.len()];
        At {
            now_ms: self.now,
            max_ttl_ms,
            stale_ms,
            refresh_pct,
            refresh_for_ms: REFRESH_FOR_MS,
        }
    }

    /// Answers about `tag` obtained at or before this must be refused.
    fn refused_until(&self, tag: usize) -> i64 {
        self.cutoffs[tag].unwrap_or(i64::MIN).max(self.floor)
    }

    /// The latest cutoff of any token: the most the table's floor may have
    /// taken from cutoffs that left it.
    fn any_cutoff(&self) -> i64 {
        self.cutoffs
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(i64::MIN)
    }

    fn judge(&self, k: usize, at: At) -> Judged {
        let now = at.now_ms;
        match self.slots[k] {
            Slot::Entry {
                id,
                refreshing_until,
            } => {
                let a = self.answers[&id];
                let fresh_end = a.fresh_until.min(a.obtained + at.max_ttl_ms);
                let stale_end = a.stale_until.min(fresh_end + at.stale_ms);
                if now < fresh_end {
                    let life = fresh_end - a.obtained;
                    let due = at.refresh_pct > 0
                        && now >= a.obtained + life * i64::from(at.refresh_pct) / 100
                        && now >= refreshing_until;
                    Judged::Fresh { id, due }
                } else if now < stale_end {
                    Judged::Stale(id)
                } else if now < a.stale_until {
                    Judged::Expired
                } else {
                    Judged::Dead
                }
            }
            Slot::Mark { deadline } if now < deadline => Judged::Pending,
            Slot::Mark { .. } | Slot::Empty => Judged::Nothing,
        }
    }

    /// Runs `op` on the table and checks what it did; `Err` when its
    /// worker died (then nothing is checked: see [`Model::after_death`]).
    fn run<D: Steps>(&mut self, z: &mut Zone, op: &Op, steps: &mut D) -> Result<(), Died> {
        let now = self.now;
        match *op {
            Op::Insert {
                key,
                back_ms,
                fresh_ms,
                stale_ms,
            } => {
                let k = self.pick(key);
                let tag = k / self.per_tag;
                let obtained = now - back_ms;
                let lifetime = Lifetime {
                    fresh_until: obtained + fresh_ms,
                    stale_until: obtained + fresh_ms + stale_ms,
                };
                let id = self.next_id;
                self.next_id += 1;
                let mut value = [0u8; 10];
                value[..8].copy_from_slice(&id.to_le_bytes());
                let stored = z.insert_at(steps, &self.key(k), &value, lifetime, obtained, now)?;
                let refused = self.refused_until(tag);
                assert!(
                    !stored || obtained > refused,
                    "an answer obtained at {obtained} was stored after a cutoff at {refused}"
                );
                if self.roomy && obtained > refused.max(self.any_cutoff()) {
                    assert!(stored, "an answer obtained at {obtained} was not stored");
                }
                if stored {
                    // A node keeps its times as 32-bit ms from when its
                    // answer was obtained: an end further off comes sooner.
                    let kept = obtained + KEPT_MS;
                    let answer = Answer {
                        key: k,
                        obtained,
                        fresh_until: lifetime.fresh_until.min(kept),
                        stale_until: lifetime.stale_until.min(kept),
                    };
                    self.answers.insert(id, answer);
                    self.slots[k] = Slot::Entry {
                        id,
                        refreshing_until: 0,
                    };
                }
            }
            Op::Lookup { key, reader } => {
                let k = self.pick(key);
                let at = self.reader(reader);
                let found = z.look(steps, &self.key(k), at)?;
                self.check_lookup(k, at, found);
            }
            Op::Claim {
                key,
                reader,
                for_ms,
            } => {
                let k = self.pick(key);
                let at = self.reader(reader);
                let before = z.stats();
                let claimed = z.claim_at(steps, &self.key(k), at, now + for_ms)?;
                // A mark never evicts an answer: the only entry a claim may
                // remove is the key's own, of use to no one.
                let after = z.stats();
                let own = matches!(self.slots[k], Slot::Entry { .. });
                assert_eq!(after.evictions, before.evictions, "a claim evicted");
                assert!(
                    before.entries - after.entries <= u64::from(own),
                    "a claim removed another key's answer"
                );
                let expected = match self.judge(k, at) {
                    Judged::Pending | Judged::Fresh { .. } => Claim::Taken,
                    Judged::Stale(_) | Judged::Expired => Claim::Unmarked,
                    Judged::Dead | Judged::Nothing => Claim::Claimed,
                };
                match self.roomy {
                    true => assert_eq!(claimed, expected, "claim of key {k} at {at:?}"),
                    // Only a node that is there makes a claim wait.
                    false if claimed == Claim::Taken => assert_eq!(expected, Claim::Taken),
                    false => {}
                }
                if claimed == Claim::Claimed {
                    self.slots[k] = Slot::Mark {
                        deadline: now + for_ms,
                    };
                }
            }
            Op::Release { key } => {
                let k = self.pick(key);
                z.release_with(steps, &self.key(k))?;
                if let Slot::Mark { .. } = self.slots[k] {
                    self.slots[k] = Slot::Empty;
                }
            }
            Op::Purge {
                tag,
                back_ms,
                keep_ms,
            } => {
                let t = tag as usize % TAGS;
                let cutoff = now - back_ms;
                // Every purge moves the cutoff by 1 ms at least, from what
                // the table refuses now (the model knows it exactly in a
                // roomy zone; elsewhere, at most up to the floor's bound).
                let least = self.refused_until(t);
                let most = self.any_cutoff().max(self.floor).max(self.moved);
                let removed = z.purge_at(steps, self.tags[t], cutoff, now + keep_ms)?;
                let (mut live, mut all) = (0, 0);
                for k in t * self.per_tag..(t + 1) * self.per_tag {
                    if let Slot::Entry { id, .. } = self.slots[k] {
                        all += 1;
                        live += usize::from(now < self.answers[&id].stale_until);
                    }
                    self.slots[k] = Slot::Empty;
                }
                assert!(removed <= all, "purge removed {removed} of {all} entries");
                if self.roomy {
                    assert!(
                        live <= removed,
                        "purge removed {removed} of {live} live entries"
                    );
                }
                self.cutoffs[t] = Some(cutoff.max(least.saturating_add(1)));
                self.moved = self.moved.max(cutoff.max(most.saturating_add(1)));
            }
            Op::Cutoff { tag } => {
                let t = tag as usize % TAGS;
                let got = z.cutoff(self.tags[t]);
                let least = self.refused_until(t);
                let most = self.any_cutoff().max(self.floor).max(self.moved);
                match got {
                    None => assert_eq!(least, i64::MIN, "a cutoff was lost"),
                    Some(c) => assert!(
                        least <= c && c <= most,
                        "cutoff {c} out of [{least}, {most}]"
                    ),
                }
            }
            Op::Advance { ms } => self.now += ms,
            Op::Die {
                ref op,
                step,
                again,
            } => {
                if self.run(z, op, &mut DieAt(step)).is_err() {
                    self.after_death(z, again);
                }
            }
        }
        Ok(())
    }

    fn check_lookup(&mut self, k: usize, at: At, found: Lookup<Vec<u8>>) {
        let judged = self.judge(k, at);
        let id_of = |v: &[u8]| u64::from_le_bytes(v[..8].try_into().expect("an id"));
        if let Lookup::Hit(v) | Lookup::Due(v) | Lookup::Stale(v, _) = &found {
            let a = self.answers[&id_of(v)];
            assert_eq!(a.key, k, "another key's answer");
            let refused = self.refused_until(k / self.per_tag);
            assert!(
                a.obtained > refused,
                "served an answer obtained at {} after a cutoff at {refused}",
                a.obtained
            );
        }
        let same = |v: &[u8], id| id_of(v) == id;
        match (&found, judged) {
            (Lookup::Hit(v), Judged::Fresh { id, due: false }) if same(v, id) => {}
            (Lookup::Due(v), Judged::Fresh { id, due: true }) if same(v, id) => {
                self.slots[k] = Slot::Entry {
                    id,
                    refreshing_until: at.now_ms + at.refresh_for_ms,
                };
            }
            (Lookup::Stale(v, until), Judged::Stale(id)) if same(v, id) => {
                assert!(at.now_ms < *until, "a stale window that has ended");
            }
            (Lookup::Pending, Judged::Pending) | (Lookup::Expired, Judged::Expired) => {}
            (Lookup::Expired | Lookup::Miss, Judged::Dead) | (Lookup::Miss, Judged::Nothing) => {
                self.slots[k] = Slot::Empty;
            }
            // A small zone may have evicted it.
            (Lookup::Miss, _) if !self.roomy => self.slots[k] = Slot::Empty,
            _ => panic!(
                "key {k} at {at:?}: the table says {found:?}, the model {judged:?} ({:?})",
                self.slots[k]
            ),
        }
    }

    /// A worker died inside a change (and, with `again`, the next one inside
    /// the repair): the next `open` must notice and make an empty table,
    /// whose floor is now.
    fn after_death(&mut self, z: &mut Zone, again: Option<usize>) {
        z.fresh.floor_ms = self.now;
        let mut first = None;
        if let Some(again) = again {
            if let Ok(opened) = z.open_with(&mut DieAt(again)) {
                first = Some(opened.expect("room for a table").1);
            }
        }
        let (_, opened) = z.open();
        assert_ne!(
            first.unwrap_or(opened),
            Opened::Ready,
            "a death went unnoticed"
        );
        assert_eq!(
            (z.check(), z.cutoffs()),
            (0, 0),
            "a repaired table is empty"
        );
        self.slots.fill(Slot::Empty);
        // The floor covers every cutoff up to now; a cutoff a purge moved
        // past now (by its 1 ms) goes with the table.
        self.cutoffs.fill(None);
        self.floor = self.now;
    }
}

#[test]
fn the_table_agrees_with_a_model() {
    let cases = std::env::var("TABLE_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ops_run = Cell::new(0u64);
    let started = Instant::now();
    let strategy = (0..3u8, any::<[u8; 16]>(), vec(op(), 1..300));
    let result = runner.run(&strategy, |(zone, bucket_key, ops)| {
        let (mut model, mut z) = Model::new(zone, bucket_key);
        let roomy = model.roomy;
        for op in &ops {
            model.run(&mut z, op, &mut Live).expect("live");
            z.check();
            if roomy {
                assert_eq!(z.stats().evictions, 0, "a roomy zone evicts nothing");
            }
        }
        ops_run.set(ops_run.get() + ops.len() as u64);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    eprintln!(
        "table model: {cases} sequences, {} operations in {:.1?}",
        ops_run.get(),
        started.elapsed()
    );
}
