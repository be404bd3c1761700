//! The kept keys (first 16 bytes) of a tag's live entries, read from the
//! tag's chain: at most `MAX_CHAIN` nodes, whatever the table holds. The Shared Signals
//! receiver's index (`shm/revocations.rs`) keeps one entry per (list key,
//! token) whose key begins with the list key, and reads a revoked
//! subject's tokens this way.

use super::change::bucket_of;
use super::layout::{node_at, Node, Table, ENTRY, KEPT_KEY_BYTES};

/// The kept key bytes of the entries whose key begins with `tag` and that
/// are still live (fresh or stale) at `now_ms`.
///
/// # Safety
/// `table` must be a table returned by `table::open`, the lock held.
pub unsafe fn keys_tagged(
    table: *mut Table,
    tag: &[u8; 8],
    now_ms: i64,
) -> Vec<[u8; KEPT_KEY_BYTES]> {
    let mut keys = Vec::new();
    // SAFETY: `table` is an open table and the lock is held (this
    // function's contract): its chains hold only live nodes; a look, no change.
    unsafe {
        let mut node = node_at(table, *bucket_of(table, *tag));
        while !node.is_null() {
            if (*node).kind == ENTRY
                && Node::has_tag(node, tag)
                && now_ms < (*node).stale_until_ms()
            {
                keys.push((*node).key);
            }
            node = node_at(table, (*node).next);
        }
    }
    keys
}
