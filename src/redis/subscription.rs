//! The revocation channel's conversation with Redis, as a plain state
//! machine that `cargo test` drives without sockets: events in (time to
//! connect, connected, bytes received, the watch timer, the connection
//! failed), each with the time; actions out (connect to this server, send
//! these bytes, purge this token, count, log a line, close, arm the watch,
//! reconnect after so many ms). `redis/subscriber.rs` is the glue: it feeds
//! the events and carries out the actions.
//!
//! ```text
//! Timer      -> connect to the next server (round robin)
//! Connected  -> send AUTH/SELECT (when configured) and SUBSCRIBE <prefix>purge;
//!               the server has REPLY_DEADLINE_MS to confirm them all
//! Received   -> one +OK per AUTH/SELECT, then SUBSCRIBE's confirmation
//!               (logged the first time, and after an outage); then each
//!               message on the channel is opened, judged and applied.
//!               With a list in a Redis Cluster, a -MOVED or -ASK for its
//!               slot instead of the list: close, and connect to the node
//!               it names at once (ASKING first for -ASK), at most
//!               MAX_REDIRECTIONS times in a row, then a failure
//! Watch      -> handshake unanswered: a failure; subscribed: PING every
//!               PING_EVERY_MS, whose pong is due within REPLY_DEADLINE_MS
//! Failed     -> close; the first failure of an outage is logged; the
//!               timer again after the backoff (100 ms, doubling to 5 s;
//!               back to 100 ms only after a link that stayed subscribed
//!               STABLE_MS)
//! ```
//!
//! An outage lasts until a link stays subscribed [`STABLE_MS`]: its first
//! failure is logged, and the first subscription after it; a link that
//! drops again sooner belongs to the same outage (no line, the backoff
//! keeps growing), so a flapping server costs two lines, not two per flap.
//!
//! Anything unexpected from the server (an error reply, a reply that is not
//! the one awaited, garbage, an array that pub/sub does not send) is a
//! failure. What a publisher can put on the channel is a message's payload
//! only, and no payload fails the channel: one longer than
//! [`MAX_MESSAGE`] is read past without being kept; one that does not open
//! with this gateway's keys, is older than [`MAX_AGE_MS`] (or further ahead
//! than [`MAX_AHEAD_MS`]), or was applied before, is refused; each refusal
//! is counted, and logged at most once per kind every 10 s.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;

use crate::redis::cluster::{self, Redirection};
use crate::redis::fleet::Purge;
use crate::redis::purge;
use crate::redis::resp::{self, Limits, Progress, Push, Reader, Reply};
use crate::resilience::log_gate::LogGate;

mod text;

/// The first wait before reconnecting after a failure.
pub const FIRST_BACKOFF_MS: u64 = 100;
/// The longest: each failure doubles the wait up to this.
pub const MAX_BACKOFF_MS: u64 = 5000;
/// A link that stayed subscribed this long was stable: the failure that
/// ends it starts the backoff over. A shorter one keeps it growing, so a
/// server that drops the link right after each `SUBSCRIBE` is retried
/// every 5 s, not every 100 ms.
pub const STABLE_MS: i64 = 30_000;
/// How long the server has to answer the handshake (AUTH, SELECT,
/// SUBSCRIBE: all of it), and each `PING`.
pub const REPLY_DEADLINE_MS: u64 = 3000;
/// How often a subscribed link is checked with `PING`: a silent server is
/// noticed within `PING_EVERY_MS + REPLY_DEADLINE_MS`.
pub const PING_EVERY_MS: u64 = 5000;
/// The longest payload read as a message: a purge message is 45 bytes;
/// a longer payload is read past, never kept.
pub const MAX_MESSAGE: usize = 4096;
/// The oldest purge message applied, by the purge time sealed in it: a
/// recorded message cannot be played again later than this.
pub const MAX_AGE_MS: i64 = 5 * 60 * 1000;
/// How far ahead of this gateway's clock a purge time may be: the clocks
/// of a fleet's gateways may disagree by this much.
pub const MAX_AHEAD_MS: i64 = 60 * 1000;
/// How many applied messages are remembered, so that one played again
/// while it is still fresh is refused.
pub const REMEMBERED: usize = 1024;
/// Seconds between two log lines about refused messages of one kind.
pub const REFUSED_LOG_INTERVAL_S: u64 = 10;

/// What happened to the connection (the glue's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Time to (re)connect: at start, and when a `RetryAfter` timer fires.
    Timer,
    /// The connection asked for by `Connect` is open.
    Connected,
    /// Bytes read from the connection.
    Received(&'a [u8]),
    /// The watch timer (armed by `Action::Watch`) fired.
    Watch,
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
    Unreadable,
    /// An error reply: its kind (`resp::error_kind`: `NOAUTH`, `WRONGPASS` ...).
    ErrorReply(String),
    UnexpectedPreambleReply,
    UnexpectedSubscribeReply,
    /// A reply a subscribed connection does not get.
    UnexpectedReply,
    /// No answer to the handshake within the deadline.
    HandshakeUnanswered,
    /// No answer to `PING` within the deadline.
    PingUnanswered,
    /// The TLS handshake failed, or Redis' certificate did not pass
    /// (`auth_oauth2_token_redis_ssl*`): why.
    Tls(String),
    /// Redis Cluster: the list's read was sent elsewhere (`-MOVED`,
    /// `-ASK`) more often than [`cluster::MAX_REDIRECTIONS`] in a row.
    Redirected(Redirection),
}

/// What became of a message on the channel (its metric's `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Opened, fresh, new: the token left this gateway's zones.
    Applied,
    /// Longer than [`MAX_MESSAGE`]: read past.
    Oversized,
    /// Does not open with this gateway's keys.
    Unopened,
    /// Older than [`MAX_AGE_MS`], or further ahead than [`MAX_AHEAD_MS`].
    Stale,
    /// Applied before.
    Replayed,
}

/// How many kinds of [`Delivery`] there are.
pub const DELIVERIES: usize = 5;

impl Delivery {
    pub const ALL: [Delivery; DELIVERIES] = [
        Delivery::Applied,
        Delivery::Oversized,
        Delivery::Unopened,
        Delivery::Stale,
        Delivery::Replayed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Delivery::Applied => "applied",
            Delivery::Oversized => "oversized",
            Delivery::Unopened => "unopened",
            Delivery::Stale => "stale",
            Delivery::Replayed => "replayed",
        }
    }
}

