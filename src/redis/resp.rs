//! RESP2, the protocol of Redis and Valkey: commands out as arrays of bulk
//! strings, replies in, read from bytes that may stop anywhere. Replies come
//! from a server that may be broken or hostile: every length is bounded,
//! nesting is shallow, and nothing panics.
//!
//! A [`Reader`] keeps its place between reads (the header line read so far,
//! the bulk string being filled, the arrays still open), so each byte is
//! looked at once however the bytes are cut: a server that sends a large
//! reply a few bytes at a time costs work in proportion to its bytes, not
//! to their square. Its [`Limits`] bound how deep arrays nest, how many
//! elements they announce, how many values a reply holds, and which bulk
//! strings are kept: a longer one is read past without being kept.

/// The largest bulk string accepted (Redis' own `proto-max-bulk-len`).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// The longest header line (`+OK`, `-ERR ...`, `:123`, `$5`).
const MAX_LINE: usize = 4096;
/// The most bytes a kept bulk string reserves before its bytes arrive.
const RESERVE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(Vec<u8>),
    /// `-ERR ...`, `-NOAUTH ...`
    Error(Vec<u8>),
    Integer(i64),
    /// `$-1` is `None` (no such key or field).
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    /// A bulk string longer than the reader keeps ([`Limits::keep`]): its
    /// length; its bytes were read past.
    Skipped(usize),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes may complete the replies.
    Incomplete,
    /// The replies asked for, and how many bytes they took.
    Done { replies: Vec<Reply>, used: usize },
    /// No more bytes can make these replies: the connection is unusable.
    Garbage,
}

/// What a [`Reader`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How deep arrays nest: 1 is an array of plain values, 0 no array.
    pub depth: usize,
    /// The most elements one array may announce.
    pub array: usize,
    /// The most values (plain values and arrays) in one reply.
    pub values: usize,
    /// Bulk strings up to this length are kept; a longer one (up to
    /// Redis' 512 MiB) is read past and stands as [`Reply::Skipped`].
    pub keep: usize,
}

impl Limits {
    /// The module's calls (`HGET`, `HSET`, `DEL`, `PUBLISH` ...), which
    /// get plain values back; arrays are allowed, four deep, for what a
    /// future command may need. Their bytes are bounded by the upstream's
    /// buffer (`auth_oauth2_token_redis_buffer_size`).
    pub const CALLS: Limits = Limits {
        depth: 4,
        array: 1024,
        values: 4096,
        keep: MAX_BULK,
    };

    /// A subscribed connection, which gets `["message", channel, payload]`,
    /// `["subscribe", channel, count]` and `["pong", text]`: arrays of at
    /// most three plain values; bulk strings longer than `keep` are skipped.
    pub const fn pubsub(keep: usize) -> Limits {
        Limits {
            depth: 1,
            array: 3,
            values: 4,
            keep,
        }
    }
}

/// What one [`Reader::read`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every byte was read; the reply is not complete yet.
    More,
    /// A whole reply; the bytes after it were not read.
    Reply(Reply),
    /// No more bytes can make a reply: the connection is unusable (and the
    /// reader too, until [`Reader::reset`]).
    Garbage,
}

/// Reads replies from bytes that come in pieces, keeping its place.
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    /// The arrays still open, innermost last.
    open: Vec<OpenArray>,
    /// Values read so far in the current reply.
    values: usize,
    at: At,
    /// The header line read so far (type byte, text, CR, LF).
    line: Vec<u8>,
    /// Bytes looked at and steps taken since the reader was made: the
    /// work, which tests bound.
    work: u64,
}

#[derive(Debug)]
struct OpenArray {
    items: Vec<Reply>,
    left: usize,
}

