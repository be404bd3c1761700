//! The revocation channel's conversation with Redis, as a plain state
//! machine that `cargo test` drives without sockets: events in (time to
//! connect, connected, bytes received, the connection failed), actions out
//! (connect to this server, send these bytes, deliver a purge message, log
//! a line, close, reconnect after so many ms). `redis/subscriber.rs` is the
//! glue: it feeds the events and carries out the actions.
//!
//! ```text
//! Timer      -> connect to the next server (round robin)
//! Connected  -> send AUTH/SELECT (when configured) and SUBSCRIBE <prefix>purge
//! Received   -> one +OK per AUTH/SELECT, then SUBSCRIBE's confirmation
//!               (logged the first time, and after an outage), then each
//!               message on the channel is delivered
//! Failed     -> close; the first failure of an outage is logged; the
//!               timer again after the backoff (100 ms, doubling to 5 s;
//!               back to 100 ms once subscribed)
//! ```
//!
//! Anything unexpected from the server (an error reply, a reply that is not
//! the one awaited, garbage, more than 1 MiB pending) is a failure.

use core::fmt;

use crate::redis::resp::{self, Parsed, Reply};

/// The first wait before reconnecting after a failure.
pub const FIRST_BACKOFF_MS: u64 = 100;
/// The longest: each failure doubles the wait up to this.
pub const MAX_BACKOFF_MS: u64 = 5000;
/// A reply larger than this is not a purge message: the channel is reset.
pub const MAX_PENDING: usize = 1 << 20;

/// What happened to the connection (the glue's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Time to (re)connect: at start, and when a `RetryAfter` timer fires.
    Timer,
    /// The connection asked for by `Connect` is open.
    Connected,
    /// Bytes read from the connection.
    Received(&'a [u8]),
    /// The connection failed, or could not be opened.
    Failed(Trouble),
}

/// Why the channel failed; its text goes into the "down" log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The server with this name could not be reached.
    CannotConnect(String),
    ConnectTimedOut,
    CannotSend,
    CannotWaitToSend,
    RefusedOrReset,
    ClosedByServer,
    CannotRead,
    CannotWaitToRead,
    TooLarge,
    Unreadable,
    /// An error reply: its kind (`resp::error_kind`: `NOAUTH`, `WRONGPASS` ...).
    ErrorReply(String),
    UnexpectedPreambleReply,
    UnexpectedSubscribeReply,
}

/// What the glue does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to the server with this index, then report
    /// `Connected` (or `Failed`).
    Connect(usize),
    /// Write these bytes on the connection.
    Send(Vec<u8>),
    /// A purge message on the channel: its payload (sealed).
    Deliver(Vec<u8>),
    /// Write this line to the error log.
    Log(Note),
    /// Close the connection (nothing follows when the worker is exiting).
    Close,
    /// Fire `Timer` after this many milliseconds.
    RetryAfter(u64),
}

/// The log lines of the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The first subscription of this worker (`info`).
    Subscribed,
    /// The end of an outage that was logged (`notice`).
    SubscribedAgain,
    /// The start of an outage (`warn`).
    Down(Trouble),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No connection: waiting for `Timer`.
    Idle,
    /// Connecting or connected; waiting for this many `+OK` (AUTH, SELECT).
    Preamble(usize),
    /// Waiting for the subscription's confirmation.
    Subscribing,
    Subscribed,
}

/// One worker's subscription to the purge channel. Not `Debug`: the
/// preamble holds the Redis password.
pub struct Subscription {
    /// AUTH/SELECT and SUBSCRIBE, RESP-encoded.
    hello: Vec<u8>,
    preamble_replies: usize,
    channel: Vec<u8>,
    servers: usize,
    next_server: usize,
    stage: Stage,
    /// Bytes received and not yet read as a whole reply.
    pending: Vec<u8>,
    backoff_ms: u64,
    /// The outage was logged; the next subscription is logged as its end.
    down_logged: bool,
    subscribed_once: bool,
}

impl Subscription {
    /// `preamble`: the tier's `AUTH`/`SELECT` commands (RESP), asking for
    /// `preamble_replies` replies; `servers`: how many servers to take
    /// turns with (at least one).
    pub fn new(
        preamble: &[u8],
        preamble_replies: usize,
        channel: &[u8],
        servers: usize,
    ) -> Subscription {
        let mut hello = preamble.to_vec();
        resp::command(&mut hello, &[b"SUBSCRIBE", channel]);
        Subscription {
            hello,
            preamble_replies,
            channel: channel.to_vec(),
            servers: servers.max(1),
            next_server: 0,
            stage: Stage::Idle,
            pending: Vec::new(),
            backoff_ms: FIRST_BACKOFF_MS,
            down_logged: false,
            subscribed_once: false,
        }
    }