/// What the glue does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to the server with this index, then report
    /// `Connected` (or `Failed`).
    Connect(usize),
    /// Open a connection to this node (where a Redis Cluster's `-MOVED` or
    /// `-ASK` sent the list's read), then report `Connected` (or `Failed`).
    ConnectTo(SocketAddr),
    /// Write these bytes on the connection (after any not yet written).
    Send(Vec<u8>),
    /// A purge from the channel, opened and judged: the token with this
    /// tag leaves this gateway's zones.
    Purge(Purge),
    /// Count one message in the metrics.
    Count(Delivery),
    /// The channel is subscribed (`true`) or not, for the metrics.
    Up(bool),
    /// Write this line to the error log.
    Log(Note),
    /// Close the connection and drop the watch (nothing follows when the
    /// worker is exiting).
    Close,
    /// Report `Watch` after this many milliseconds, instead of any earlier
    /// watch.
    Watch(u64),
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
    /// A message refused (`warn`), and how many more of its kind were
    /// refused since the last line about them.
    Refused { what: Delivery, more: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No connection: waiting for `Timer`.
    Idle,
    /// Connecting or connected; waiting for this many `+OK` (AUTH, SELECT).
    Preamble(usize),
    /// Waiting for the list of revocations pushed by the IdP.
    Listing,
    /// Waiting for the subscription's confirmation.
    Subscribing,
    /// Subscribed; `pinged`: a `PING` awaits its answer.
    Subscribed { pinged: bool },
}

/// Opens a message's payload into a purge (`fleet::open_purge` with the
/// gateway's keys and channel), `None` when it does not open.
pub type Opener = Box<dyn Fn(&[u8]) -> Option<Purge>>;

/// One worker's subscription to the purge channel. Not `Debug`: the
/// preamble holds the Redis password.
pub struct Subscription {
    /// AUTH/SELECT, the list's `ZRANGE` (with a list) and SUBSCRIBE,
    /// RESP-encoded.
    hello: Vec<u8>,
    preamble_replies: usize,
    /// Whether the hello reads the list of pushed revocations.
    listing: bool,
    /// How long the preamble (`AUTH`/`SELECT`) is at the hello's start.
    preamble_len: usize,
    /// Redis Cluster: the list's slot, whose `-MOVED` and `-ASK` are
    /// followed (at most [`cluster::MAX_REDIRECTIONS`] in a row); whether
    /// this connection's hello asks `ASKING` first, and the redirections
    /// followed since the last `Timer`.
    list_slot: Option<u16>,
    asking: bool,
    hops: u8,
    channel: Vec<u8>,
    servers: usize,
    next_server: usize,
    stage: Stage,
    /// The replies of the connection, read as they come.
    reader: Reader,
    backoff_ms: u64,
    /// When the link last subscribed, while it is.
    subscribed_at: Option<i64>,
    /// An outage was logged and no link was stable since; the first
    /// subscription after it was logged (`back_logged`).
    down_logged: bool,
    back_logged: bool,
    subscribed_once: bool,
    open: Opener,
    /// Messages applied, oldest first, and the same as a set.
    applied: VecDeque<Vec<u8>>,
    applied_set: HashSet<Vec<u8>>,
    /// One line per kind of refusal per interval, and the refusals since.
    gate: LogGate<DELIVERIES>,
    unlogged: [u64; DELIVERIES],
}

impl Subscription {
    /// `preamble`: the tier's `AUTH`/`SELECT` commands (RESP), asking for
    /// `preamble_replies` replies; `servers`: how many servers to take
    /// turns with (at least one); `open`: how a message opens.
    pub fn new(
        preamble: &[u8],
        preamble_replies: usize,
        channel: &[u8],
        servers: usize,
        open: Opener,
    ) -> Subscription {
        let mut hello = preamble.to_vec();
        resp::command(&mut hello, &[b"SUBSCRIBE", channel]);
        Subscription {
            hello,
            preamble_replies,
            listing: false,
            preamble_len: preamble.len(),
            list_slot: None,
            asking: false,
            hops: 0,
            channel: channel.to_vec(),
            servers: servers.max(1),
            next_server: 0,
            stage: Stage::Idle,
            // The confirmation names the channel: that is kept too.
            reader: Reader::new(Limits::pubsub(MAX_MESSAGE.max(channel.len()))),
            backoff_ms: FIRST_BACKOFF_MS,
            subscribed_at: None,
            down_logged: false,
            back_logged: false,
            subscribed_once: false,
            open,
            applied: VecDeque::new(),
            applied_set: HashSet::new(),
            gate: LogGate::new(),
            unlogged: [0; DELIVERIES],
        }
    }

    /// Also reads, before each subscription, the Redis tier's list of
    /// revocations pushed by the IdP at `key` (`purge::still_kept`); with
    /// a Redis `cluster`, from the node a `-MOVED` or `-ASK` for its slot
    /// names (the hello is sent there again; the subscription's node does
    /// not matter, a cluster's `PUBLISH` reaches every node).
    pub fn with_list(mut self, key: &[u8], cluster: bool) -> Subscription {
        self.list_slot = cluster.then(|| cluster::key_slot(key));
        let mut subscribe = Vec::new();
        resp::command(&mut subscribe, &[b"SUBSCRIBE", &self.channel]);
        self.hello.truncate(self.hello.len() - subscribe.len());
        let last = (purge::MAX_LISTED - 1).to_string();
        resp::command(
            &mut self.hello,
            &[b"ZRANGE", key, b"0", last.as_bytes(), b"REV"],
        );
        self.hello.extend_from_slice(&subscribe);
        self.listing = true;
        self
    }

    /// The stage after the preamble's replies.
    fn after_preamble(&self) -> Stage {
        match self.listing {
            true => Stage::Listing,
            false => Stage::Subscribing,
        }
    }

    /// Bytes looked at by the reader, for tests that bound the work.
    pub fn work(&self) -> u64 {
        self.reader.work()
    }

