//! Redis Cluster (plain): which slot a name lives in (CRC16/XMODEM of the
//! name, or of its hash tag, modulo 16384), which primary serves a slot
//! (the map read from `CLUSTER SLOTS`), what a `-MOVED` or `-ASK` reply
//! asks a call to do, and how a call is sent again after `-ASK` (each
//! command after its own `ASKING`). `redis/cluster_route.rs` is the glue:
//! it keeps each worker's map, points a call at its slot's primary and
//! follows the redirections.
//!
//! Each call of the tier touches one name (the token's hash, a proof's
//! name, the revocation list) and maybe `PUBLISH`es, which any node takes
//! (a cluster broadcasts every `PUBLISH` to all its nodes): its slot is
//! its first command's first argument's. (`old_key_file` would add a
//! second name in another slot: refused with `cluster`.)
//!
//! Everything here comes from the servers, hostile until checked: a map
//! with ranges out of bounds or overlapping, or nodes that are not an IP
//! address and port, is refused whole (the last map stays); a redirection
//! to anything else, or for another slot than the call's, is no
//! redirection to follow (a miss); a call follows at most
//! [`MAX_REDIRECTIONS`].

use std::net::{IpAddr, SocketAddr};

use crate::redis::resp::{self, Limits, Progress, Reader, Reply};

/// How many slots a cluster has.
pub const SLOTS: u16 = 16384;
/// The most redirections one call follows; one more is a miss.
pub const MAX_REDIRECTIONS: u8 = 3;
/// The least time between two refreshes of a worker's map.
pub const REFRESH_MS: i64 = 500;
/// The command that reads the map.
pub const SLOTS_COMMAND: &[&[u8]] = &[b"CLUSTER", b"SLOTS"];