    /// Takes one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Timer => {
                let server = self.next_server % self.servers;
                self.next_server = self.next_server.wrapping_add(1);
                self.pending.clear();
                self.stage = match self.preamble_replies {
                    0 => Stage::Subscribing,
                    n => Stage::Preamble(n),
                };
                out.push(Action::Connect(server));
            }
            Event::Connected if self.stage != Stage::Idle => {
                out.push(Action::Send(self.hello.clone()));
            }
            Event::Received(bytes) if self.stage != Stage::Idle => self.received(bytes, &mut out),
            Event::Failed(trouble) if self.stage != Stage::Idle => self.fail(trouble, &mut out),
            // No connection: nothing to report about one.
            Event::Connected | Event::Received(_) | Event::Failed(_) => {}
        }
        out
    }

    fn received(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > MAX_PENDING {
            return self.fail(Trouble::TooLarge, out);
        }
        loop {
            let (reply, used) = match resp::parse(&self.pending, 1) {
                Parsed::Incomplete => return,
                Parsed::Garbage => return self.fail(Trouble::Unreadable, out),
                Parsed::Done { mut replies, used } => match replies.pop() {
                    Some(reply) => (reply, used),
                    None => return self.fail(Trouble::Unreadable, out),
                },
            };
            self.pending.drain(..used);
            if let Reply::Error(text) = &reply {
                return self.fail(Trouble::ErrorReply(resp::error_kind(text).to_owned()), out);
            }
            match self.stage {
                Stage::Idle => return,
                Stage::Preamble(left) => {
                    if !matches!(&reply, Reply::Status(t) if t.as_slice() == b"OK") {
                        return self.fail(Trouble::UnexpectedPreambleReply, out);
                    }
                    self.stage = match left {
                        1 => Stage::Subscribing,
                        n => Stage::Preamble(n - 1),
                    };
                }
                Stage::Subscribing => {
                    let confirmed = matches!(&reply, Reply::Array(Some(items))
                        if matches!(items.first(), Some(Reply::Bulk(Some(kind))) if kind.as_slice() == b"subscribe"));
                    if !confirmed {
                        return self.fail(Trouble::UnexpectedSubscribeReply, out);
                    }
                    self.stage = Stage::Subscribed;
                    self.backoff_ms = FIRST_BACKOFF_MS;
                    if self.down_logged {
                        out.push(Action::Log(Note::SubscribedAgain));
                    } else if !self.subscribed_once {
                        out.push(Action::Log(Note::Subscribed));
                    }
                    self.down_logged = false;
                    self.subscribed_once = true;
                }
                Stage::Subscribed => {
                    if let Some((channel, payload)) = resp::pubsub_message(&reply) {
                        if channel == self.channel.as_slice() {
                            out.push(Action::Deliver(payload.to_vec()));
                        }
                    }
                }
            }
        }
    }

    /// Close, log the first failure of an outage, try again later.
    fn fail(&mut self, trouble: Trouble, out: &mut Vec<Action>) {
        self.stage = Stage::Idle;
        self.pending.clear();
        out.push(Action::Close);
        if !self.down_logged {
            out.push(Action::Log(Note::Down(trouble)));
            self.down_logged = true;
        }
        out.push(Action::RetryAfter(self.backoff_ms));
        self.backoff_ms = (self.backoff_ms * 2).min(MAX_BACKOFF_MS);
    }
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trouble::CannotConnect(server) => write!(f, "cannot connect to {server}"),
            Trouble::ConnectTimedOut => f.write_str("connect timed out"),
            Trouble::CannotSend => f.write_str("cannot send"),
            Trouble::CannotWaitToSend => f.write_str("cannot wait to send"),
            Trouble::RefusedOrReset => f.write_str("connection refused or reset"),
            Trouble::ClosedByServer => f.write_str("closed by the server"),
            Trouble::CannotRead => f.write_str("cannot read"),
            Trouble::CannotWaitToRead => f.write_str("cannot wait to read"),
            Trouble::TooLarge => f.write_str("a reply too large for a purge message"),
            Trouble::Unreadable => f.write_str("unreadable replies"),
            Trouble::ErrorReply(kind) => write!(f, "-{kind}"),
            Trouble::UnexpectedPreambleReply => f.write_str("unexpected reply to AUTH or SELECT"),
            Trouble::UnexpectedSubscribeReply => f.write_str("unexpected reply to SUBSCRIBE"),
        }
    }
}