    /// Takes one event at `now_ms` (the clock the purge times are sealed
    /// with: ms since the epoch); returns what to do, in order.
    pub fn handle(&mut self, now_ms: i64, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Timer => {
                self.hops = 0;
                self.connect(None, &mut out);
            }
            Event::Connected if self.stage != Stage::Idle => {
                let mut hello = self.hello.clone();
                if self.asking {
                    let mut asking = Vec::new();
                    resp::command(&mut asking, &[b"ASKING"]);
                    hello.splice(self.preamble_len..self.preamble_len, asking);
                }
                out.push(Action::Send(hello));
                out.push(Action::Watch(REPLY_DEADLINE_MS));
            }
            Event::Received(bytes) if self.stage != Stage::Idle => {
                if let Err(trouble) = self.received(now_ms, bytes, &mut out) {
                    self.fail(now_ms, trouble, &mut out);
                }
            }
            Event::Watch => match self.stage {
                Stage::Idle => {}
                Stage::Preamble(_) | Stage::Listing | Stage::Subscribing => {
                    self.fail(now_ms, Trouble::HandshakeUnanswered, &mut out)
                }
                Stage::Subscribed { pinged: true } => {
                    self.fail(now_ms, Trouble::PingUnanswered, &mut out)
                }
                Stage::Subscribed { pinged: false } => {
                    let mut ping = Vec::new();
                    resp::command(&mut ping, &[b"PING"]);
                    self.stage = Stage::Subscribed { pinged: true };
                    out.push(Action::Send(ping));
                    out.push(Action::Watch(REPLY_DEADLINE_MS));
                }
            },
            Event::Failed(trouble) if self.stage != Stage::Idle => {
                self.fail(now_ms, trouble, &mut out)
            }
            // No connection: nothing to report about one.
            Event::Connected | Event::Received(_) | Event::Failed(_) => {}
        }
        out
    }

    /// Connects to the next server, or to the node `to` names (with
    /// `ASKING` first for an `-ASK`).
    fn connect(&mut self, to: Option<Redirection>, out: &mut Vec<Action>) {
        self.reader = match self.listing {
            true => Reader::new(purge::LISTING),
            false => Reader::new(self.pubsub_limits()),
        };
        self.asking = matches!(to, Some(Redirection::Ask { .. }));
        self.stage = match self.preamble_replies + usize::from(self.asking) {
            0 => self.after_preamble(),
            n => Stage::Preamble(n),
        };
        out.push(match to {
            Some(to) => Action::ConnectTo(to.to()),
            None => {
                let server = self.next_server % self.servers;
                self.next_server = self.next_server.wrapping_add(1);
                Action::Connect(server)
            }
        });
    }

    fn received(
        &mut self,
        now_ms: i64,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) -> Result<(), Trouble> {
        let mut at = 0;
        loop {
            let (used, progress) = self.reader.read(&bytes[at..]);
            at += used;
            let reply = match progress {
                Progress::More => return Ok(()),
                Progress::Garbage => return Err(Trouble::Unreadable),
                Progress::Reply(reply) => reply,
            };
            if let (Stage::Listing, Some(slot), Ok(Some(to))) =
                (self.stage, self.list_slot, cluster::redirection(&reply))
            {
                let (Redirection::Moved { slot: s, .. } | Redirection::Ask { slot: s, .. }) = to;
                if s == slot {
                    return Err(Trouble::Redirected(to));
                }
            }
            if let Reply::Error(text) = &reply {
                return Err(Trouble::ErrorReply(resp::error_kind(text).to_owned()));
            }
            match self.stage {
                Stage::Idle => return Ok(()),
                Stage::Preamble(left) => {
                    if !matches!(&reply, Reply::Status(t) if t.as_slice() == b"OK") {
                        return Err(Trouble::UnexpectedPreambleReply);
                    }
                    self.stage = match left {
                        1 => self.after_preamble(),
                        n => Stage::Preamble(n - 1),
                    };
                }
                Stage::Listing => {
                    let Reply::Array(listed) = reply else {
                        return Err(Trouble::UnexpectedPreambleReply);
                    };
                    let kept = purge::still_kept(listed.unwrap_or_default(), &self.open, now_ms);
                    out.extend(kept.into_iter().map(Action::Purge));
                    self.stage = Stage::Subscribing;
                    self.reader = Reader::new(self.pubsub_limits());
                }
                Stage::Subscribing => match resp::push(&reply) {
                    Some(Push::Subscribed(channel)) if channel == self.channel.as_slice() => {
                        self.subscribed(now_ms, out)
                    }
                    _ => return Err(Trouble::UnexpectedSubscribeReply),
                },
                Stage::Subscribed { pinged } => match resp::push(&reply) {
                    Some(Push::Message { channel, payload }) => {
                        // Only our channel was subscribed to; another
                        // channel's message is nothing to us.
                        if channel == self.channel.as_slice() {
                            match payload {
                                Some(payload) => self.message(now_ms, payload, out),
                                None => self.refuse(now_ms, Delivery::Oversized, out),
                            }
                        }
                    }
                    Some(Push::Pong) if pinged => {
                        self.stage = Stage::Subscribed { pinged: false };
                        out.push(Action::Watch(PING_EVERY_MS));
                    }
                    Some(Push::Pong | Push::Subscribed(_)) => {}
                    None => return Err(Trouble::UnexpectedReply),
                },
            }
        }
    }

    fn pubsub_limits(&self) -> Limits {
        Limits::pubsub(MAX_MESSAGE.max(self.channel.len()))
    }

    fn subscribed(&mut self, now_ms: i64, out: &mut Vec<Action>) {
        self.stage = Stage::Subscribed { pinged: false };
        self.subscribed_at = Some(now_ms);
        out.push(Action::Watch(PING_EVERY_MS));
        out.push(Action::Up(true));
        if self.down_logged {
            if !self.back_logged {
                out.push(Action::Log(Note::SubscribedAgain));
                self.back_logged = true;
            }
        } else if !self.subscribed_once {
            out.push(Action::Log(Note::Subscribed));
        }
        self.subscribed_once = true;
    }

    /// A message on the channel: applied when it opens, is fresh, and is
    /// new; refused otherwise.
    fn message(&mut self, now_ms: i64, payload: &[u8], out: &mut Vec<Action>) {
        let Some(purge) = (self.open)(payload) else {
            return self.refuse(now_ms, Delivery::Unopened, out);
        };
        let age = now_ms.saturating_sub(purge.purged_at_ms);
        if !(-MAX_AHEAD_MS..=MAX_AGE_MS).contains(&age) {
            return self.refuse(now_ms, Delivery::Stale, out);
        }
        if self.applied_set.contains(payload) {
            return self.refuse(now_ms, Delivery::Replayed, out);
        }
        if self.applied.len() == REMEMBERED {
            if let Some(oldest) = self.applied.pop_front() {
                self.applied_set.remove(&oldest);
            }
        }
        self.applied.push_back(payload.to_vec());
        self.applied_set.insert(payload.to_vec());
        out.push(Action::Purge(purge));
        out.push(Action::Count(Delivery::Applied));
    }

    /// Counts a refused message; logs it unless its kind was logged less
    /// than the interval ago.
    fn refuse(&mut self, now_ms: i64, what: Delivery, out: &mut Vec<Action>) {
        out.push(Action::Count(what));
        let kind = what as usize;
        let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
        if self.gate.allow(kind, now_s, REFUSED_LOG_INTERVAL_S) {
            let more = core::mem::take(&mut self.unlogged[kind]);
            out.push(Action::Log(Note::Refused { what, more }));
        } else {
            self.unlogged[kind] += 1;
        }
    }

    /// Close, log the first failure of an outage, try again later.
    fn fail(&mut self, now_ms: i64, trouble: Trouble, out: &mut Vec<Action>) {
        let was_up = matches!(self.stage, Stage::Subscribed { .. });
        self.stage = Stage::Idle;
        self.reader.reset();
        out.push(Action::Close);
        // The list lives elsewhere in the cluster: the hello goes there now.
        if let Trouble::Redirected(to) = trouble {
            if self.hops < cluster::MAX_REDIRECTIONS {
                self.hops += 1;
                return self.connect(Some(to), out);
            }
        }
        if was_up {
            out.push(Action::Up(false));
        }
        let stable = (self.subscribed_at.take())
            .is_some_and(|since| now_ms.saturating_sub(since) >= STABLE_MS);
        if stable {
            // The last outage is over: this failure starts a new one.
            self.backoff_ms = FIRST_BACKOFF_MS;
            self.down_logged = false;
            self.back_logged = false;
        }
        if !self.down_logged {
            out.push(Action::Log(Note::Down(trouble)));
            self.down_logged = true;
        }
        out.push(Action::RetryAfter(self.backoff_ms));
        self.backoff_ms = (self.backoff_ms * 2).min(MAX_BACKOFF_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::fleet::{self, FleetKey, FleetKeys};
    use proptest::prelude::*;

    const CHANNEL: &[u8] = b"oauth2:purge";
    const CONFIRMED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$12\r\noauth2:purge\r\n:1\r\n";
    const PONG: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    /// The clock of these tests (ms since the epoch).
    const NOW: i64 = 1_790_000_000_000;

    fn key(byte: u8) -> FleetKey {
        FleetKey::from_secret(&[byte; 32]).unwrap()
    }

    /// Opens with key 1 (current) and, when `rotating`, key 2 (old).
    fn opener(rotating: bool) -> Opener {
        let keys = FleetKeys {
            current: key(1),
            old: rotating.then(|| key(2)),
        };
        Box::new(move |payload| fleet::open_purge(&keys, CHANNEL, payload))
    }

    fn sealed(tag: u8, at: i64) -> Vec<u8> {
        fleet::seal_purge(&key(1), CHANNEL, &[tag; 8], at)
    }

    fn purged(tag: u8, at: i64) -> Vec<Action> {
        vec![
            Action::Purge(Purge {
                tag: [tag; 8],
                purged_at_ms: at,
                pushed: None,
            }),
            Action::Count(Delivery::Applied),
        ]
    }

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

    fn ping() -> Vec<u8> {
        let mut out = Vec::new();
        resp::command(&mut out, &[b"PING"]);
        out
    }

    fn new(preamble: &[u8], replies: usize, servers: usize) -> Subscription {
        Subscription::new(preamble, replies, CHANNEL, servers, opener(false))
    }

    /// A failure before the link was subscribed.
    fn down(trouble: Trouble, after_ms: u64) -> Vec<Action> {
        vec![
            Action::Close,
            Action::Log(Note::Down(trouble)),
            Action::RetryAfter(after_ms),
        ]
    }

    /// A failure of a subscribed link.
    fn down_from_up(trouble: Trouble, after_ms: u64) -> Vec<Action> {
        vec![
            Action::Close,
            Action::Up(false),
            Action::Log(Note::Down(trouble)),
            Action::RetryAfter(after_ms),
        ]
    }

    fn confirmed(first: bool) -> Vec<Action> {
        vec![
            Action::Watch(PING_EVERY_MS),
            Action::Up(true),
            Action::Log(if first {
                Note::Subscribed
            } else {
                Note::SubscribedAgain
            }),
        ]
    }

    /// A subscription connected to server 0 and confirmed at `NOW`.
    fn subscribed() -> Subscription {
        let mut s = new(b"", 0, 1);
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        assert_eq!(s.handle(NOW, Event::Received(CONFIRMED)), confirmed(true));
        s
    }

    #[test]
    fn sends_the_preamble_and_subscribe_then_applies_its_channel_only() {
        let mut s = new(&auth(), 2, 1);
        assert_eq!(s.handle(NOW, Event::Timer), vec![Action::Connect(0)]);
        let mut hello = auth();
        resp::command(&mut hello, &[b"SUBSCRIBE", CHANNEL]);
        assert_eq!(
            s.handle(NOW, Event::Connected),
            vec![Action::Send(hello), Action::Watch(REPLY_DEADLINE_MS)]
        );
        assert_eq!(s.handle(NOW, Event::Received(b"+OK\r\n+O")), vec![]);
        assert_eq!(s.handle(NOW, Event::Received(b"K\r\n")), vec![]);
        assert_eq!(s.handle(NOW, Event::Received(CONFIRMED)), confirmed(true));
        let mut bytes = message(CHANNEL, &sealed(1, NOW));
        bytes.extend(message(b"other:purge", &sealed(2, NOW)));
        bytes.extend(message(CHANNEL, &sealed(3, NOW - 1000)));
        let mut expected = purged(1, NOW);
        expected.extend(purged(3, NOW - 1000));
        assert_eq!(s.handle(NOW, Event::Received(&bytes)), expected);
    }

    /// A RESP array of bulk strings, as `ZRANGE` answers.
    fn array(items: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", items.len()).into_bytes();
        for item in items {
            out.extend(format!("${}\r\n", item.len()).into_bytes());
            out.extend_from_slice(item);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn with_a_list_the_revocations_still_kept_are_read_before_each_subscription() {
        let mut s = Subscription::new(&auth(), 2, CHANNEL, 1, opener(false))
            .with_list(b"oauth2:ssf", false);
        s.handle(NOW, Event::Timer);
        let mut hello = auth();
        resp::command(
            &mut hello,
            &[b"ZRANGE", b"oauth2:ssf", b"0", b"16383", b"REV"],
        );
        resp::command(&mut hello, &[b"SUBSCRIBE", CHANNEL]);
        assert_eq!(
            s.handle(NOW, Event::Connected),
            vec![Action::Send(hello), Action::Watch(REPLY_DEADLINE_MS)]
        );
        let kept = fleet::Pushed {
            at_ms: NOW - 3_600_000,
            keep_until_ms: NOW + 1000,
        };
        let gone = fleet::Pushed {
            keep_until_ms: NOW,
            ..kept
        };
        // Sent long ago: the list is judged by how long each is kept.
        let old = NOW - 2 * MAX_AGE_MS;
        let listed = array(&[
            &fleet::seal_pushed(&key(1), CHANNEL, &[1; 8], old, kept),
            &fleet::seal_pushed(&key(1), CHANNEL, &[2; 8], old, gone),
            &sealed(3, NOW),
            &fleet::seal_pushed(&key(2), CHANNEL, &[4; 8], NOW, kept),
            b"junk",
        ]);
        let mut bytes = b"+OK\r\n+OK\r\n".to_vec();
        bytes.extend(&listed);
        bytes.extend(CONFIRMED);
        let mut expected = vec![Action::Purge(Purge {
            tag: [1; 8],
            purged_at_ms: old,
            pushed: Some(kept),
        })];
        expected.extend(confirmed(true));
        assert_eq!(s.handle(NOW, Event::Received(&bytes)), expected);
        // An empty list, and a reply that is not one, on the next links.
        s.handle(NOW, Event::Failed(Trouble::ClosedByServer));
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        let mut bytes = b"+OK\r\n+OK\r\n*0\r\n".to_vec();
        bytes.extend(CONFIRMED);
        assert_eq!(
            s.handle(NOW, Event::Received(&bytes)).first(),
            Some(&Action::Watch(PING_EVERY_MS))
        );
        s.handle(NOW, Event::Failed(Trouble::ClosedByServer));
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        let actions = s.handle(NOW, Event::Received(b"+OK\r\n+OK\r\n:1\r\n"));
        assert_eq!(actions[0], Action::Close);
    }

    #[test]
    fn in_a_cluster_the_list_is_read_where_its_slot_lives() {
        let list = b"{oauth2:ssf}";
        let slot = cluster::key_slot(list);
        let mut s = Subscription::new(&auth(), 2, CHANNEL, 2, opener(false)).with_list(list, true);
        assert_eq!(s.handle(NOW, Event::Timer), vec![Action::Connect(0)]);
        let mut hello = auth();
        resp::command(&mut hello, &[b"ZRANGE", list, b"0", b"16383", b"REV"]);
        resp::command(&mut hello, &[b"SUBSCRIBE", CHANNEL]);
        let sent = vec![
            Action::Send(hello.clone()),
            Action::Watch(REPLY_DEADLINE_MS),
        ];
        assert_eq!(s.handle(NOW, Event::Connected), sent);
        let node: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let moved = format!("+OK\r\n+OK\r\n-MOVED {slot} 127.0.0.1:7002\r\n");
        // Another node holds the list: the hello goes there, at once and
        // without a line (the subscription there is dropped unheard).
        let mut bytes = moved.clone().into_bytes();
        bytes.extend(CONFIRMED);
        assert_eq!(
            s.handle(NOW, Event::Received(&bytes)),
            vec![Action::Close, Action::ConnectTo(node)]
        );
        assert_eq!(s.handle(NOW, Event::Connected), sent);
        let kept = fleet::Pushed {
            at_ms: NOW - 1000,
            keep_until_ms: NOW + 1000,
        };
        let mut bytes = b"+OK\r\n+OK\r\n".to_vec();
        bytes.extend(array(&[&fleet::seal_pushed(
            &key(1),
            CHANNEL,
            &[5; 8],
            NOW,
            kept,
        )]));
        bytes.extend(CONFIRMED);
        let mut expected = vec![Action::Purge(Purge {
            tag: [5; 8],
            purged_at_ms: NOW,
            pushed: Some(kept),
        })];
        expected.extend(confirmed(true));
        assert_eq!(s.handle(NOW, Event::Received(&bytes)), expected);

        // -ASK (the slot migrating): `ASKING` first there, one more +OK.
        s.handle(NOW, Event::Failed(Trouble::ClosedByServer));
        assert_eq!(s.handle(NOW, Event::Timer), vec![Action::Connect(1)]);
        s.handle(NOW, Event::Connected);
        let ask = format!("+OK\r\n+OK\r\n-ASK {slot} 127.0.0.1:7002\r\n");
        assert_eq!(
            s.handle(NOW, Event::Received(ask.as_bytes())),
            vec![Action::Close, Action::ConnectTo(node)]
        );
        let mut asking = auth();
        resp::command(&mut asking, &[b"ASKING"]);
        asking.extend(&hello[auth().len()..]);
        assert_eq!(
            s.handle(NOW, Event::Connected),
            vec![Action::Send(asking), Action::Watch(REPLY_DEADLINE_MS)]
        );
        let mut bytes = b"+OK\r\n+OK\r\n+OK\r\n*0\r\n".to_vec();
        bytes.extend(CONFIRMED);
        assert_eq!(s.handle(NOW, Event::Received(&bytes)), confirmed(false));

        // Redirected round and round: three followed, the fourth a failure.
        s.handle(NOW, Event::Failed(Trouble::ClosedByServer));
        s.handle(NOW, Event::Timer);
        for _ in 0..cluster::MAX_REDIRECTIONS {
            s.handle(NOW, Event::Connected);
            assert_eq!(
                s.handle(NOW, Event::Received(moved.as_bytes())),
                vec![Action::Close, Action::ConnectTo(node)]
            );
        }
        s.handle(NOW, Event::Connected);
        let actions = s.handle(NOW, Event::Received(moved.as_bytes()));
        assert_eq!(actions[0], Action::Close);
        assert!(
            matches!(actions.last(), Some(Action::RetryAfter(_))),
            "{actions:?}"
        );
        // After the backoff, the count starts over.
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        assert_eq!(
            s.handle(NOW, Event::Received(moved.as_bytes())),
            vec![Action::Close, Action::ConnectTo(node)]
        );

        // A redirection for another slot, or nonsense: a failure.
        for reply in [
            format!("-MOVED {} 127.0.0.1:7002\r\n", (slot + 1) % 16384),
            "-MOVED x 127.0.0.1:7002\r\n".into(),
            format!("-MOVED {slot} 0.0.0.0:7002\r\n"),
        ] {
            s.handle(NOW, Event::Timer);
            s.handle(NOW, Event::Connected);
            let bytes = format!("+OK\r\n+OK\r\n{reply}");
            let actions = s.handle(NOW, Event::Received(bytes.as_bytes()));
            assert!(
                !actions.iter().any(|a| matches!(a, Action::ConnectTo(_))),
                "{reply}: {actions:?}"
            );
            assert!(
                matches!(actions.last(), Some(Action::RetryAfter(_))),
                "{reply}: {actions:?}"
            );
        }
    }

    #[test]
    fn outside_a_cluster_a_redirection_is_a_failure() {
        let list = b"{oauth2:ssf}";
        let slot = cluster::key_slot(list);
        let mut s = Subscription::new(b"", 0, CHANNEL, 1, opener(false)).with_list(list, false);
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        let bytes = format!("-MOVED {slot} 10.1.2.3:7002\r\n");
        assert_eq!(
            s.handle(NOW, Event::Received(bytes.as_bytes())),
            down(Trouble::ErrorReply("MOVED".into()), FIRST_BACKOFF_MS)
        );
    }

    #[test]
    fn a_pushed_revocation_is_applied_with_its_times_and_judged_by_when_it_was_sent() {
        let mut s = subscribed();
        let pushed = fleet::Pushed {
            at_ms: NOW - 60_000,
            keep_until_ms: NOW + 3_600_000,
        };
        let fresh = fleet::seal_pushed(&key(1), CHANNEL, &[4; 8], NOW - 1000, pushed);
        assert_eq!(
            s.handle(NOW, Event::Received(&message(CHANNEL, &fresh))),
            vec![
                Action::Purge(Purge {
                    tag: [4; 8],
                    purged_at_ms: NOW - 1000,
                    pushed: Some(pushed),
                }),
                Action::Count(Delivery::Applied),
            ]
        );
        let old = fleet::seal_pushed(&key(1), CHANNEL, &[5; 8], NOW - MAX_AGE_MS - 1, pushed);
        let actions = s.handle(NOW, Event::Received(&message(CHANNEL, &old)));
        assert_eq!(actions[0], Action::Count(Delivery::Stale));
        let again = s.handle(NOW, Event::Received(&message(CHANNEL, &fresh)));
        assert_eq!(again[0], Action::Count(Delivery::Replayed));
    }

    #[test]
    fn servers_take_turns_and_the_backoff_doubles_to_five_seconds() {
        let mut s = new(b"", 0, 3);
        let mut waits = Vec::new();
        for attempt in 0..9 {
            assert_eq!(
                s.handle(NOW, Event::Timer),
                vec![Action::Connect(attempt % 3)]
            );
            let actions = s.handle(NOW, Event::Failed(Trouble::RefusedOrReset));
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
        // The end of the outage is logged; a link that fails before it
        // was stable keeps the backoff where it was, and belongs to the
        // same outage: nothing is logged.
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        assert_eq!(s.handle(NOW, Event::Received(CONFIRMED)), confirmed(false));
        assert_eq!(
            s.handle(NOW + STABLE_MS - 1, Event::Failed(Trouble::ClosedByServer)),
            vec![Action::Close, Action::Up(false), Action::RetryAfter(5000)]
        );
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        assert_eq!(
            s.handle(NOW, Event::Received(CONFIRMED)),
            vec![Action::Watch(PING_EVERY_MS), Action::Up(true)]
        );
        // One that stayed up STABLE_MS ended the outage: the next failure
        // is a new one, logged, and the backoff starts over.
        assert_eq!(
            s.handle(NOW + STABLE_MS, Event::Failed(Trouble::ClosedByServer)),
            down_from_up(Trouble::ClosedByServer, 100)
        );
        s.handle(NOW, Event::Timer);
        assert_eq!(s.handle(NOW, Event::Received(CONFIRMED)), confirmed(false));
    }

    #[test]
    fn a_server_that_drops_each_subscription_is_retried_ever_more_slowly() {
        // Before, each SUBSCRIBE reset the backoff: such a server (or a
        // client able to make Redis drop the link) got a retry every 100 ms.
        let mut s = new(b"", 0, 1);
        let mut now = NOW;
        let mut waits = Vec::new();
        let mut lines = Vec::new();
        for _ in 0..8 {
            s.handle(now, Event::Timer);
            s.handle(now, Event::Connected);
            let mut actions = s.handle(now, Event::Received(CONFIRMED));
            now += 1000;
            actions.extend(s.handle(now, Event::Failed(Trouble::ClosedByServer)));
            match actions.last() {
                Some(Action::RetryAfter(ms)) => waits.push(*ms),
                other => panic!("{other:?}"),
            }
            lines.extend(actions.into_iter().filter(|a| matches!(a, Action::Log(_))));
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // One outage: its start, its first end, nothing per flap.
        assert_eq!(
            lines,
            [
                Action::Log(Note::Subscribed),
                Action::Log(Note::Down(Trouble::ClosedByServer)),
                Action::Log(Note::SubscribedAgain)
            ]
        );
    }

    #[test]
    fn a_quiet_reconnection_is_not_logged() {
        let mut s = subscribed();
        s.handle(NOW, Event::Failed(Trouble::ClosedByServer));
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        // The outage was logged: its end is too.
        assert_eq!(s.handle(NOW, Event::Received(CONFIRMED)), confirmed(false));
        // A subscription that was never down says nothing more.
        let mut fresh = new(b"", 0, 1);
        fresh.handle(NOW, Event::Timer);
        assert_eq!(
            fresh.handle(NOW, Event::Received(CONFIRMED)),
            confirmed(true)
        );
    }

    #[test]
    fn whatever_the_server_should_not_say_is_a_failure() {
        let other_channel = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:1\r\n";
        let cases: [(&[u8], usize, &[u8], Trouble); 8] = [
            (
                &auth(),
                2,
                b"-WRONGPASS invalid username-password pair\r\n",
                Trouble::ErrorReply("WRONGPASS".into()),
            ),
            (&auth(), 2, b"+QUEUED\r\n", Trouble::UnexpectedPreambleReply),
            (&auth(), 2, b":1\r\n", Trouble::UnexpectedPreambleReply),
            (b"", 0, b"+OK\r\n", Trouble::UnexpectedSubscribeReply),
            (b"", 0, other_channel, Trouble::UnexpectedSubscribeReply),
            (b"", 0, PONG, Trouble::UnexpectedSubscribeReply),
            (b"", 0, b"HTTP/1.1 400 Bad Request\r\n", Trouble::Unreadable),
            (b"", 0, b"*1\r\n*3\r\n", Trouble::Unreadable),
        ];
        for (preamble, replies, bytes, trouble) in cases {
            let mut s = new(preamble, replies, 1);
            s.handle(NOW, Event::Timer);
            s.handle(NOW, Event::Connected);
            assert_eq!(s.handle(NOW, Event::Received(bytes)), down(trouble, 100));
        }
        let subscribed_cases: [(&[u8], Trouble); 5] = [
            (b"-ERR unknown\r\n", Trouble::ErrorReply("ERR".into())),
            (b"+OK\r\n", Trouble::UnexpectedReply),
            (b":7\r\n", Trouble::UnexpectedReply),
            // A pattern message: pub/sub sends it only to PSUBSCRIBE.
            (
                b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$12\r\noauth2:purge\r\n$1\r\nx\r\n",
                Trouble::Unreadable,
            ),
            (b"*3\r\n$7\r\nmessage\r\n*0\r\n", Trouble::Unreadable),
        ];
        for (bytes, trouble) in subscribed_cases {
            let mut s = subscribed();
            assert_eq!(
                s.handle(NOW, Event::Received(bytes)),
                down_from_up(trouble, 100)
            );
        }
    }

    #[test]
    fn an_oversized_message_is_read_past_and_the_next_purge_applies() {
        let mut s = subscribed();
        let before = s.work();
        let mut stream = format!(
            "*3\r\n$7\r\nmessage\r\n$12\r\noauth2:purge\r\n${}\r\n",
            2 << 20
        )
        .into_bytes();
        stream.resize(stream.len() + (2 << 20), b'x');
        stream.extend(b"\r\n");
        stream.extend(message(CHANNEL, &vec![b'y'; MAX_MESSAGE + 1]));
        stream.extend(message(CHANNEL, &sealed(4, NOW)));
        let mut actions = Vec::new();
        for piece in stream.chunks(4096) {
            actions.extend(s.handle(NOW, Event::Received(piece)));
        }
        let mut expected = vec![
            Action::Count(Delivery::Oversized),
            Action::Log(Note::Refused {
                what: Delivery::Oversized,
                more: 0,
            }),
            Action::Count(Delivery::Oversized),
        ];
        expected.extend(purged(4, NOW));
        assert_eq!(actions, expected);
        // Read once: about a step per byte, not a parse per piece.
        let work = s.work() - before;
        assert!(work <= 2 * stream.len() as u64, "{work}");
        // A payload of MAX_MESSAGE bytes is still read (and refused as junk).
        assert_eq!(
            s.handle(
                NOW,
                Event::Received(&message(CHANNEL, &vec![b'z'; MAX_MESSAGE]))
            ),
            vec![
                Action::Count(Delivery::Unopened),
                Action::Log(Note::Refused {
                    what: Delivery::Unopened,
                    more: 0
                })
            ]
        );
    }

    #[test]
    fn the_handshake_and_each_ping_have_a_deadline() {
        // No answer to the handshake: a failure, logged.
        let mut s = new(&auth(), 2, 1);
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Connected);
        assert_eq!(s.handle(NOW, Event::Received(b"+OK\r\n")), vec![]);
        assert_eq!(
            s.handle(NOW, Event::Watch),
            down(Trouble::HandshakeUnanswered, 100)
        );
        // A watch that fires once the link is gone changes nothing.
        assert_eq!(s.handle(NOW, Event::Watch), vec![]);
        // Subscribed: a PING at each watch, answered within the deadline.
        let mut s = subscribed();
        for _ in 0..3 {
            assert_eq!(
                s.handle(NOW, Event::Watch),
                vec![Action::Send(ping()), Action::Watch(REPLY_DEADLINE_MS)]
            );
            assert_eq!(
                s.handle(NOW, Event::Received(PONG)),
                vec![Action::Watch(PING_EVERY_MS)]
            );
        }
        // Messages before the pong are applied as usual.
        s.handle(NOW, Event::Watch);
        let mut bytes = message(CHANNEL, &sealed(5, NOW));
        bytes.extend(PONG);
        let mut expected = purged(5, NOW);
        expected.push(Action::Watch(PING_EVERY_MS));
        assert_eq!(s.handle(NOW, Event::Received(&bytes)), expected);
        // An unasked pong is nothing; an unanswered PING is a failure.
        assert_eq!(s.handle(NOW, Event::Received(PONG)), vec![]);
        s.handle(NOW, Event::Watch);
        assert_eq!(
            s.handle(NOW, Event::Watch),
            down_from_up(Trouble::PingUnanswered, 100)
        );
    }

    #[test]
    fn messages_that_do_not_open_are_counted_and_logged_once_per_interval() {
        let mut s = subscribed();
        let wrong_key = fleet::seal_purge(&key(3), CHANNEL, &[1; 8], NOW);
        let other_channel = fleet::seal_purge(&key(1), b"other:purge", &[1; 8], NOW);
        let mut actions = Vec::new();
        for junk in [&wrong_key[..], &other_channel, b"", b"junk"]
            .iter()
            .cycle()
            .take(100)
        {
            actions.extend(s.handle(NOW, Event::Received(&message(CHANNEL, junk))));
        }
        let counted = actions
            .iter()
            .filter(|a| **a == Action::Count(Delivery::Unopened))
            .count();
        assert_eq!(counted, 100);
        assert_eq!(actions.len(), 101, "one line: {:?}", &actions[..3]);
        let later = NOW + REFUSED_LOG_INTERVAL_S as i64 * 1000;
        assert_eq!(
            s.handle(later, Event::Received(&message(CHANNEL, &wrong_key))),
            vec![
                Action::Count(Delivery::Unopened),
                Action::Log(Note::Refused {
                    what: Delivery::Unopened,
                    more: 99
                })
            ]
        );
        // Opened with the old key during a rotation.
        let mut rotating = Subscription::new(b"", 0, CHANNEL, 1, opener(true));
        rotating.handle(NOW, Event::Timer);
        rotating.handle(NOW, Event::Received(CONFIRMED));
        let old = fleet::seal_purge(&key(2), CHANNEL, &[6; 8], NOW);
        assert_eq!(
            rotating.handle(NOW, Event::Received(&message(CHANNEL, &old))),
            purged(6, NOW)
        );
    }

    #[test]
    fn old_future_and_replayed_purges_are_refused() {
        let mut s = subscribed();
        let refused = |what| {
            vec![
                Action::Count(what),
                Action::Log(Note::Refused { what, more: 0 }),
            ]
        };
        let too_old = sealed(1, NOW - MAX_AGE_MS - 1);
        assert_eq!(
            s.handle(NOW, Event::Received(&message(CHANNEL, &too_old))),
            refused(Delivery::Stale)
        );
        let ahead = sealed(1, NOW + MAX_AHEAD_MS + 1);
        assert_eq!(
            s.handle(NOW, Event::Received(&message(CHANNEL, &ahead))),
            vec![Action::Count(Delivery::Stale)],
            "logged already in this interval"
        );
        // At the bounds: applied.
        for at in [NOW - MAX_AGE_MS, NOW + MAX_AHEAD_MS] {
            assert_eq!(
                s.handle(NOW, Event::Received(&message(CHANNEL, &sealed(2, at)))),
                purged(2, at)
            );
        }
        // The same message again, while it is fresh: a replay.
        let once = sealed(3, NOW);
        assert_eq!(
            s.handle(NOW, Event::Received(&message(CHANNEL, &once))),
            purged(3, NOW)
        );
        assert_eq!(
            s.handle(NOW + 1000, Event::Received(&message(CHANNEL, &once))),
            refused(Delivery::Replayed)
        );
        // Remembered across reconnections, up to REMEMBERED messages.
        s.handle(NOW, Event::Failed(Trouble::ClosedByServer));
        s.handle(NOW, Event::Timer);
        s.handle(NOW, Event::Received(CONFIRMED));
        assert_eq!(
            s.handle(NOW + 1000, Event::Received(&message(CHANNEL, &once))),
            vec![Action::Count(Delivery::Replayed)]
        );
        for i in 0..REMEMBERED {
            let at = NOW - i as i64;
            let actions = s.handle(NOW, Event::Received(&message(CHANNEL, &sealed(4, at))));
            assert_eq!(actions, purged(4, at));
        }
        // The oldest remembered fell out: within its age, it applies again.
        assert_eq!(
            s.handle(NOW, Event::Received(&message(CHANNEL, &once))),
            purged(3, NOW)
        );
    }

    #[test]
    fn messages_before_a_failure_are_applied_and_nothing_after_it() {
        let mut s = subscribed();
        let mut bytes = message(CHANNEL, &sealed(1, NOW));
        bytes.extend(b"!garbage\r\n");
        bytes.extend(message(CHANNEL, &sealed(2, NOW)));
        let mut expected = purged(1, NOW);
        expected.extend(down_from_up(Trouble::Unreadable, 100));
        assert_eq!(s.handle(NOW, Event::Received(&bytes)), expected);
        // Closed: what the glue may still report is ignored until the timer.
        assert_eq!(
            s.handle(NOW, Event::Received(&message(CHANNEL, &sealed(3, NOW)))),
            vec![]
        );
        assert_eq!(s.handle(NOW, Event::Failed(Trouble::CannotRead)), vec![]);
        assert_eq!(s.handle(NOW, Event::Connected), vec![]);
        assert_eq!(s.handle(NOW, Event::Watch), vec![]);
        // A new connection starts from an empty buffer.
        assert_eq!(s.handle(NOW, Event::Timer), vec![Action::Connect(0)]);
        s.handle(NOW, Event::Connected);
        assert_eq!(s.handle(NOW, Event::Received(CONFIRMED)), confirmed(false));
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
        assert_eq!(
            Trouble::PingUnanswered.to_string(),
            "no answer to PING within 3000 ms"
        );
        assert_eq!(
            Note::Refused {
                what: Delivery::Stale,
                more: 3
            }
            .to_string(),
            "revocation channel: ignored a purge message older than 300 s or more than 60 s ahead of this gateway's clock (a replay, or clocks apart); 3 more of this kind since the last such line"
        );
        let names: Vec<_> = Delivery::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(
            names,
            ["applied", "oversized", "unopened", "stale", "replayed"]
        );
    }

    proptest! {
        /// However the bytes are cut into reads, the same actions come out.
        #[test]
        fn reads_may_stop_anywhere(cuts in proptest::collection::vec(0usize..600, 0..8)) {
            let mut stream = b"+OK\r\n".to_vec();
            stream.extend(CONFIRMED);
            stream.extend(message(CHANNEL, &sealed(1, NOW)));
            stream.extend(message(b"elsewhere", &sealed(2, NOW)));
            stream.extend(message(CHANNEL, b"junk"));
            stream.extend(message(CHANNEL, &sealed(3, NOW)));
            let run = |pieces: Vec<&[u8]>| {
                let mut preamble = Vec::new();
                resp::command(&mut preamble, &[b"SELECT", b"1"]);
                let mut s = Subscription::new(&preamble, 1, CHANNEL, 1, opener(false));
                s.handle(NOW, Event::Timer);
                s.handle(NOW, Event::Connected);
                pieces.into_iter().flat_map(|p| s.handle(NOW, Event::Received(p))).collect::<Vec<_>>()
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
            prop_assert_eq!(whole.len(), 3 + 2 + 2 + 2);
            prop_assert_eq!(run(pieces), whole);
        }

        /// Whatever a subscribed link receives, in whatever pieces: no
        /// panic, work in proportion to the bytes, and the link either
        /// stays up or fails once.
        #[test]
        fn any_bytes_cost_their_length(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let mut s = subscribed();
            let before = s.work();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut at = 0;
            let mut closes = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                let actions = s.handle(NOW, Event::Received(&bytes[at..cut]));
                closes += actions.iter().filter(|a| **a == Action::Close).count();
                at = cut;
            }
            prop_assert!(closes <= 1);
            prop_assert!(s.work() - before <= 2 * bytes.len() as u64 + 32);
        }
    }
}
