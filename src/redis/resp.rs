//! RESP2, the protocol of Redis and Valkey: commands out as arrays of bulk
//! strings, replies in, read from bytes that may stop anywhere. Replies come
//! from a server that may be broken or hostile: every length is bounded,
//! nesting is shallow, and nothing panics.

/// The largest bulk string accepted (Redis' own `proto-max-bulk-len`).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// The most elements an array may announce; the module's commands get back
/// a few, a pub/sub push three.
const MAX_ARRAY: usize = 1024;
/// How deep arrays may nest.
const MAX_DEPTH: usize = 4;
/// The longest header line (`+OK`, `-ERR ...`, `:123`, `$5`).
const MAX_LINE: usize = 4096;

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

/// Reads `count` replies from the start of `buf`.
pub fn parse(buf: &[u8], count: usize) -> Parsed {
    let mut replies = Vec::with_capacity(count.min(16));
    let mut at = 0;
    while replies.len() < count {
        match reply(&buf[at..], 0) {
            Step::More => return Parsed::Incomplete,
            Step::Bad => return Parsed::Garbage,
            Step::One(r, used) => {
                replies.push(r);
                at += used;
            }
        }
    }
    Parsed::Done { replies, used: at }
}

enum Step {
    More,
    Bad,
    One(Reply, usize),
}

/// One header line: its text (without the type byte and CRLF) and the
/// bytes it takes.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ()> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) if lf >= 1 && window[lf - 1] == b'\r' => Ok(Some((&buf[..lf - 1], lf + 1))),
        Some(_) => Err(()),
        None if buf.len() > MAX_LINE + 1 => Err(()),
        None => Ok(None),
    }
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

fn reply(buf: &[u8], depth: usize) -> Step {
    let Some((&kind, rest)) = buf.split_first() else {
        return Step::More;
    };
    let (text, head) = match line(rest) {
        Ok(Some((text, used))) => (text, used + 1),
        Ok(None) => return Step::More,
        Err(()) => return Step::Bad,
    };
    match kind {
        b'+' => Step::One(Reply::Status(text.to_vec()), head),
        b'-' => Step::One(Reply::Error(text.to_vec()), head),
        b':' => match integer(text) {
            Some(n) => Step::One(Reply::Integer(n), head),
            None => Step::Bad,
        },
        b'$' => match length(text, MAX_BULK) {
            Err(()) => Step::Bad,
            Ok(None) => Step::One(Reply::Bulk(None), head),
            Ok(Some(len)) => {
                let end = head + len;
                if buf.len() < end + 2 {
                    return Step::More;
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Step::Bad;
                }
                Step::One(Reply::Bulk(Some(buf[head..end].to_vec())), end + 2)
            }
        },
        b'*' if depth < MAX_DEPTH => match length(text, MAX_ARRAY) {
            Err(()) => Step::Bad,
            Ok(None) => Step::One(Reply::Array(None), head),
            Ok(Some(len)) => {
                let mut items = Vec::with_capacity(len.min(16));
                let mut at = head;
                for _ in 0..len {
                    match reply(&buf[at..], depth + 1) {
                        Step::One(item, used) => {
                            items.push(item);
                            at += used;
                        }
                        other => return other,
                    }
                }
                Step::One(Reply::Array(Some(items)), at)
            }
        },
        _ => Step::Bad,
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

/// A pub/sub push `["message", channel, payload]`.
pub fn pubsub_message(reply: &Reply) -> Option<(&[u8], &[u8])> {
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    match items.as_slice() {
        [Reply::Bulk(Some(kind)), Reply::Bulk(Some(channel)), Reply::Bulk(Some(payload))]
            if kind.as_slice() == b"message" =>
        {
            Some((channel, payload))
        }
        _ => None,
    }
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
    fn recognises_pubsub_messages_only() {
        let (replies, _) = done(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\npay\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", 2);
        assert_eq!(pubsub_message(&replies[0]), Some((&b"ch"[..], &b"pay"[..])));
        assert_eq!(pubsub_message(&replies[1]), None);
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
