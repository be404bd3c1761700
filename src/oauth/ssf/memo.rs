//! A worker's memory of the revocation list's answers: a tag's cutoff as
//! read under the list's lock, good while the list's count of changes
//! (`shm/table.rs` `changes_seen`) is still the one it was read at. The
//! list changes rarely and is checked on every request; with this, a
//! request whose tags were looked up since the last change takes no lock.
//!
//! One slot per tag's low bits, overwritten by the next tag that lands
//! there: a tag it does not hold is looked up under the lock, as without
//! it. It never holds an answer read at count 0, which no list has.

/// Slots: 24 bytes each, 96 KiB a worker once used.
const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    tag: [u8; 8],
    /// The list's count of changes when `until` was read; 0 for none.
    changes: u64,
    /// The tag's cutoff (`i64::MIN`: none).
    until: i64,
}

/// The cutoffs read from one list (the table at `list`), by tag.
#[derive(Debug, Default)]
pub struct CutoffMemo {
    list: usize,
    slots: Vec<Slot>,
}

impl CutoffMemo {
    pub const fn new() -> CutoffMemo {
        CutoffMemo {
            list: 0,
            slots: Vec::new(),
        }
    }

    /// The cutoff of `tag` in the list at `list` (`None` inside: it has
    /// none), when it was read while the list's count was `changes`.
    pub fn get(&self, list: usize, changes: u64, tag: &[u8; 8]) -> Option<Option<i64>> {
        if list != self.list || changes == 0 {
            return None;
        }
        let slot = self.slots.get(slot_of(tag))?;
        (slot.changes == changes && slot.tag == *tag)
            .then_some((slot.until != i64::MIN).then_some(slot.until))
    }

    /// Keeps `tag`'s cutoff `until`, read from the list at `list` while
    /// its count was `changes`. Another list forgets the first one's.
    pub fn put(&mut self, list: usize, changes: u64, tag: [u8; 8], until: Option<i64>) {
        if changes == 0 {
            return;
        }
        if list != self.list || self.slots.is_empty() {
            self.slots.clear();
            self.slots.resize(SLOTS, Slot::default());
            self.list = list;
        }
        self.slots[slot_of(&tag)] = Slot {
            tag,
            changes,
            until: until.unwrap_or(i64::MIN),
        };
    }
}

fn slot_of(tag: &[u8; 8]) -> usize {
    u16::from_le_bytes([tag[0], tag[1]]) as usize % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const LIST: usize = 0x1000;
    const TAG: [u8; 8] = *b"tag one!";

    #[test]
    fn an_answer_holds_only_at_the_count_and_list_it_was_read_at() {
        let mut memo = CutoffMemo::new();
        assert_eq!(memo.get(LIST, 5, &TAG), None, "nothing kept yet");
        memo.put(LIST, 5, TAG, Some(1_000));
        assert_eq!(memo.get(LIST, 5, &TAG), Some(Some(1_000)));
        assert_eq!(memo.get(LIST, 6, &TAG), None, "the list changed since");
        assert_eq!(memo.get(LIST + 8, 5, &TAG), None, "another list");
        assert_eq!(memo.get(LIST, 5, b"tag two!"), None, "another tag");
        memo.put(LIST, 6, TAG, None);
        assert_eq!(memo.get(LIST, 6, &TAG), Some(None), "known to have none");
        assert_eq!(memo.get(LIST, 5, &TAG), None, "the newer read replaced it");
        // Another list: the first one's answers are gone.
        memo.put(LIST + 8, 6, b"tag two!".to_owned(), None);
        assert_eq!(memo.get(LIST, 6, &TAG), None);
        // Count 0 is no list's: never kept, never answered.
        memo.put(LIST, 0, TAG, None);
        assert_eq!(memo.get(LIST, 0, &TAG), None);
    }

    #[test]
    fn tags_in_one_slot_push_each_other_out() {
        let mut memo = CutoffMemo::new();
        let mut other = TAG;
        other[7] ^= 1;
        assert_eq!(slot_of(&other), slot_of(&TAG));
        memo.put(LIST, 3, TAG, Some(7));
        memo.put(LIST, 3, other, Some(9));
        assert_eq!(memo.get(LIST, 3, &TAG), None);
        assert_eq!(memo.get(LIST, 3, &other), Some(Some(9)));
    }

    proptest! {
        /// Against a model that keeps every read: the memo answers a
        /// subset, and never anything the model would not.
        #[test]
        fn it_answers_only_what_was_read_at_that_count(
            ops in proptest::collection::vec(
                (0usize..3, 0u64..4, 0u8..6, proptest::option::of(any::<i64>()), any::<bool>()),
                1..200,
            )
        ) {
            let mut memo = CutoffMemo::new();
            let mut model: HashMap<(usize, u64, [u8; 8]), Option<i64>> = HashMap::new();
            for (list, changes, t, until, put) in ops {
                let tag = [t, t / 2, 0, 0, 0, 0, 0, t];
                let until = until.filter(|&u| u != i64::MIN);
                if put {
                    memo.put(list, changes, tag, until);
                    if changes != 0 {
                        model.insert((list, changes, tag), until);
                    }
                } else if let Some(answer) = memo.get(list, changes, &tag) {
                    prop_assert_eq!(model.get(&(list, changes, tag)), Some(&answer));
                }
            }
        }
    }
}