/// The line, after the module's `auth_oauth2_token: ` prefix.
impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Subscribed => f.write_str("revocation channel subscribed"),
            Note::SubscribedAgain => f.write_str("revocation channel subscribed again"),
            Note::Down(trouble) => write!(
                f,
                "revocation channel down ({trouble}); purges from other gateways reach this gateway when its cached entries expire (max_ttl)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHANNEL: &[u8] = b"oauth2:purge";
    const CONFIRMED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$12\r\noauth2:purge\r\n:1\r\n";

    fn message(channel: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        resp::command(&mut out, &[b"message", channel, payload]);
        out
    }

    fn auth() -> Vec<u8> {
        let mut preamble = Vec::new();
        resp::command(&mut preamble, &[b"AUTH", b"pw"]);
        resp::command(&mut preamble, &[b"SELECT", b"2"]);
        preamble
    }

    fn down(trouble: Trouble, after_ms: u64) -> Vec<Action> {
        vec![
            Action::Close,
            Action::Log(Note::Down(trouble)),
            Action::RetryAfter(after_ms),
        ]
    }

    /// A subscription connected to server 0 and confirmed.
    fn subscribed() -> Subscription {
        let mut s = Subscription::new(b"", 0, CHANNEL, 1);
        s.handle(Event::Timer);
        s.handle(Event::Connected);
        assert_eq!(
            s.handle(Event::Received(CONFIRMED)),
            vec![Action::Log(Note::Subscribed)]
        );
        s
    }

    #[test]
    fn sends_the_preamble_and_subscribe_then_delivers_its_channel_only() {
        let mut s = Subscription::new(&auth(), 2, CHANNEL, 1);
        assert_eq!(s.handle(Event::Timer), vec![Action::Connect(0)]);
        let mut hello = auth();
        resp::command(&mut hello, &[b"SUBSCRIBE", CHANNEL]);
        assert_eq!(s.handle(Event::Connected), vec![Action::Send(hello)]);
        assert_eq!(s.handle(Event::Received(b"+OK\r\n+O")), vec![]);
        assert_eq!(s.handle(Event::Received(b"K\r\n")), vec![]);
        assert_eq!(
            s.handle(Event::Received(CONFIRMED)),
            vec![Action::Log(Note::Subscribed)]
        );
        let mut bytes = message(CHANNEL, b"sealed tag");
        bytes.extend(message(b"other:purge", b"not ours"));
        // A pattern message is not one the channel sends.
        bytes.extend(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$12\r\noauth2:purge\r\n$1\r\nx\r\n");
        bytes.extend(message(CHANNEL, b"second"));
        assert_eq!(
            s.handle(Event::Received(&bytes)),
            vec![
                Action::Deliver(b"sealed tag".to_vec()),
                Action::Deliver(b"second".to_vec())
            ]
        );
    }

    #[test]
    fn servers_take_turns_and_the_backoff_doubles_to_five_seconds() {
        let mut s = Subscription::new(b"", 0, CHANNEL, 3);
        let mut waits = Vec::new();
        for attempt in 0..9 {
            assert_eq!(s.handle(Event::Timer), vec![Action::Connect(attempt % 3)]);
            let actions = s.handle(Event::Failed(Trouble::RefusedOrReset));
            assert_eq!(actions.first(), Some(&Action::Close));
            assert_eq!(
                actions.len(),
                if attempt == 0 { 3 } else { 2 },
                "one line per outage: {actions:?}"
            );
            match actions.last() {
                Some(Action::RetryAfter(ms)) => waits.push(*ms),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // The end of the outage is logged, and the backoff starts over.
        s.handle(Event::Timer);
        s.handle(Event::Connected);
        assert_eq!(
            s.handle(Event::Received(CONFIRMED)),
            vec![Action::Log(Note::SubscribedAgain)]
        );
        assert_eq!(
            s.handle(Event::Failed(Trouble::ClosedByServer)),
            down(Trouble::ClosedByServer, 100)
        );
    }

    #[test]
    fn a_quiet_reconnection_is_not_logged() {
        let mut s = subscribed();
        s.handle(Event::Failed(Trouble::ClosedByServer));
        s.handle(Event::Timer);
        s.handle(Event::Connected);
        // The outage was logged: its end is too.
        assert_eq!(
            s.handle(Event::Received(CONFIRMED)),
            vec![Action::Log(Note::SubscribedAgain)]
        );
        // A subscription that was never down says nothing more.
        let mut fresh = Subscription::new(b"", 0, CHANNEL, 1);
        fresh.handle(Event::Timer);
        assert_eq!(
            fresh.handle(Event::Received(CONFIRMED)),
            vec![Action::Log(Note::Subscribed)]
        );
    }

    #[test]
    fn whatever_the_server_should_not_say_is_a_failure() {
        let cases: [(&[u8], usize, &[u8], Trouble); 5] = [
            (
                &auth(),
                2,
                b"-WRONGPASS invalid username-password pair\r\n",
                Trouble::ErrorReply("WRONGPASS".into()),
            ),
            (&auth(), 2, b"+QUEUED\r\n", Trouble::UnexpectedPreambleReply),
            (&auth(), 2, b":1\r\n", Trouble::UnexpectedPreambleReply),
            (b"", 0, b"+OK\r\n", Trouble::UnexpectedSubscribeReply),
            (b"", 0, b"HTTP/1.1 400 Bad Request\r\n", Trouble::Unreadable),
        ];
        for (preamble, replies, bytes, trouble) in cases {
            let mut s = Subscription::new(preamble, replies, CHANNEL, 1);
            s.handle(Event::Timer);
            s.handle(Event::Connected);
            assert_eq!(s.handle(Event::Received(bytes)), down(trouble, 100));
        }
        let mut s = subscribed();
        assert_eq!(
            s.handle(Event::Received(b"-ERR unknown\r\n")),
            down(Trouble::ErrorReply("ERR".into()), 100)
        );
    }

    #[test]
    fn a_reply_over_a_mebibyte_resets_the_channel() {
        let mut s = subscribed();
        let head = format!(
            "*3\r\n$7\r\nmessage\r\n$12\r\noauth2:purge\r\n${}\r\n",
            2 * MAX_PENDING
        );
        assert_eq!(s.handle(Event::Received(head.as_bytes())), vec![]);
        assert_eq!(
            s.handle(Event::Received(&vec![b'x'; MAX_PENDING / 2])),
            vec![]
        );
        assert_eq!(
            s.handle(Event::Received(&vec![b'x'; MAX_PENDING / 2])),
            down(Trouble::TooLarge, 100)
        );
    }

    #[test]
    fn messages_before_a_failure_are_delivered_and_nothing_after_it() {
        let mut s = subscribed();
        let mut bytes = message(CHANNEL, b"first");
        bytes.extend(b"!garbage\r\n");
        bytes.extend(message(CHANNEL, b"lost"));
        let mut expected = vec![Action::Deliver(b"first".to_vec())];
        expected.extend(down(Trouble::Unreadable, 100));
        assert_eq!(s.handle(Event::Received(&bytes)), expected);
        // Closed: what the glue may still report is ignored until the timer.
        assert_eq!(
            s.handle(Event::Received(&message(CHANNEL, b"late"))),
            vec![]
        );
        assert_eq!(s.handle(Event::Failed(Trouble::CannotRead)), vec![]);
        assert_eq!(s.handle(Event::Connected), vec![]);
        // A new connection starts from an empty buffer.
        assert_eq!(s.handle(Event::Timer), vec![Action::Connect(0)]);
        s.handle(Event::Connected);
        assert_eq!(
            s.handle(Event::Received(CONFIRMED)),
            vec![Action::Log(Note::SubscribedAgain)]
        );
    }

    #[test]
    fn the_log_lines_read_as_before() {
        assert_eq!(
            Note::Subscribed.to_string(),
            "revocation channel subscribed"
        );
        assert_eq!(
            Note::SubscribedAgain.to_string(),
            "revocation channel subscribed again"
        );
        assert_eq!(
            Note::Down(Trouble::CannotConnect("127.0.0.1:6379".into())).to_string(),
            "revocation channel down (cannot connect to 127.0.0.1:6379); purges from other gateways reach this gateway when its cached entries expire (max_ttl)"
        );
        assert_eq!(Trouble::ErrorReply("NOAUTH".into()).to_string(), "-NOAUTH");
    }

    proptest! {
        /// However the bytes are cut into reads, the same actions come out.
        #[test]
        fn reads_may_stop_anywhere(cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let mut stream = b"+OK\r\n".to_vec();
            stream.extend(CONFIRMED);
            stream.extend(message(CHANNEL, b"one"));
            stream.extend(message(b"elsewhere", b"two"));
            stream.extend(message(CHANNEL, b"three"));
            let run = |pieces: Vec<&[u8]>| {
                let mut preamble = Vec::new();
                resp::command(&mut preamble, &[b"SELECT", b"1"]);
                let mut s = Subscription::new(&preamble, 1, CHANNEL, 1);
                s.handle(Event::Timer);
                s.handle(Event::Connected);
                pieces.into_iter().flat_map(|p| s.handle(Event::Received(p))).collect::<Vec<_>>()
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for cut in cuts {
                pieces.push(&stream[at..cut]);
                at = cut;
            }
            pieces.push(&stream[at..]);
            let whole = run(vec![&stream[..]]);
            prop_assert_eq!(whole.len(), 3);
            prop_assert_eq!(run(pieces), whole);
        }
    }
}