#[derive(Debug)]
enum At {
    /// A value's header line.
    Header,
    /// A bulk string's bytes, `left` of them still to come; kept unless it
    /// is longer than the limit (`kept` is `None`).
    Bulk {
        len: usize,
        left: usize,
        kept: Option<Vec<u8>>,
    },
    /// The CRLF after a bulk string: `seen` of its two bytes read.
    BulkEnd { seen: usize, value: Reply },
    /// Garbage was read.
    Broken,
}

impl Reader {
    pub fn new(limits: Limits) -> Reader {
        Reader {
            limits,
            open: Vec::new(),
            values: 0,
            at: At::Header,
            line: Vec::new(),
            work: 0,
        }
    }

    /// Forgets what was read (a new connection); the work keeps counting.
    pub fn reset(&mut self) {
        self.open.clear();
        self.values = 0;
        self.at = At::Header;
        self.line.clear();
    }

    /// Bytes looked at plus steps taken, since the reader was made.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Reads from `buf` until a reply is complete or `buf` is used up:
    /// how many bytes were read, and what they came to. After a reply, the
    /// rest of `buf` is for the next call.
    pub fn read(&mut self, buf: &[u8]) -> (usize, Progress) {
        let mut at = 0;
        loop {
            let Ok((used, value)) = self.step(&buf[at..]) else {
                self.reset();
                self.at = At::Broken;
                return (at, Progress::Garbage);
            };
            self.work += used as u64 + 1;
            at += used;
            match value.and_then(|value| self.complete(value)) {
                Some(reply) => return (at, Progress::Reply(reply)),
                None if at == buf.len() => return (at, Progress::More),
                None => {}
            }
        }
    }

    /// One step: the bytes it read (at least one when `buf` has any) and
    /// the value it completed, if any.
    fn step(&mut self, buf: &[u8]) -> Result<(usize, Option<Reply>), ()> {
        match &mut self.at {
            At::Broken => Err(()),
            At::Header => {
                // Type byte, at most MAX_LINE bytes of text, CR, LF.
                let room = (MAX_LINE + 3).saturating_sub(self.line.len());
                let window = &buf[..buf.len().min(room)];
                match window.iter().position(|&b| b == b'\n') {
                    Some(lf) => {
                        self.line.extend_from_slice(&window[..=lf]);
                        let value = self.header()?;
                        self.line.clear();
                        Ok((lf + 1, value))
                    }
                    None if window.len() == room => Err(()),
                    None => {
                        self.line.extend_from_slice(window);
                        Ok((window.len(), None))
                    }
                }
            }
            At::Bulk { len, left, kept } => {
                let n = (*left).min(buf.len());
                if let Some(kept) = kept {
                    kept.extend_from_slice(&buf[..n]);
                }
                *left -= n;
                if *left == 0 {
                    let value = match kept.take() {
                        Some(bytes) => Reply::Bulk(Some(bytes)),
                        None => Reply::Skipped(*len),
                    };
                    self.at = At::BulkEnd { seen: 0, value };
                }
                Ok((n, None))
            }
            At::BulkEnd { seen, value } => {
                let Some(&byte) = buf.first() else {
                    return Ok((0, None));
                };
                if byte != b"\r\n"[*seen] {
                    return Err(());
                }
                *seen += 1;
                if *seen < 2 {
                    return Ok((1, None));
                }
                let value = core::mem::replace(value, Reply::Integer(0));
                self.at = At::Header;
                Ok((1, Some(value)))
            }
        }
    }

