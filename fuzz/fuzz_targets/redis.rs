//! What comes back from the Redis tier: RESP replies, sealed
//! values and purge messages, and the purge request's form from clients.
//! Arbitrary bytes never panic; a parsed reply stream is consistent with
//! its prefix; a reader fed the bytes in pieces reads what it reads from
//! them whole, with work in proportion to the bytes; a subscribed channel
//! fed them fails at most once and never applies a purge it cannot open;
//! nothing opens without the key it was sealed with.
//!
//! Input: the bytes, as replies (whole, and cut where the first byte
//! says), as what a subscribed channel receives, as a sealed value, as a
//! purge message and as a purge form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::purge::{token_of_form, MAX_TOKEN_BYTES};
use ngx_http_auth_oauth2_token_module::redis::fleet::{self, FleetKey, FleetKeys};
use ngx_http_auth_oauth2_token_module::redis::resp::{self, Limits, Parsed, Progress, Reader};
use ngx_http_auth_oauth2_token_module::redis::subscription::{Action, Event, Subscription};

/// Every reply a reader with `limits` reads from `pieces` fed in turn, and
/// whether it ended in garbage; and its work.
fn read_all(limits: Limits, pieces: &[&[u8]]) -> (Vec<resp::Reply>, bool, u64) {
    let mut reader = Reader::new(limits);
    let mut replies = Vec::new();
    for piece in pieces {
        let mut at = 0;
        loop {
            match reader.read(&piece[at..]) {
                (used, Progress::Reply(reply)) => {
                    replies.push(reply);
                    at += used;
                    assert!(at <= piece.len());
                }
                (used, Progress::More) => {
                    assert_eq!(at + used, piece.len());
                    break;
                }
                (_, Progress::Garbage) => return (replies, true, reader.work()),
            }
        }
    }
    (replies, false, reader.work())
}

fuzz_target!(|data: &[u8]| {
    for count in 1..=3 {
        match resp::parse(data, count) {
            Parsed::Done { replies, used } => {
                assert_eq!(replies.len(), count);
                assert!(used <= data.len());
                // The same replies from exactly the bytes they took.
                assert_eq!(
                    resp::parse(&data[..used], count),
                    Parsed::Done {
                        replies: replies.clone(),
                        used
                    }
                );
                for reply in &replies {
                    let _ = resp::push(reply);
                    if let resp::Reply::Error(text) = reply {
                        let kind = resp::error_kind(text);
                        assert!(kind.len() <= 16 && kind.bytes().all(|b| b.is_ascii_uppercase()));
                    }
                }
            }
            Parsed::Incomplete => {
                // Fewer bytes can never be complete.
                if !data.is_empty() {
                    assert_ne!(
                        std::mem::discriminant(&resp::parse(&data[..data.len() - 1], count)),
                        std::mem::discriminant(&Parsed::Done {
                            replies: vec![],
                            used: 0
                        })
                    );
                }
            }
            Parsed::Garbage => {}
        }
    }

    // Cut into pieces of the size the first byte says (1 to 256 bytes).
    let size = usize::from(data.first().copied().unwrap_or(0)) + 1;
    let pieces: Vec<&[u8]> = data.chunks(size).collect();
    for limits in [Limits::CALLS, Limits::pubsub(16), Limits::pubsub(4096)] {
        let whole = read_all(limits, &[data]);
        let (replies, garbage, work) = read_all(limits, &pieces);
        assert_eq!((&replies, garbage), (&whole.0, whole.1));
        assert!(work <= 2 * data.len() as u64 + 2 * pieces.len() as u64 + 8);
        for reply in &replies {
            let _ = resp::push(reply);
        }
    }

    // What a subscribed channel receives: no panic, work in proportion,
    // one failure at most per connection, no purge from bytes that were
    // never sealed.
    let mut channel = Subscription::new(
        b"",
        0,
        b"oauth2:purge",
        1,
        Box::new(|message| {
            let keys = FleetKeys {
                current: FleetKey::from_secret(&[7; 32]).expect("a long secret"),
                old: None,
            };
            fleet::open_purge(&keys, b"oauth2:purge", message)
        }),
    );
    channel.handle(0, Event::Timer);
    channel.handle(0, Event::Connected);
    channel.handle(
        0,
        Event::Received(b"*3\r\n$9\r\nsubscribe\r\n$12\r\noauth2:purge\r\n:1\r\n"),
    );
    let before = channel.work();
    let mut closes = 0;
    for piece in &pieces {
        for action in channel.handle(0, Event::Received(piece)) {
            assert!(!matches!(action, Action::Purge(_)));
            closes += usize::from(action == Action::Close);
        }
    }
    assert!(closes <= 1);
    assert!(channel.work() - before <= 2 * data.len() as u64 + 2 * pieces.len() as u64 + 8);

    let key = FleetKey::from_secret(&[7; 32]).expect("a long secret");
    assert_eq!(fleet::open_entry(&key, b"slot", b"field", data), None);
    let keys = FleetKeys {
        current: key,
        old: None,
    };
    assert_eq!(fleet::open_purge(&keys, b"oauth2:purge", data), None);

    if let Ok(token) = token_of_form(data) {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
    }
});