/// CRC16/XMODEM's tables: `[k][v]` is the CRC (from 0) of the byte `v`
/// followed by `k` zero bytes; `[0]` is the classic byte table.
const CRC16_TABLES: [[u16; 256]; 8] = {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection, no
/// final xor), as Redis Cluster hashes names; eight bytes at a time (the
/// CRC is linear: the running CRC folds into the first two bytes, and each
/// byte's share is looked up by how many bytes follow it in the block),
/// then a byte at a time.
pub fn crc16(bytes: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut chunks = bytes.chunks_exact(8);
    let mut crc = 0u16;
    for c in &mut chunks {
        let [hi, lo] = crc.to_be_bytes();
        crc = t[7][usize::from(c[0] ^ hi)]
            ^ t[6][usize::from(c[1] ^ lo)]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ t[0][usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The slot of `name`: of its hash tag when it has one (the bytes between
/// the first `{` and the first `}` after it, when there are some), else of
/// the whole name.
pub fn key_slot(name: &[u8]) -> u16 {
    let hashed = find_byte(name, b'{')
        .and_then(|open| {
            let rest = &name[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(name);
    crc16(hashed) % SLOTS
}

/// Where `needle` first is in `hay`: eight bytes at a time (a word with
/// no byte equal to it has no zero byte once xored with it), then the rest.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut at = 0;
    for word in hay.chunks_exact(8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_ne_bytes(bytes) ^ pattern;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    let found = hay[at..].iter().position(|&b| b == needle)?;
    Some(at + found)
}

/// Commands as their bytes and their arguments.
type Commands<'a> = Vec<(&'a [u8], Vec<Vec<u8>>)>;

/// The commands of a pipeline (RESP, as `resp::command` writes them), each
/// as its bytes and its arguments; `None` when they do not read as
/// `count` commands and nothing else.
fn commands_of(commands: &[u8], count: usize) -> Option<Commands<'_>> {
    let mut reader = Reader::new(Limits::CALLS);
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let (used, progress) = reader.read(&commands[at..]);
        let Progress::Reply(Reply::Array(Some(args))) = progress else {
            return None;
        };
        let args = args
            .into_iter()
            .map(|arg| match arg {
                Reply::Bulk(Some(bytes)) => Some(bytes),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        out.push((&commands[at..at + used], args));
        at += used;
    }
    (at == commands.len()).then_some(out)
}

/// The slot of a call of `count` commands: its first command's first
/// argument's (every command of the tier names its key first). `None`
/// for a call without one. Read in place from the first command's RESP
/// (a call's every hop asks this: no copy of its arguments).
pub fn call_slot(commands: &[u8], count: usize) -> Option<u16> {
    if count == 0 {
        return None;
    }
    let (args, rest) = resp_line(commands, b'*')?;
    if args < 2 {
        return None;
    }
    let (_, rest) = resp_bulk(rest)?;
    let (name, _) = resp_bulk(rest)?;
    Some(key_slot(name))
}

/// A RESP header line `<kind><digits>\r\n` at the start of `buf`: its
/// number and what follows it.
fn resp_line(buf: &[u8], kind: u8) -> Option<(usize, &[u8])> {
    let (&first, rest) = buf.split_first()?;
    if first != kind {
        return None;
    }
    // At most 10 digits (a name's length is far below that).
    let mut n = 0usize;
    let mut at = 0;
    while let Some(&d) = rest.get(at) {
        if !d.is_ascii_digit() || at == 10 {
            break;
        }
        n = n * 10 + usize::from(d - b'0');
        at += 1;
    }
    if at == 0 {
        return None;
    }
    let rest = rest[at..].strip_prefix(b"\r\n")?;
    Some((n, rest))
}

/// A bulk string `$<len>\r\n<bytes>\r\n` at the start of `buf`: its bytes
/// and what follows it.
fn resp_bulk(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = resp_line(buf, b'$')?;
    let bytes = rest.get(..len)?;
    let rest = rest[len..].strip_prefix(b"\r\n")?;
    Some((bytes, rest))
}

/// The call sent again after `-ASK`: `ASKING` before each command (the
/// server forgets it after one), so twice as many replies.
pub fn with_asking(commands: &[u8], count: usize) -> Option<Vec<u8>> {
    let mut asking = Vec::with_capacity(16);
    resp::command(&mut asking, &[b"ASKING"]);
    let mut out = Vec::with_capacity(commands.len() + count * asking.len());
    for (bytes, _) in commands_of(commands, count)? {
        out.extend_from_slice(&asking);
        out.extend_from_slice(bytes);
    }
    Some(out)
}

/// The replies of a call sent [`with_asking`]: the commands' own, once
/// every `ASKING` was answered `+OK`; `None` otherwise.
pub fn without_asking(replies: Vec<Reply>) -> Option<Vec<Reply>> {
    if replies.len() % 2 != 0 {
        return None;
    }
    let mut own = Vec::with_capacity(replies.len() / 2);
    let mut replies = replies.into_iter();
    while let (Some(asked), Some(reply)) = (replies.next(), replies.next()) {
        if !matches!(&asked, Reply::Status(ok) if ok.as_slice() == b"OK") {
            return None;
        }
        own.push(reply);
    }
    Some(own)
}

/// Where a server sent a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirection {
    /// `-MOVED slot ip:port`: the slot lives there now (the map is stale).
    Moved { slot: u16, to: SocketAddr },
    /// `-ASK slot ip:port`: this name is there while the slot moves (the
    /// map stays).
    Ask { slot: u16, to: SocketAddr },
}

impl Redirection {
    pub fn to(self) -> SocketAddr {
        match self {
            Redirection::Moved { to, .. } | Redirection::Ask { to, .. } => to,
        }
    }
}

/// A `-MOVED` or `-ASK` that does not name a slot and a usable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// What a `-MOVED` or `-ASK` reply says: `Ok(None)` for any other reply.
pub fn redirection(reply: &Reply) -> Result<Option<Redirection>, Unreadable> {
    let Reply::Error(text) = reply else {
        return Ok(None);
    };
    let mut words = text.split(|&b| b == b' ');
    let kind = words.next().unwrap_or_default();
    if kind != b"MOVED" && kind != b"ASK" {
        return Ok(None);
    }
    let (Some(slot), Some(addr), None) = (words.next(), words.next(), words.next()) else {
        return Err(Unreadable);
    };
    let slot = number(slot)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n < SLOTS)
        .ok_or(Unreadable)?;
    let to = node_address(addr).ok_or(Unreadable)?;
    Ok(Some(match kind {
        b"MOVED" => Redirection::Moved { slot, to },
        _ => Redirection::Ask { slot, to },
    }))
}

fn number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// An IP address a node may have: one the module can connect to and
/// that is no broadcast, multicast or unspecified address.
fn usable_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// `ip:port` (IPv6 as Redis writes it: `::1:7000`, the port after the
/// last colon; or bracketed): no host names, a port from 1.
fn node_address(text: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(text).ok()?;
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port = u16::try_from(number(port.as_bytes())?).ok()?;
    (port != 0 && usable_ip(ip)).then_some(SocketAddr::new(ip, port))
}

/// What a call does with its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// No redirection: the replies are the call's.
    Done,
    /// Send the call again there (after `ASKING` for `Ask`).
    Follow(Redirection),
    /// A redirection too many, or one not to follow (for another slot
    /// than the call's, or that does not read): a miss.
    GiveUp,
}

/// What the replies of a call for `slot` (when it has one), redirected
/// `hops` times so far, ask for. The first redirection among them decides
/// (every command of a call is for one slot).
pub fn next(replies: &[Reply], slot: Option<u16>, hops: u8) -> Next {
    for reply in replies {
        match redirection(reply) {
            Ok(None) => continue,
            Err(Unreadable) => return Next::GiveUp,
            Ok(Some(r)) => {
                let (Redirection::Moved { slot: to_slot, .. }
                | Redirection::Ask { slot: to_slot, .. }) = r;
                if slot != Some(to_slot) || hops >= MAX_REDIRECTIONS {
                    return Next::GiveUp;
                }
                return Next::Follow(r);
            }
        }
    }
    Next::Done
}

/// Whether a call's replies say the cluster is down (`-CLUSTERDOWN`: a
/// node lost sight of a slot's primary, which may be failing over; the map
/// is read again). Any other error reply, `-TRYAGAIN` (a name of a slot
/// being moved, while a command needs several) among them, is the call's
/// plain answer: a miss.
pub fn says_down(replies: &[Reply]) -> bool {
    replies
        .iter()
        .any(|r| matches!(r, Reply::Error(text) if resp::error_kind(text) == "CLUSTERDOWN"))
}

/// Which primary serves each slot, as a node said (`CLUSTER SLOTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// (first slot, last slot, primary), sorted, not overlapping.
    ranges: Vec<(u16, u16, SocketAddr)>,
}

impl SlotMap {
    /// The map `CLUSTER SLOTS` answered: one entry per range, `[first,
    /// last, [ip, port, id, ...], replicas...]`; the primary is the first
    /// node. A range whose primary has no usable address (an empty or
    /// `?` endpoint) is left out: its slots go to the seeds, which
    /// redirect. Anything else out of shape refuses the whole map.
    pub fn parse(reply: &Reply) -> Result<SlotMap, String> {
        let Reply::Array(Some(entries)) = reply else {
            return Err(match reply {
                Reply::Error(text) => format!("-{}", resp::error_kind(text)),
                _ => "not an array".into(),
            });
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Reply::Array(Some(fields)) = entry else {
                return Err("a range is not an array".into());
            };
            let [Reply::Integer(first), Reply::Integer(last), Reply::Array(Some(node)), ..] =
                fields.as_slice()
            else {
                return Err("a range is not [first, last, node, ...]".into());
            };
            let slot = |n: i64| u16::try_from(n).ok().filter(|n| *n < SLOTS);
            let (Some(first), Some(last)) = (slot(*first), slot(*last)) else {
                return Err("a slot out of 0..16383".into());
            };
            if first > last {
                return Err("a range that ends before it starts".into());
            }
            let [Reply::Bulk(Some(ip)), Reply::Integer(port), ..] = node.as_slice() else {
                return Err("a node is not [ip, port, ...]".into());
            };
            if ip.is_empty() || ip.as_slice() == b"?" {
                continue;
            }
            let ip = std::str::from_utf8(ip)
                .ok()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .filter(|ip| usable_ip(*ip))
                .ok_or("a node's address is not an IP address")?;
            let port = u16::try_from(*port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or("a node's port is out of 1..65535")?;
            ranges.push((first, last, SocketAddr::new(ip, port)));
        }
        ranges.sort_unstable_by_key(|r| r.0);
        if ranges.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err("ranges that overlap".into());
        }
        Ok(SlotMap { ranges })
    }

    /// The primary serving `slot`, if the map knows one.
    pub fn node(&self, slot: u16) -> Option<SocketAddr> {
        let at = self.ranges.partition_point(|r| r.0 <= slot);
        let (_, last, node) = *self.ranges.get(at.checked_sub(1)?)?;
        (slot <= last).then_some(node)
    }

    /// `-MOVED` said `slot` is at `to` now: until the next refresh, the
    /// slot alone goes there.
    pub fn moved(&mut self, slot: u16, to: SocketAddr) {
        if self.node(slot) == Some(to) || slot >= SLOTS {
            return;
        }
        let mut ranges = Vec::with_capacity(self.ranges.len() + 2);
        for &(first, last, node) in &self.ranges {
            if slot < first || slot > last {
                ranges.push((first, last, node));
                continue;
            }
            if first < slot {
                ranges.push((first, slot - 1, node));
            }
            if slot < last {
                ranges.push((slot + 1, last, node));
            }
        }
        ranges.push((slot, slot, to));
        ranges.sort_unstable_by_key(|r| r.0);
        self.ranges = ranges;
    }

    /// Whether it knows no node (a worker's map before its first read).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many ranges and how many primaries (for the log).
    pub fn size(&self) -> (usize, usize) {
        let mut nodes: Vec<SocketAddr> = self.ranges.iter().map(|r| r.2).collect();
        nodes.sort_unstable();
        nodes.dedup();
        (self.ranges.len(), nodes.len())
    }
}

/// A worker's refreshes of its map: one at a time, at most every
/// [`REFRESH_MS`].
#[derive(Debug, Default)]
pub struct Refreshes {
    running: bool,
    last_ms: Option<i64>,
}

impl Refreshes {
    /// Whether a refresh starts now (`true`: it is running until [`Refreshes::ended`]).
    pub fn start(&mut self, now_ms: i64) -> bool {
        let recent = self.last_ms.is_some_and(|last| now_ms - last < REFRESH_MS);
        if self.running || recent {
            return false;
        }
        self.running = true;
        self.last_ms = Some(now_ms);
        true
    }

    /// The refresh that started ended (its map taken or not).
    pub fn ended(&mut self) {
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }

    fn range(first: i64, last: i64, ip: &[u8], port: i64) -> Reply {
        let node = Reply::Array(Some(vec![
            bulk(ip),
            Reply::Integer(port),
            bulk(b"0123abcd"),
        ]));
        let replica = Reply::Array(Some(vec![
            bulk(b"127.0.0.1"),
            Reply::Integer(9),
            bulk(b"r"),
        ]));
        Reply::Array(Some(vec![
            Reply::Integer(first),
            Reply::Integer(last),
            node,
            replica,
        ]))
    }

    #[test]
    fn crc16_of_the_specs_vectors() {
        // The Redis Cluster specification's check value, and its examples.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
    }

    #[test]
    fn hash_tags_as_the_spec_reads_them() {
        let slot = key_slot(b"user1000");
        assert_eq!(key_slot(b"{user1000}.following"), slot);
        assert_eq!(key_slot(b"foo{user1000}bar{x}"), slot);
        // Empty tag: the whole name.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        // The first '{' and the first '}' after it.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace: the whole name.
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % SLOTS);
    }

    #[test]
    fn a_calls_slot_is_its_first_names() {
        let mut c = Vec::new();
        resp::command(&mut c, &[b"HSET", b"oauth2:t:ab", b"f", b"v"]);
        resp::command(&mut c, &[b"PEXPIRE", b"oauth2:t:ab", b"100"]);
        assert_eq!(call_slot(&c, 2), Some(key_slot(b"oauth2:t:ab")));
        assert_eq!(call_slot(&c, 0), None);
        assert_eq!(call_slot(b"garbage", 1), None);
        let mut nameless = Vec::new();
        resp::command(&mut nameless, &[b"PING"]);
        assert_eq!(call_slot(&nameless, 1), None);
        // Cut anywhere: no slot, no panic.
        let named = b"*4\r\n$4\r\nHSET\r\n$11\r\noauth2:t:ab\r\n".len();
        for end in 0..c.len() {
            let slot = (end >= named).then(|| key_slot(b"oauth2:t:ab"));
            assert_eq!(call_slot(&c[..end], 1), slot, "cut at {end}");
        }
        assert_eq!(call_slot(b"*2\r\n$4\r\nHGET\r\n$99\r\nab\r\n", 1), None);
        assert_eq!(call_slot(b"*2\r\n$4\r\nHGETX\r\n$2\r\nab\r\n", 1), None);
    }

    #[test]
    fn find_byte_finds_the_first() {
        for len in 0..40 {
            for at in 0..=len {
                let mut hay = vec![b'a'; len];
                if at < len {
                    hay[at] = b'{';
                    hay.iter_mut()
                        .skip(at + 1)
                        .step_by(3)
                        .for_each(|b| *b = b'{');
                }
                assert_eq!(
                    find_byte(&hay, b'{'),
                    (at < len).then_some(at),
                    "{len} {at}"
                );
            }
        }
        // Bytes next to the needle's value (borrows in the word trick).
        assert_eq!(
            find_byte(&[0x7a, 0x7c, 0xfb, 0x00, 0xff, 0x7b], b'{'),
            Some(5)
        );
    }

    #[test]
    fn clusterdown_says_down_and_tryagain_does_not() {
        let err = |t: &[u8]| Reply::Error(t.to_vec());
        let ok = Reply::Bulk(Some(b"v".to_vec()));
        assert!(says_down(&[err(b"CLUSTERDOWN The cluster is down")]));
        assert!(says_down(&[
            ok.clone(),
            err(b"CLUSTERDOWN Hash slot not served")
        ]));
        assert!(!says_down(&[err(
            b"TRYAGAIN Multiple keys request during rehashing of slot"
        )]));
        assert!(!says_down(&[
            err(b"CLUSTERDOWNX"),
            err(b"ERR CLUSTERDOWN"),
            ok
        ]));
        assert!(!says_down(&[Reply::Status(b"CLUSTERDOWN".to_vec())]));
        assert!(!says_down(&[]));
    }

    #[test]
    fn asking_before_each_command() {
        let mut c = Vec::new();
        resp::command(&mut c, &[b"DEL", b"k"]);
        resp::command(&mut c, &[b"PUBLISH", b"ch", b"m"]);
        let asked = with_asking(&c, 2).unwrap();
        let read = resp::read_commands(&asked, 4);
        let words: Vec<&[u8]> = read.iter().map(|cmd| cmd[0].as_slice()).collect();
        assert_eq!(words, [&b"ASKING"[..], b"DEL", b"ASKING", b"PUBLISH"]);
        let ok = || Reply::Status(b"OK".to_vec());
        let replies = vec![ok(), Reply::Integer(1), ok(), Reply::Integer(2)];
        assert_eq!(
            without_asking(replies),
            Some(vec![Reply::Integer(1), Reply::Integer(2)])
        );
        let refused = vec![Reply::Error(b"ERR no".to_vec()), Reply::Integer(1)];
        assert_eq!(without_asking(refused), None);
        assert_eq!(without_asking(vec![ok()]), None);
    }

    #[test]
    fn redirections_read() {
        let e = |t: &[u8]| Reply::Error(t.to_vec());
        assert_eq!(
            redirection(&e(b"MOVED 3999 127.0.0.1:6381")),
            Ok(Some(Redirection::Moved {
                slot: 3999,
                to: addr("127.0.0.1:6381")
            }))
        );
        assert_eq!(
            redirection(&e(b"ASK 3999 ::1:7000")),
            Ok(Some(Redirection::Ask {
                slot: 3999,
                to: addr("[::1]:7000")
            }))
        );
        assert_eq!(redirection(&e(b"ERR wrong")), Ok(None));
        assert_eq!(redirection(&Reply::Integer(1)), Ok(None));
        for bad in [
            &b"MOVED"[..],
            b"MOVED 3999",
            b"MOVED 16384 127.0.0.1:1",
            b"MOVED -1 127.0.0.1:1",
            b"MOVED 1 127.0.0.1:0",
            b"MOVED 1 127.0.0.1:65536",
            b"MOVED 1 redis.example:6379",
            b"MOVED 1 0.0.0.0:6379",
            b"MOVED 1 255.255.255.255:6379",
            b"MOVED 1 224.0.0.1:6379",
            b"ASK 1 127.0.0.1:1 extra",
            b"ASK 1 :6379",
        ] {
            assert_eq!(
                redirection(&e(bad)),
                Err(Unreadable),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn what_a_call_does_next() {
        let moved = Reply::Error(b"MOVED 7 127.0.0.1:7001".to_vec());
        let to = addr("127.0.0.1:7001");
        assert_eq!(next(&[Reply::Integer(1)], Some(7), 0), Next::Done);
        assert_eq!(
            next(&[moved.clone(), Reply::Integer(0)], Some(7), 0),
            Next::Follow(Redirection::Moved { slot: 7, to })
        );
        // Bounded.
        assert_eq!(
            next(core::slice::from_ref(&moved), Some(7), MAX_REDIRECTIONS - 1),
            Next::Follow(Redirection::Moved { slot: 7, to })
        );
        assert_eq!(
            next(core::slice::from_ref(&moved), Some(7), MAX_REDIRECTIONS),
            Next::GiveUp
        );
        // For another slot, or a call without one: not followed.
        assert_eq!(
            next(core::slice::from_ref(&moved), Some(8), 0),
            Next::GiveUp
        );
        assert_eq!(next(&[moved], None, 0), Next::GiveUp);
        assert_eq!(
            next(&[Reply::Error(b"ASK x y".to_vec())], Some(7), 0),
            Next::GiveUp
        );
    }

    #[test]
    fn the_map_of_cluster_slots() {
        let reply = Reply::Array(Some(vec![
            range(5461, 10922, b"127.0.0.1", 7001),
            range(0, 5460, b"127.0.0.1", 7000),
            range(10923, 16383, b"::1", 7002),
        ]));
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.node(0), Some(addr("127.0.0.1:7000")));
        assert_eq!(map.node(5460), Some(addr("127.0.0.1:7000")));
        assert_eq!(map.node(5461), Some(addr("127.0.0.1:7001")));
        assert_eq!(map.node(16383), Some(addr("[::1]:7002")));
        assert_eq!(map.size(), (3, 3));
        // A hole: no node.
        let holed = Reply::Array(Some(vec![range(0, 99, b"127.0.0.1", 7000)]));
        assert_eq!(SlotMap::parse(&holed).unwrap().node(100), None);
        // An unknown endpoint: the range is left out.
        let unknown = Reply::Array(Some(vec![
            range(0, 99, b"?", 7000),
            range(100, 199, b"", 1),
        ]));
        assert!(SlotMap::parse(&unknown).unwrap().is_empty());
    }

    #[test]
    fn hostile_maps_are_refused_whole() {
        let bad = [
            Reply::Error(b"ERR This instance has cluster support disabled".to_vec()),
            Reply::Integer(1),
            Reply::Array(None),
            Reply::Array(Some(vec![Reply::Integer(1)])),
            Reply::Array(Some(vec![range(0, 16384, b"127.0.0.1", 1)])),
            Reply::Array(Some(vec![range(-1, 5, b"127.0.0.1", 1)])),
            Reply::Array(Some(vec![range(9, 5, b"127.0.0.1", 1)])),
            Reply::Array(Some(vec![range(0, 5, b"redis.example", 1)])),
            Reply::Array(Some(vec![range(0, 5, b"0.0.0.0", 1)])),
            Reply::Array(Some(vec![range(0, 5, b"127.0.0.1", 0)])),
            Reply::Array(Some(vec![range(0, 5, b"127.0.0.1", 70000)])),
            Reply::Array(Some(vec![
                range(0, 5, b"127.0.0.1", 1),
                range(5, 9, b"127.0.0.1", 2),
            ])),
            Reply::Array(Some(vec![Reply::Array(Some(vec![
                Reply::Integer(0),
                Reply::Integer(1),
                bulk(b"127.0.0.1"),
            ]))])),
        ];
        for reply in bad {
            assert!(SlotMap::parse(&reply).is_err(), "{reply:?}");
        }
    }

    #[test]
    fn moved_changes_one_slot() {
        let reply = Reply::Array(Some(vec![range(0, 16383, b"127.0.0.1", 7000)]));
        let mut map = SlotMap::parse(&reply).unwrap();
        map.moved(100, addr("127.0.0.1:7001"));
        assert_eq!(map.node(99), Some(addr("127.0.0.1:7000")));
        assert_eq!(map.node(100), Some(addr("127.0.0.1:7001")));
        assert_eq!(map.node(101), Some(addr("127.0.0.1:7000")));
        map.moved(0, addr("127.0.0.1:7002"));
        map.moved(16383, addr("127.0.0.1:7002"));
        assert_eq!(map.node(0), Some(addr("127.0.0.1:7002")));
        assert_eq!(map.node(16383), Some(addr("127.0.0.1:7002")));
        assert_eq!(map.node(1), Some(addr("127.0.0.1:7000")));
        // Into an empty map.
        let mut empty = SlotMap::default();
        empty.moved(5, addr("127.0.0.1:1"));
        assert_eq!(
            (empty.node(4), empty.node(5)),
            (None, Some(addr("127.0.0.1:1")))
        );
    }

    #[test]
    fn refreshes_one_at_a_time_and_spaced() {
        let mut r = Refreshes::default();
        assert!(r.start(1000));
        assert!(!r.start(1001), "one at a time");
        r.ended();
        assert!(!r.start(1000 + REFRESH_MS - 1), "spaced");
        assert!(r.start(1000 + REFRESH_MS));
    }

    /// The CRC a bit at a time, as the specification writes it: the table
    /// agrees everywhere.
    fn crc16_bitwise(bytes: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &b in bytes {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    proptest! {
        #[test]
        fn find_byte_agrees_with_position(
            hay in proptest::collection::vec(any::<u8>(), 0..80),
            needle in any::<u8>(),
        ) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
        }

        #[test]
        fn call_slot_reads_any_first_name(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 2..5),
            junk in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut c = Vec::new();
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            resp::command(&mut c, &refs);
            c.extend_from_slice(&junk);
            prop_assert_eq!(call_slot(&c, 1), Some(key_slot(&args[1])));
            // Never a panic on bytes that are no command.
            let _ = call_slot(&junk, 1);
        }

        #[test]
        fn crc16_agrees_with_the_bitwise_crc(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(crc16(&bytes), crc16_bitwise(&bytes));
        }

        #[test]
        fn a_tag_decides_the_slot(tag in "[a-z0-9]{1,12}", a in "[a-z]{0,8}", b in "[a-z{}]{0,8}") {
            let name = format!("{a}{{{tag}}}{b}");
            prop_assert_eq!(key_slot(name.as_bytes()), key_slot(tag.as_bytes()));
            prop_assert!(key_slot(name.as_bytes()) < SLOTS);
        }

        #[test]
        fn any_reply_is_a_map_or_refused(reply in hostile_reply()) {
            if let Ok(map) = SlotMap::parse(&reply) {
                for slot in [0, 1, 8191, 16383] {
                    if let Some(node) = map.node(slot) {
                        prop_assert!(node.port() != 0 && usable_ip(node.ip()));
                    }
                }
            }
            let _ = next(core::slice::from_ref(&reply), Some(1), 0);
        }

        #[test]
        fn moved_keeps_the_map_consistent(
            moves in proptest::collection::vec((0u16..SLOTS, 1u16..4), 0..20),
        ) {
            let reply = Reply::Array(Some(vec![range(0, 16383, b"127.0.0.1", 7000)]));
            let mut map = SlotMap::parse(&reply).unwrap();
            let mut expected = std::collections::HashMap::new();
            for (slot, port) in moves {
                let to = SocketAddr::new([127, 0, 0, 1].into(), port);
                map.moved(slot, to);
                expected.insert(slot, to);
            }
            prop_assert!(map.ranges.windows(2).all(|w| w[0].1 < w[1].0));
            for (slot, to) in expected {
                prop_assert_eq!(map.node(slot), Some(to));
            }
        }
    }

    fn hostile_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Reply::Integer),
            (-2i64..17000).prop_map(Reply::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12))
                .prop_map(Reply::Bulk),
            Just(bulk(b"127.0.0.1")),
            Just(Reply::Error(b"MOVED 1 127.0.0.1:7000".to_vec())),
            Just(Reply::Error(b"ASK 1 1.2.3.4:0".to_vec())),
        ];
        leaf.prop_recursive(3, 32, 5, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..5)).prop_map(Reply::Array)
        })
    }
}