    /// The header line in `line` is whole: the value it is, or what it
    /// starts (a bulk string's bytes, an array's elements).
    fn header(&mut self) -> Result<Option<Reply>, ()> {
        let line = &self.line;
        if line.len() < 3 || line[line.len() - 2] != b'\r' {
            return Err(());
        }
        self.values += 1;
        if self.values > self.limits.values {
            return Err(());
        }
        let text = &line[1..line.len() - 2];
        Ok(match line[0] {
            b'+' => Some(Reply::Status(text.to_vec())),
            b'-' => Some(Reply::Error(text.to_vec())),
            b':' => Some(Reply::Integer(integer(text).ok_or(())?)),
            b'$' => match length(text, MAX_BULK)? {
                None => Some(Reply::Bulk(None)),
                Some(0) => {
                    self.at = At::BulkEnd {
                        seen: 0,
                        value: Reply::Bulk(Some(Vec::new())),
                    };
                    None
                }
                Some(len) => {
                    let kept =
                        (len <= self.limits.keep).then(|| Vec::with_capacity(len.min(RESERVE)));
                    self.at = At::Bulk {
                        len,
                        left: len,
                        kept,
                    };
                    None
                }
            },
            b'*' if self.open.len() < self.limits.depth => match length(text, self.limits.array)? {
                None => Some(Reply::Array(None)),
                Some(0) => Some(Reply::Array(Some(Vec::new()))),
                Some(left) => {
                    self.open.push(OpenArray {
                        items: Vec::with_capacity(left.min(16)),
                        left,
                    });
                    None
                }
            },
            _ => return Err(()),
        })
    }

    /// A value is complete: into the array it belongs to, closing every
    /// array it completes; the reply when nothing is left open.
    fn complete(&mut self, mut value: Reply) -> Option<Reply> {
        loop {
            let Some(top) = self.open.last_mut() else {
                self.values = 0;
                return Some(value);
            };
            top.items.push(value);
            top.left -= 1;
            if top.left > 0 {
                return None;
            }
            let items = self.open.pop().map(|a| a.items).unwrap_or_default();
            value = Reply::Array(Some(items));
        }
    }
}

/// Appends one command, an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads `count` replies from the start of `buf` (limits of the module's calls).
pub fn parse(buf: &[u8], count: usize) -> Parsed {
    let mut reader = Reader::new(Limits::CALLS);
    let mut replies = Vec::with_capacity(count.min(16));
    let mut at = 0;
    while replies.len() < count {
        match reader.read(&buf[at..]) {
            (used, Progress::Reply(reply)) => {
                replies.push(reply);
                at += used;
            }
            (_, Progress::More) => return Parsed::Incomplete,
            (_, Progress::Garbage) => return Parsed::Garbage,
        }
    }
    Parsed::Done { replies, used: at }
}

/// A decimal integer as RESP writes it: an optional minus, digits only.
fn integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Negative numbers are summed downwards, so that i64::MIN reads too.
    digits.iter().try_fold(0i64, |v, &d| {
        let (v, d) = (v.checked_mul(10)?, i64::from(d - b'0'));
        if negative {
            v.checked_sub(d)
        } else {
            v.checked_add(d)
        }
    })
}

/// A length: -1 (null) or 0..=max.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, ()> {
    match integer(text).ok_or(())? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        _ => Err(()),
    }
}

/// The kind of an error reply, for logs: its first word (`ERR`, `NOAUTH`,
/// `WRONGPASS`, `READONLY`, `OOM`, ...), capital letters only, at most 16.
pub fn error_kind(text: &[u8]) -> &str {
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    let word = &word[..word.len().min(16)];
    match !word.is_empty() && word.iter().all(u8::is_ascii_uppercase) {
        // Checked ASCII above.
        true => core::str::from_utf8(word).unwrap_or("ERR"),
        false => "ERR",
    }
}

/// What a subscribed connection receives (RESP2 pub/sub): three arrays of
/// plain values, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push<'a> {
    /// `["message", channel, payload]`; the payload is `None` when it was
    /// too long to keep ([`Reply::Skipped`]).
    Message {
        channel: &'a [u8],
        payload: Option<&'a [u8]>,
    },
    /// `["subscribe", channel, count]`: the subscription's confirmation.
    Subscribed(&'a [u8]),
    /// `["pong", text]`: the answer to `PING` on a subscribed connection.
    Pong,
}

/// The pub/sub push `reply` is, if it is one.
pub fn push(reply: &Reply) -> Option<Push<'_>> {
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    match items.as_slice() {
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(channel)), payload]
            if kind.as_slice() == b"message" =>
        {
            let payload = match payload {
                Reply::Bulk(Some(payload)) => Some(payload.as_slice()),
                Reply::Skipped(_) => None,
                _ => return None,
            };
            Some(Push::Message { channel, payload })
        }
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(channel)), Reply::Integer(_)]
            if kind.as_slice() == b"subscribe" =>
        {
            Some(Push::Subscribed(channel))
        }
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(_))] if kind.as_slice() == b"pong" => {
            Some(Push::Pong)
        }
        _ => None,
    }
}

/// `count` commands as `command` wrote them, read back as lists of
/// arguments (RESP reads commands like replies): for the tests of the files
/// that build pipelines.
#[cfg(test)]
pub fn read_commands(commands: &[u8], count: usize) -> Vec<Vec<Vec<u8>>> {
    let Parsed::Done { replies, used } = parse(commands, count) else {
        panic!("not {count} commands");
    };
    assert_eq!(used, commands.len(), "nothing after them");
    replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Array(Some(args)) => args
                .into_iter()
                .map(|arg| match arg {
                    Reply::Bulk(Some(bytes)) => bytes,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(buf: &[u8], count: usize) -> (Vec<Reply>, usize) {
        match parse(buf, count) {
            Parsed::Done { replies, used } => (replies, used),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"HGET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$4\r\nHGET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn reads_every_kind_of_reply() {
        let buf = b"+OK\r\n-NOAUTH Authentication required.\r\n:42\r\n$-1\r\n$3\r\na\r\n\r\n*-1\r\n*2\r\n$1\r\nx\r\n:-7\r\nextra";
        let (replies, used) = done(buf, 7);
        assert_eq!(
            replies,
            vec![
                Reply::Status(b"OK".to_vec()),
                Reply::Error(b"NOAUTH Authentication required.".to_vec()),
                Reply::Integer(42),
                Reply::Bulk(None),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Array(None),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"x".to_vec())),
                    Reply::Integer(-7)
                ])),
            ]
        );
        assert_eq!(&buf[used..], b"extra");
    }

    #[test]
    fn refuses_what_no_more_bytes_can_mend() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"$5\r\nabcdefg\r\n",
            b"$-2\r\n",
            b":12a\r\n",
            b"+OK\n",
            b"$999999999999\r\n",
            b"*2000\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert_eq!(
                parse(bad, 1),
                Parsed::Garbage,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(&[b'+'; 5000], 1), Parsed::Garbage);
    }

    #[test]
    fn integers_read_to_the_ends_of_i64_and_no_further() {
        for n in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            assert_eq!(
                done(format!(":{n}\r\n").as_bytes(), 1).0,
                vec![Reply::Integer(n)]
            );
        }
        for bad in [
            &b":9223372036854775808\r\n"[..],
            b":-9223372036854775809\r\n",
            b":-\r\n",
            b":\r\n",
            b":+1\r\n",
        ] {
            assert_eq!(parse(bad, 1), Parsed::Garbage);
        }
    }

    #[test]
    fn error_kinds_are_short_capital_words() {
        assert_eq!(
            error_kind(b"WRONGPASS invalid username-password pair"),
            "WRONGPASS"
        );
        assert_eq!(error_kind(b"OOM command not allowed"), "OOM");
        assert_eq!(error_kind(b"weird\r\nstuff"), "ERR");
        assert_eq!(error_kind(b""), "ERR");
        assert_eq!(
            error_kind(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            "ABCDEFGHIJKLMNOP"
        );
    }

    #[test]
    fn recognises_the_three_pushes_only() {
        let stream = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\npay\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$1\r\nx\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n:1\r\n+OK\r\n";
        let (replies, used) = done(stream, 6);
        assert_eq!(used, stream.len());
        let pushes: Vec<_> = replies.iter().map(push).collect();
        assert_eq!(
            pushes,
            [
                Some(Push::Message {
                    channel: &b"ch"[..],
                    payload: Some(&b"pay"[..])
                }),
                Some(Push::Subscribed(&b"ch"[..])),
                Some(Push::Pong),
                None,
                None,
                None
            ]
        );
        let skipped = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"message".to_vec())),
            Reply::Bulk(Some(b"ch".to_vec())),
            Reply::Skipped(5_000_000),
        ]));
        assert_eq!(
            push(&skipped),
            Some(Push::Message {
                channel: &b"ch"[..],
                payload: None
            })
        );
    }

    /// Every reply of `buf`, read by one reader fed `pieces` of it in
    /// turn, then what the end came to (`More` or `Garbage`).
    fn read_all(limits: Limits, pieces: &[&[u8]]) -> (Vec<Reply>, Progress, u64) {
        let mut reader = Reader::new(limits);
        let mut replies = Vec::new();
        for piece in pieces {
            let mut at = 0;
            loop {
                match reader.read(&piece[at..]) {
                    (used, Progress::Reply(reply)) => {
                        replies.push(reply);
                        at += used;
                    }
                    (_, Progress::More) => break,
                    (_, Progress::Garbage) => return (replies, Progress::Garbage, reader.work()),
                }
            }
        }
        (replies, Progress::More, reader.work())
    }

    fn big_reply() -> Vec<u8> {
        // A mebibyte in 1024 bulk strings of 1 KiB, inside four arrays.
        let mut buf = b"*1\r\n*1\r\n*1\r\n*1024\r\n".to_vec();
        for i in 0..1024u32 {
            buf.extend(b"$1024\r\n");
            buf.extend((0..1024u32).map(|j| (i + j) as u8));
            buf.extend(b"\r\n");
        }
        buf
    }

    #[test]
    fn a_reply_in_small_pieces_costs_its_bytes_not_their_square() {
        let buf = big_reply();
        let (whole, end, whole_work) = read_all(Limits::CALLS, &[&buf]);
        assert_eq!((whole.len(), end), (1, Progress::More));
        for size in [1, 7, 4096] {
            let pieces: Vec<&[u8]> = buf.chunks(size).collect();
            let (replies, end, work) = read_all(Limits::CALLS, &pieces);
            assert_eq!(replies, whole, "pieces of {size}");
            assert_eq!(end, Progress::More);
            // Each byte looked at once, one step per piece and per value:
            // re-reading from the start after each piece was ~ bytes^2 / size.
            let bound = 2 * buf.len() as u64 + pieces.len() as u64 + 3 * 1030;
            assert!(work <= bound, "pieces of {size}: {work} > {bound}");
        }
        assert!(whole_work <= 2 * buf.len() as u64);
    }

    #[test]
    fn bulk_strings_over_the_limit_are_read_past_unkept() {
        let limits = Limits::pubsub(16);
        let mut stream = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2097152\r\n".to_vec();
        stream.resize(stream.len() + 2 * 1024 * 1024, b'x');
        stream.extend(b"\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nnew\r\n");
        let pieces: Vec<&[u8]> = stream.chunks(4096).collect();
        let (replies, end, work) = read_all(limits, &pieces);
        assert_eq!(end, Progress::More);
        assert_eq!(
            replies.iter().map(push).collect::<Vec<_>>(),
            [
                Some(Push::Message {
                    channel: &b"ch"[..],
                    payload: None
                }),
                Some(Push::Message {
                    channel: &b"ch"[..],
                    payload: Some(&b"new"[..])
                })
            ]
        );
        assert!(
            matches!(&replies[0], Reply::Array(Some(items)) if items[2] == Reply::Skipped(2 * 1024 * 1024))
        );
        assert!(work <= 2 * stream.len() as u64);
        // A reader in the middle of a skipped string holds none of it.
        let mut reader = Reader::new(limits);
        assert_eq!(
            reader.read(&stream[..1024 * 1024]),
            (1024 * 1024, Progress::More)
        );
        assert!(matches!(reader.at, At::Bulk { kept: None, .. }));
    }

    #[test]
    fn limits_bound_depth_elements_and_values() {
        let pubsub = Limits::pubsub(64);
        for bad in [
            &b"*4\r\n"[..],
            b"*1\r\n*1\r\n",
            b"*-2\r\n",
            b"*3\r\n$1\r\na\r\n*0\r\n",
        ] {
            let (replies, end, _) = read_all(pubsub, &[bad]);
            assert_eq!(
                (replies.len(), end),
                (0, Progress::Garbage),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let (replies, end, _) = read_all(pubsub, &[b"*0\r\n*-1\r\n+OK\r\n:5\r\n"]);
        assert_eq!(replies.len(), 4);
        assert_eq!(end, Progress::More);
        // Values: each element and each array counts, per reply.
        let few = Limits {
            depth: 2,
            array: 10,
            values: 4,
            keep: 64,
        };
        assert_eq!(read_all(few, &[b"*1\r\n*2\r\n:1\r\n:2\r\n"]).0.len(), 1);
        assert_eq!(
            read_all(few, &[b"*1\r\n*3\r\n:1\r\n:2\r\n:3\r\n"]).1,
            Progress::Garbage
        );
        let (replies, end, _) =
            read_all(few, &[b"*3\r\n:1\r\n:2\r\n:3\r\n*3\r\n:1\r\n:2\r\n:3\r\n"]);
        assert_eq!(
            (replies.len(), end),
            (2, Progress::More),
            "the count starts over per reply"
        );
        // 4096 values of one byte each would be a few kilobytes: the cap holds.
        let mut many = b"*1024\r\n".to_vec();
        for _ in 0..3 {
            many.extend(b"*1024\r\n");
        }
        assert_eq!(read_all(Limits::CALLS, &[&many]).1, Progress::More);
        let mut wide = b"*1024\r\n".to_vec();
        for _ in 0..1024 {
            wide.extend(b"*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n");
        }
        assert_eq!(read_all(Limits::CALLS, &[&wide]).1, Progress::Garbage);
    }

    #[test]
    fn a_broken_reader_stays_broken_until_reset() {
        let mut reader = Reader::new(Limits::CALLS);
        assert_eq!(
            reader.read(b"+OK\r\n!x\r\n"),
            (5, Progress::Reply(Reply::Status(b"OK".to_vec())))
        );
        assert_eq!(reader.read(b"!x\r\n"), (0, Progress::Garbage));
        assert_eq!(reader.read(b"+OK\r\n"), (0, Progress::Garbage));
        reader.reset();
        assert_eq!(
            reader.read(b"+OK\r\n"),
            (5, Progress::Reply(Reply::Status(b"OK".to_vec())))
        );
        // A line cut anywhere, even between CR and LF, reads the same.
        let mut reader = Reader::new(Limits::CALLS);
        assert_eq!(reader.read(b"-ERR x\r"), (7, Progress::More));
        assert_eq!(
            reader.read(b"\n"),
            (1, Progress::Reply(Reply::Error(b"ERR x".to_vec())))
        );
        assert_eq!(reader.read(b"$2\r\nab\r"), (7, Progress::More));
        assert_eq!(
            reader.read(b"x"),
            (0, Progress::Garbage),
            "a bulk string ends with CRLF"
        );
    }

    fn any_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z ]{0,20}".prop_map(|s| Reply::Status(s.into_bytes())),
            "[A-Z]{1,8} [a-z ]{0,20}".prop_map(|s| Reply::Error(s.into_bytes())),
            any::<i64>().prop_map(Reply::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..4)).prop_map(Reply::Array)
        })
    }

    fn encode(reply: &Reply, out: &mut Vec<u8>) {
        match reply {
            Reply::Status(s) => out.extend([b"+", &s[..], b"\r\n"].concat()),
            Reply::Error(s) => out.extend([b"-", &s[..], b"\r\n"].concat()),
            Reply::Integer(n) => out.extend(format!(":{n}\r\n").into_bytes()),
            Reply::Bulk(None) => out.extend(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                out.extend(format!("${}\r\n", b.len()).into_bytes());
                out.extend(b);
                out.extend(b"\r\n");
            }
            // On the wire, a skipped string is a bulk string of its length.
            Reply::Skipped(n) => encode(&Reply::Bulk(Some(vec![b'x'; *n])), out),
            Reply::Array(None) => out.extend(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.extend(format!("*{}\r\n", items.len()).into_bytes());
                items.iter().for_each(|i| encode(i, out));
            }
        }
    }

    proptest! {
        #[test]
        fn replies_read_back_and_every_prefix_is_incomplete(replies in proptest::collection::vec(any_reply(), 1..4)) {
            let mut buf = Vec::new();
            replies.iter().for_each(|r| encode(r, &mut buf));
            prop_assert_eq!(parse(&buf, replies.len()), Parsed::Done { replies: replies.clone(), used: buf.len() });
            for cut in 0..buf.len() {
                prop_assert_eq!(parse(&buf[..cut], replies.len()), Parsed::Incomplete);
            }
        }

        /// A reader fed the bytes in two pieces, cut at every byte, reads
        /// what it reads from them whole.
        #[test]
        fn every_cut_reads_as_the_whole(replies in proptest::collection::vec(any_reply(), 1..4)) {
            let mut buf = Vec::new();
            replies.iter().for_each(|r| encode(r, &mut buf));
            let whole = read_all(Limits::CALLS, &[&buf]);
            prop_assert_eq!(&whole.0, &replies);
            for cut in 0..=buf.len() {
                let (a, b) = buf.split_at(cut);
                let cut_read = read_all(Limits::CALLS, &[a, b]);
                prop_assert_eq!(&cut_read.0, &whole.0);
                prop_assert_eq!(&cut_read.1, &whole.1);
            }
            let bytewise: Vec<&[u8]> = buf.chunks(1).collect();
            let (bytewise, _, work) = read_all(Limits::CALLS, &bytewise);
            prop_assert_eq!(bytewise, replies);
            prop_assert!(work <= 2 * buf.len() as u64 + 64, "{} for {} bytes", work, buf.len());
        }

        /// Any bytes, cut anywhere, under any limits: the same replies and
        /// the same end as whole, and work in proportion to the bytes.
        #[test]
        fn any_bytes_cut_anywhere_read_as_whole(
            buf in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b'1'), Just(b'3'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..6),
            keep in 0usize..8,
            depth in 0usize..3,
        ) {
            let limits = Limits { depth, array: 8, values: 12, keep };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (buf.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for cut in cuts {
                pieces.push(&buf[at..cut]);
                at = cut;
            }
            pieces.push(&buf[at..]);
            let whole = read_all(limits, &[&buf]);
            let (replies, end, work) = read_all(limits, &pieces);
            prop_assert_eq!(&replies, &whole.0);
            prop_assert_eq!(end, whole.1);
            prop_assert!(work <= 2 * buf.len() as u64 + 2 * pieces.len() as u64 + 8);
        }

        #[test]
        fn any_bytes_are_read_or_refused(buf in proptest::collection::vec(any::<u8>(), 0..200), count in 1usize..4) {
            if let Parsed::Done { replies, used } = parse(&buf, count) {
                // The replies came from exactly the bytes they used.
                prop_assert!(used <= buf.len());
                prop_assert_eq!(parse(&buf[..used], count), Parsed::Done { replies, used });
            }
        }
    }
}
