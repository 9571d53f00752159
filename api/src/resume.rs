//! Resumable streams: the frame format and the bookkeeping that lets a
//! byte stream outlive the connection carrying it (issue "sessions that
//! survive"; not wired into the CLI or the sidecar yet).
//!
//! Each direction numbers its bytes from 0. Data travels in frames that
//! carry the offset of their first byte; each side acknowledges what it
//! has received (cumulatively) and keeps what it sent but has not seen
//! acknowledged in a bounded replay buffer. When the connection breaks,
//! the client opens a new one (through any router replica) naming the
//! session and the offset it has received; the other side does the same
//! in its answer; each then resends from the peer's offset. Bytes below
//! what a receiver already has are dropped (a resend overlaps), a gap is
//! an error (never silent corruption), and a peer asking for bytes that
//! have left the replay buffer gets [`ResumeError::Unrecoverable`].
//!
//! Frame: `kind u8 ‖ offset u64 BE ‖ length u32 BE ‖ payload`. Kinds:
//! [`Frame::Data`] (payload = bytes from `offset`), [`Frame::Ack`] (no
//! payload; `offset` = bytes received in total), [`Frame::End`] (no
//! payload; the sender's stream ends at `offset`: a half-close).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest payload of one data frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes of a frame before its payload.
pub const HEADER_LEN: usize = 1 + 8 + 4;
/// Default bound of each direction's replay buffer.
pub const DEFAULT_REPLAY_BYTES: usize = 4 << 20;

const KIND_DATA: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_END: u8 = 3;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of the stream from `offset` on.
    Data { offset: u64, bytes: Vec<u8> },
    /// The receiver has every byte below `offset`.
    Ack { offset: u64 },
    /// The stream ends at `offset` (no byte at or after it will come).
    End { offset: u64 },
}

/// Why a frame or a resume cannot be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    /// A frame's kind byte is unknown.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A payload over [`MAX_PAYLOAD`], or one on a frame that has none.
    #[error("a frame of kind {kind} with {len} payload bytes")]
    BadLength { kind: u8, len: usize },
    /// Data starts after what was received: bytes in between are missing.
    #[error("a gap in the stream: have {have} bytes, the frame starts at {starts}")]
    Gap { have: u64, starts: u64 },
    /// The peer acknowledges (or asks to resume from) bytes never sent.
    #[error("the peer is at offset {peer}, beyond the {sent} bytes sent")]
    Beyond { peer: u64, sent: u64 },
    /// The peer needs bytes that have left the replay buffer.
    #[error(
        "cannot resume: the peer has {peer} bytes and the replay buffer starts at {oldest} (the session was away too long or too much was sent)"
    )]
    Unrecoverable { peer: u64, oldest: u64 },
    /// Sending more than the replay buffer holds unacknowledged.
    #[error("the replay buffer is full ({0} bytes unacknowledged)")]
    Full(usize),
    /// Data after the stream's end, or two different ends.
    #[error("data or an end after the stream ended at {0}")]
    AfterEnd(u64),
}

/// A bound on the replay bytes many sessions hold together (the
/// sidecar's total): a session reads from its local side only while it
/// holds room for the read, so a full budget back-pressures the
/// workload instead of growing memory.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes held by all sessions.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes when they fit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.limit).then_some(used + n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

impl Frame {
    /// Appends the frame's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, offset, payload): (u8, u64, &[u8]) = match self {
            Frame::Data { offset, bytes } => (KIND_DATA, *offset, bytes),
            Frame::Ack { offset } => (KIND_ACK, *offset, &[]),
            Frame::End { offset } => (KIND_END, *offset, &[]),
        };
        encode_header(kind, offset, payload.len(), out);
        out.extend_from_slice(payload);
    }

    /// Decodes one frame from the front of `buf`: the frame and the bytes
    /// it took, `Ok(None)` when `buf` holds only part of one.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ResumeError> {
        Ok(FrameRef::decode(buf)?.map(|(frame, used)| (frame.to_frame(), used)))
    }

    /// The frame as a [`FrameRef`] borrowing its payload.
    pub fn as_ref(&self) -> FrameRef<'_> {
        match self {
            Frame::Data { offset, bytes } => FrameRef::Data {
                offset: *offset,
                bytes,
            },
            Frame::Ack { offset } => FrameRef::Ack { offset: *offset },
            Frame::End { offset } => FrameRef::End { offset: *offset },
        }
    }
}

/// A frame decoded in place: its payload borrowed from the bytes read
/// (the pump's way, one copy fewer than [`Frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    Data { offset: u64, bytes: &'a [u8] },
    Ack { offset: u64 },
    End { offset: u64 },
}

impl<'a> FrameRef<'a> {
    /// Decodes one frame from the front of `buf`: the frame and the bytes
    /// it took, `Ok(None)` when `buf` holds only part of one.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(FrameRef<'a>, usize)>, ResumeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = buf[0];
        let offset = u64::from_be_bytes(buf[1..9].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(buf[9..13].try_into().expect("4 bytes")) as usize;
        let allowed = match kind {
            KIND_DATA => MAX_PAYLOAD,
            KIND_ACK | KIND_END => 0,
            other => return Err(ResumeError::UnknownKind(other)),
        };
        if len > allowed {
            return Err(ResumeError::BadLength { kind, len });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let frame = match kind {
            KIND_DATA => FrameRef::Data {
                offset,
                bytes: &buf[HEADER_LEN..HEADER_LEN + len],
            },
            KIND_ACK => FrameRef::Ack { offset },
            _ => FrameRef::End { offset },
        };
        Ok(Some((frame, HEADER_LEN + len)))
    }

    /// An owned copy.
    pub fn to_frame(self) -> Frame {
        match self {
            FrameRef::Data { offset, bytes } => Frame::Data {
                offset,
                bytes: bytes.to_vec(),
            },
            FrameRef::Ack { offset } => Frame::Ack { offset },
            FrameRef::End { offset } => Frame::End { offset },
        }
    }
}

/// Appends a frame's header to `out`.
fn encode_header(kind: u8, offset: u64, len: usize, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// One direction's sending side: numbers the bytes, keeps the
/// unacknowledged ones for a resend.
#[derive(Debug)]
pub struct Sender {
    /// Bytes handed to `send` so far (the next byte's offset).
    sent: u64,
    /// The stream's end, once `end` was called.
    end: Option<u64>,
    /// Unacknowledged bytes, from `sent - replay.len()` on.
    replay: VecDeque<u8>,
    /// The replay buffer's bound.
    pub limit: usize,
}

impl Sender {
    /// A sender whose replay buffer holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            sent: 0,
            end: None,
            replay: VecDeque::new(),
            limit,
        }
    }

    /// The offset of the oldest byte still kept.
    pub fn oldest(&self) -> u64 {
        self.sent - self.replay.len() as u64
    }

    /// Bytes sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.replay.len()
    }

    /// Frames carrying `bytes` (kept until acknowledged). Refused when the
    /// replay buffer would overflow: the caller waits for an ack.
    pub fn send(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, ResumeError> {
        if let Some(end) = self.end {
            return Err(ResumeError::AfterEnd(end));
        }
        if self.replay.len() + bytes.len() > self.limit {
            return Err(ResumeError::Full(self.replay.len()));
        }
        let mut frames = Vec::new();
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            frames.push(Frame::Data {
                offset: self.sent,
                bytes: chunk.to_vec(),
            });
            self.replay.extend(chunk);
            self.sent += chunk.len() as u64;
        }
        Ok(frames)
    }

    /// [`Self::send`], the frames encoded straight into `out` (no frame
    /// is built: one copy into `out`, one into the replay buffer).
    pub fn send_into(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ResumeError> {
        if let Some(end) = self.end {
            return Err(ResumeError::AfterEnd(end));
        }
        if self.replay.len() + bytes.len() > self.limit {
            return Err(ResumeError::Full(self.replay.len()));
        }
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            encode_header(KIND_DATA, self.sent, chunk.len(), out);
            out.extend_from_slice(chunk);
            self.replay.extend(chunk);
            self.sent += chunk.len() as u64;
        }
        Ok(())
    }

    /// Sends the payload already in `frame` after [`HEADER_LEN`] bytes
    /// left for the header (at most [`MAX_PAYLOAD`]), writing the header
    /// there: the payload is read once into the buffer that goes out, and
    /// copied only into the replay buffer.
    pub fn send_framed(&mut self, frame: &mut [u8]) -> Result<(), ResumeError> {
        let payload = frame.len() - HEADER_LEN;
        if let Some(end) = self.end {
            return Err(ResumeError::AfterEnd(end));
        }
        if payload > MAX_PAYLOAD {
            return Err(ResumeError::BadLength {
                kind: KIND_DATA,
                len: payload,
            });
        }
        if self.replay.len() + payload > self.limit {
            return Err(ResumeError::Full(self.replay.len()));
        }
        frame[0] = KIND_DATA;
        frame[1..9].copy_from_slice(&self.sent.to_be_bytes());
        frame[9..HEADER_LEN].copy_from_slice(&(payload as u32).to_be_bytes());
        self.replay.extend(&frame[HEADER_LEN..]);
        self.sent += payload as u64;
        Ok(())
    }

    /// The end frame (a half-close).
    pub fn end(&mut self) -> Frame {
        let end = *self.end.get_or_insert(self.sent);
        Frame::End { offset: end }
    }

    /// The peer has every byte below `offset`: they leave the buffer.
    pub fn acknowledge(&mut self, offset: u64) -> Result<(), ResumeError> {
        if offset > self.sent {
            return Err(ResumeError::Beyond {
                peer: offset,
                sent: self.sent,
            });
        }
        let oldest = self.oldest();
        if offset > oldest {
            self.replay.drain(..(offset - oldest) as usize);
        }
        Ok(())
    }

    /// After a reconnect: the frames that bring a peer holding `peer`
    /// bytes up to date (and the end, if the stream ended).
    pub fn resume_from(&mut self, peer: u64) -> Result<Vec<Frame>, ResumeError> {
        let oldest = self.oldest();
        if peer < oldest {
            return Err(ResumeError::Unrecoverable { peer, oldest });
        }
        self.acknowledge(peer)?;
        let pending: Vec<u8> = self.replay.iter().copied().collect();
        let mut frames = Vec::new();
        let mut offset = peer;
        for chunk in pending.chunks(MAX_PAYLOAD) {
            frames.push(Frame::Data {
                offset,
                bytes: chunk.to_vec(),
            });
            offset += chunk.len() as u64;
        }
        if let Some(end) = self.end {
            frames.push(Frame::End { offset: end });
        }
        Ok(frames)
    }
}

/// One direction's receiving side: what has arrived, in order, once.
#[derive(Debug, Default)]
pub struct Receiver {
    received: u64,
    ended: Option<u64>,
}

impl Receiver {
    /// Bytes received in order so far: what an ack and a resume name.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the stream has ended and every byte arrived.
    pub fn finished(&self) -> bool {
        self.ended == Some(self.received)
    }

    /// Takes a data or end frame; returns the bytes new to this side (a
    /// resend's overlap is dropped). Acks are the sender's business.
    pub fn accept<'a>(&mut self, frame: &'a Frame) -> Result<&'a [u8], ResumeError> {
        self.accept_ref(frame.as_ref())
    }

    /// [`Self::accept`] for a frame decoded in place.
    pub fn accept_ref<'a>(&mut self, frame: FrameRef<'a>) -> Result<&'a [u8], ResumeError> {
        match frame {
            FrameRef::Data { offset, bytes } => {
                if let Some(end) = self.ended
                    && offset + bytes.len() as u64 > end
                {
                    return Err(ResumeError::AfterEnd(end));
                }
                if offset > self.received {
                    return Err(ResumeError::Gap {
                        have: self.received,
                        starts: offset,
                    });
                }
                let skip = (self.received - offset).min(bytes.len() as u64) as usize;
                let new = &bytes[skip..];
                self.received += new.len() as u64;
                Ok(new)
            }
            FrameRef::End { offset } => {
                match self.ended {
                    Some(end) if end != offset => return Err(ResumeError::AfterEnd(end)),
                    _ if offset < self.received => return Err(ResumeError::AfterEnd(self.received)),
                    _ => self.ended = Some(offset),
                }
                Ok(&[])
            }
            FrameRef::Ack { .. } => Ok(&[]),
        }
    }
}

/// How a [`Session::pump`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Both directions ended and every byte was acknowledged.
    Done,
    /// The transport broke (closed or failed): reconnect, exchange
    /// [`Session::received`], [`Session::resume`], pump again.
    Broken,
}

/// One end of a resumable stream: both directions' bookkeeping, kept
/// across transports.
#[derive(Debug)]
pub struct Session {
    sender: Sender,
    receiver: Receiver,
    /// Encoded frames for the current transport, written up to
    /// `outgoing_at` (an offset, not a drain: partial writes move nothing).
    outgoing: Vec<u8>,
    outgoing_at: usize,
    /// Bytes received for the local side, written up to `to_local_at`.
    to_local: Vec<u8>,
    to_local_at: usize,
    /// The local side ended its stream (EOF read).
    local_ended: bool,
    /// The local side's writing half was shut (the peer's end arrived).
    local_shut: bool,
    /// What the last ack sent named.
    acked: u64,
    /// The shared bound this session's replay bytes count against, and
    /// how much of it this session holds.
    budget: Option<(Arc<Budget>, usize)>,
}

/// How long a transport may stay silent while this side waits on it.
pub const DEFAULT_LIVENESS: std::time::Duration = std::time::Duration::from_secs(20);

/// How much is read from the local side at once.
const READ_CHUNK: usize = 64 * 1024;
/// The transport's read buffer: several frames, so that a partial frame
/// at its end is moved to the front only now and then.
const INCOMING_ROOM: usize = 512 * 1024;
/// How often a session blocked on the shared budget looks again.
const BUDGET_RETRY: std::time::Duration = std::time::Duration::from_millis(20);
/// An ack goes out once this much arrived since the last one (and
/// whenever the transport has nothing else to read).
const ACK_EVERY: u64 = 256 * 1024;

impl Session {
    /// A session whose replay buffer per direction holds `replay_limit`
    /// bytes (at least one read's worth, 64 KiB).
    pub fn new(replay_limit: usize) -> Self {
        Self {
            sender: Sender::new(replay_limit.max(READ_CHUNK)),
            receiver: Receiver::default(),
            outgoing: Vec::new(),
            outgoing_at: 0,
            to_local: Vec::new(),
            to_local_at: 0,
            local_ended: false,
            local_shut: false,
            acked: 0,
            budget: None,
        }
    }

    /// [`Self::new`], its replay bytes also counted against `budget`.
    pub fn with_budget(replay_limit: usize, budget: Arc<Budget>) -> Self {
        let mut session = Self::new(replay_limit);
        session.budget = Some((budget, 0));
        session
    }

    /// Bytes sent so far (from the local side into the stream).
    pub fn sent(&self) -> u64 {
        self.sender.sent
    }

    /// Whether the budget has room for one more local read (taking it if
    /// so); gives back what acks freed beyond that (all but the
    /// unacknowledged bytes once the local side ended).
    fn budget_allows_read(&mut self) -> bool {
        let next_read = if self.local_ended { 0 } else { READ_CHUNK };
        let want = self.sender.unacknowledged() + next_read;
        let Some((budget, held)) = &mut self.budget else {
            return true;
        };
        if *held > want {
            budget.give(*held - want);
            *held = want;
        } else if *held < want && budget.try_take(want - *held) {
            *held = want;
        }
        *held >= want
    }

    /// Bytes received in order: what a resume tells the peer.
    pub fn received(&self) -> u64 {
        self.receiver.received()
    }

    /// After a reconnect, with the peer's [`Self::received`]: queues what it
    /// lacks (and an ack of what this side has).
    pub fn resume(&mut self, peer_received: u64) -> Result<(), ResumeError> {
        self.outgoing.clear();
        self.outgoing_at = 0;
        for frame in self.sender.resume_from(peer_received)? {
            frame.encode(&mut self.outgoing);
        }
        self.queue_ack();
        Ok(())
    }

    fn queue_ack(&mut self) {
        self.acked = self.receiver.received();
        Frame::Ack { offset: self.acked }.encode(&mut self.outgoing);
    }

    fn done(&self) -> bool {
        self.local_ended
            && self.sender.unacknowledged() == 0
            && self.outgoing_at == self.outgoing.len()
            && self.receiver.finished()
            && self.to_local_at == self.to_local.len()
            && self.local_shut
    }

    /// Moves bytes between `local` (the application: ssh's stdin/stdout, a
    /// forwarded connection) and `transport` (one connection through the
    /// router) until both directions are done or the transport breaks.
    /// A frame error (a gap, a peer beyond what was sent) is returned.
    pub async fn pump<L, T>(&mut self, local: &mut L, transport: T) -> Result<Pumped, ResumeError>
    where
        L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.pump_with(local, transport, DEFAULT_LIVENESS).await
    }

    /// [`Self::pump`], calling the transport broken when it has been
    /// silent for `liveness` while this side waits on it (bytes
    /// unacknowledged or not yet written): a connection that died without
    /// a word (a NAT forgot it, a laptop slept) is noticed in that time,
    /// not when TCP gives up.
    pub async fn pump_with<L, T>(
        &mut self,
        local: &mut L,
        transport: T,
        liveness: std::time::Duration,
    ) -> Result<Pumped, ResumeError>
    where
        L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use bytes::BufMut as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut local_r, mut local_w) = tokio::io::split(local);
        let (mut transport_r, mut transport_w) = tokio::io::split(transport);
        // A local read lands after room for its frame's header: the buffer
        // is then the frame, and goes out as it is when nothing waits
        // before it (swapped with `outgoing`, not copied).
        let mut frame = Vec::with_capacity(HEADER_LEN + READ_CHUNK);
        frame.resize(HEADER_LEN, 0);
        // Transport reads land straight here; decoded frames are consumed
        // up to `incoming_at`, and the rest is moved to the front only when
        // the room runs out (not after every read).
        let mut incoming: Vec<u8> = Vec::with_capacity(INCOMING_ROOM);
        let mut incoming_at = 0;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            if self.done() {
                let _ = transport_w.shutdown().await;
                return Ok(Pumped::Done);
            }
            if incoming.capacity() - incoming.len() < READ_CHUNK + HEADER_LEN {
                incoming.drain(..incoming_at);
                incoming_at = 0;
                incoming.reserve(READ_CHUNK + HEADER_LEN);
            }
            if self.outgoing_at == self.outgoing.len() && self.outgoing_at > 0 {
                self.outgoing.clear();
                self.outgoing_at = 0;
            }
            if self.to_local_at == self.to_local.len() && self.to_local_at > 0 {
                self.to_local.clear();
                self.to_local_at = 0;
            }
            let room = self.sender.unacknowledged() + READ_CHUNK <= self.sender.limit;
            let budget_ok = self.budget_allows_read();
            let can_read_local = !self.local_ended && room && budget_ok;
            let blocked_on_budget = !self.local_ended && room && !budget_ok;
            let waiting_on_peer = self.sender.unacknowledged() > 0 || self.outgoing_at < self.outgoing.len();
            tokio::select! {
                _ = tokio::time::sleep_until(last_heard + liveness), if waiting_on_peer => {
                    return Ok(Pumped::Broken);
                }
                // Other sessions' acks free the shared budget: look again.
                _ = tokio::time::sleep(BUDGET_RETRY), if blocked_on_budget => {}
                read = async { local_r.read_buf(&mut (&mut frame).limit(READ_CHUNK)).await }, if can_read_local => {
                    match read {
                        Ok(0) | Err(_) => {
                            self.local_ended = true;
                            self.sender.end().encode(&mut self.outgoing);
                        }
                        Ok(_) => {
                            self.sender.send_framed(&mut frame)?;
                            if self.outgoing.is_empty() {
                                std::mem::swap(&mut self.outgoing, &mut frame);
                            } else {
                                self.outgoing.extend_from_slice(&frame);
                            }
                            frame.clear();
                            frame.resize(HEADER_LEN, 0);
                            frame.reserve(READ_CHUNK);
                        }
                    }
                }
                read = transport_r.read_buf(&mut incoming) => {
                    match read {
                        Ok(0) | Err(_) => return Ok(Pumped::Broken),
                        Ok(_) => {}
                    }
                    last_heard = tokio::time::Instant::now();
                    while let Some((frame, used)) = FrameRef::decode(&incoming[incoming_at..])? {
                        incoming_at += used;
                        match frame {
                            FrameRef::Ack { offset } => self.sender.acknowledge(offset)?,
                            _ => {
                                let new = self.receiver.accept_ref(frame)?;
                                self.to_local.extend_from_slice(new);
                            }
                        }
                    }
                    if incoming_at == incoming.len() {
                        incoming.clear();
                        incoming_at = 0;
                    }
                    let unacked = self.receiver.received() - self.acked;
                    let drained = incoming_at == incoming.len();
                    if unacked >= ACK_EVERY || (unacked > 0 && drained) || self.receiver.finished() && unacked > 0 {
                        self.queue_ack();
                    }
                }
                written = transport_w.write(&self.outgoing[self.outgoing_at..]), if self.outgoing_at < self.outgoing.len() => {
                    match written {
                        Ok(0) | Err(_) => return Ok(Pumped::Broken),
                        Ok(n) => self.outgoing_at += n,
                    }
                }
                written = local_w.write(&self.to_local[self.to_local_at..]), if self.to_local_at < self.to_local.len() => {
                    // A local side that cannot take more has gone: what it
                    // would have read is dropped, as a closed socket drops it.
                    match written {
                        Ok(0) | Err(_) => self.to_local_at = self.to_local.len(),
                        Ok(n) => {
                            self.to_local_at += n;
                            // A buffered local side (stdout is) gets what
                            // arrived now, not when its buffer fills.
                            if self.to_local_at == self.to_local.len() && local_w.flush().await.is_err() {
                                self.to_local_at = self.to_local.len();
                            }
                        }
                    }
                }
            }
            if self.receiver.finished() && self.to_local_at == self.to_local.len() && !self.local_shut {
                let _ = local_w.shutdown().await;
                self.local_shut = true;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((budget, held)) = &self.budget {
            budget.give(*held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_read_in_place_is_the_frame_sent_and_is_kept_for_replay() {
        let mut built = Sender::new(1 << 20);
        let mut in_place = Sender::new(1 << 20);
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for payload in [&b"first"[..], &b"second, longer"[..]] {
            built.send_into(payload, &mut expected).unwrap();
            let mut frame = vec![0xAA; HEADER_LEN];
            frame.extend_from_slice(payload);
            in_place.send_framed(&mut frame).unwrap();
            got.extend_from_slice(&frame);
        }
        assert_eq!(got, expected);
        assert_eq!(in_place.unacknowledged(), 19);
        let resent = in_place.resume_from(5).unwrap();
        assert_eq!(
            resent,
            [Frame::Data {
                offset: 5,
                bytes: b"second, longer".to_vec()
            }]
        );
        let mut huge = vec![0; HEADER_LEN + MAX_PAYLOAD + 1];
        assert_eq!(
            in_place.send_framed(&mut huge),
            Err(ResumeError::BadLength {
                kind: KIND_DATA,
                len: MAX_PAYLOAD + 1
            })
        );
        let mut small = Sender::new(4);
        let mut frame = vec![0; HEADER_LEN + 5];
        assert_eq!(small.send_framed(&mut frame), Err(ResumeError::Full(0)));
    }

    #[test]
    fn frames_round_trip_and_wait_for_their_whole() {
        let frames = [
            Frame::Data {
                offset: 7,
                bytes: b"hello".to_vec(),
            },
            Frame::Ack { offset: 1 << 40 },
            Frame::End { offset: 12 },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut at = 0;
        for f in &frames {
            // Every prefix of a frame is "not yet".
            let len = HEADER_LEN + if matches!(f, Frame::Data { .. }) { 5 } else { 0 };
            for cut in 0..len {
                assert_eq!(Frame::decode(&buf[at..at + cut]), Ok(None));
            }
            let (decoded, used) = Frame::decode(&buf[at..]).unwrap().unwrap();
            assert_eq!(&decoded, f);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn frames_encoded_in_place_are_the_frames_built() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 249) as u8).collect();
        let (mut built, mut in_place) = (Sender::new(1 << 20), Sender::new(1 << 20));
        let mut expected = Vec::new();
        for frame in built.send(&data).unwrap() {
            frame.encode(&mut expected);
        }
        let mut got = Vec::new();
        in_place.send_into(&data, &mut got).unwrap();
        assert_eq!(got, expected);
        assert_eq!(in_place.unacknowledged(), built.unacknowledged());
        // And decoded in place, they are the same frames.
        let (frame, used) = FrameRef::decode(&got).unwrap().unwrap();
        assert_eq!(used, HEADER_LEN + MAX_PAYLOAD);
        assert_eq!(frame.to_frame(), built.resume_from(0).unwrap()[0]);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut bad = vec![9u8];
        bad.extend_from_slice(&[0; 12]);
        assert_eq!(Frame::decode(&bad), Err(ResumeError::UnknownKind(9)));
        let mut ack_with_payload = vec![KIND_ACK];
        ack_with_payload.extend_from_slice(&0u64.to_be_bytes());
        ack_with_payload.extend_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            Frame::decode(&ack_with_payload),
            Err(ResumeError::BadLength { .. })
        ));
        let mut huge = vec![KIND_DATA];
        huge.extend_from_slice(&0u64.to_be_bytes());
        huge.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_be_bytes());
        assert!(matches!(Frame::decode(&huge), Err(ResumeError::BadLength { .. })));
    }

    #[test]
    fn a_gap_an_overflow_and_a_too_old_resume_are_errors_not_corruption() {
        let mut receiver = Receiver::default();
        let gap = Frame::Data {
            offset: 3,
            bytes: b"x".to_vec(),
        };
        assert_eq!(
            receiver.accept(&gap),
            Err(ResumeError::Gap { have: 0, starts: 3 })
        );
        let mut sender = Sender::new(8);
        sender.send(b"12345678").unwrap();
        assert_eq!(sender.send(b"9"), Err(ResumeError::Full(8)));
        sender.acknowledge(4).unwrap();
        sender.send(b"9").unwrap();
        assert_eq!(
            sender.resume_from(2),
            Err(ResumeError::Unrecoverable { peer: 2, oldest: 4 })
        );
        assert_eq!(
            sender.acknowledge(100),
            Err(ResumeError::Beyond { peer: 100, sent: 9 })
        );
        sender.end();
        assert_eq!(sender.send(b"late"), Err(ResumeError::AfterEnd(9)));
    }

    #[test]
    fn a_resend_that_overlaps_gives_only_the_new_bytes() {
        let mut receiver = Receiver::default();
        let first = Frame::Data {
            offset: 0,
            bytes: b"hello".to_vec(),
        };
        assert_eq!(receiver.accept(&first).unwrap(), b"hello");
        let again = Frame::Data {
            offset: 2,
            bytes: b"llo world".to_vec(),
        };
        assert_eq!(receiver.accept(&again).unwrap(), b" world");
        assert_eq!(receiver.accept(&first).unwrap(), b"");
        assert_eq!(receiver.received(), 11);
        assert_eq!(receiver.accept(&Frame::End { offset: 11 }).unwrap(), b"");
        assert!(receiver.finished());
        assert_eq!(
            receiver.accept(&Frame::Data {
                offset: 11,
                bytes: b"!".to_vec()
            }),
            Err(ResumeError::AfterEnd(11))
        );
    }

    /// Sends `data` in `sends` pieces over a link that loses whatever is in
    /// flight at the `drops`; after each drop both sides resume from what
    /// the receiver has. The receiver must end with exactly `data`.
    fn deliver(data: &[u8], sends: &[usize], drops: &[usize], ack_every: usize) -> Vec<u8> {
        let mut sender = Sender::new(data.len().max(1));
        let mut receiver = Receiver::default();
        let mut out = Vec::new();
        let mut wire: Vec<Frame> = Vec::new();
        let mut at = 0;
        let mut step = 0;
        let mut pieces = sends.iter().copied().cycle();
        while at < data.len() {
            let n = pieces.next().unwrap_or(1).clamp(1, data.len() - at);
            wire.extend(sender.send(&data[at..at + n]).unwrap());
            at += n;
            step += 1;
            if drops.contains(&step) {
                // The connection breaks: what was in flight is lost; a
                // part of it may have arrived.
                let arrived = step % (wire.len() + 1);
                for frame in wire.drain(..).take(arrived) {
                    out.extend_from_slice(receiver.accept(&frame).unwrap());
                }
                wire = sender.resume_from(receiver.received()).unwrap();
            }
            if step % ack_every == 0 {
                for frame in wire.drain(..) {
                    out.extend_from_slice(receiver.accept(&frame).unwrap());
                }
                sender.acknowledge(receiver.received()).unwrap();
            }
        }
        wire.push(sender.end());
        for frame in wire.drain(..) {
            out.extend_from_slice(receiver.accept(&frame).unwrap());
        }
        assert!(receiver.finished());
        out
    }

    #[test]
    fn a_stream_broken_and_resumed_arrives_whole() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(deliver(&data, &[70_000, 3, 1], &[2, 5, 6], 4), data);
    }

    /// A transport that breaks after `budget` bytes either way: writes fail
    /// and reads end, as a dropped connection does.
    struct Breaking<T> {
        inner: T,
        budget: usize,
        used: usize,
    }

    impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Breaking<T> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.used >= self.budget {
                return std::task::Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
            self.used += buf.filled().len() - before;
            result
        }
    }

    impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Breaking<T> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            data: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.used >= self.budget {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let room = (self.budget - self.used).min(data.len());
            let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, &data[..room]);
            if let std::task::Poll::Ready(Ok(n)) = &result {
                self.used += n;
            }
            result
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// An application on one end: writes `data`, half-closes, reads all.
    async fn app(mut io: tokio::io::DuplexStream, data: Vec<u8>) -> Vec<u8> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut r, mut w) = tokio::io::split(&mut io);
        let write = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        tokio::join!(write, read).1
    }

    #[tokio::test]
    async fn both_directions_survive_transports_that_break_again_and_again() {
        let to_b: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let to_a: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
        let (a_app, mut a_local) = tokio::io::duplex(32 * 1024);
        let (b_app, mut b_local) = tokio::io::duplex(32 * 1024);
        let a_task = tokio::spawn(app(a_app, to_b.clone()));
        let b_task = tokio::spawn(app(b_app, to_a.clone()));
        let (mut a, mut b) = (
            Session::new(DEFAULT_REPLAY_BYTES),
            Session::new(DEFAULT_REPLAY_BYTES),
        );
        let mut breaks = 0;
        for round in 0.. {
            // Budgets at odd sizes cut frames at every kind of place.
            let budget = if round < 12 {
                50_000 + round * 37_113
            } else {
                usize::MAX
            };
            let (ta, tb) = tokio::io::duplex(16 * 1024);
            let wrap = |inner| Breaking {
                inner,
                budget,
                used: 0,
            };
            let (ra, rb) = tokio::join!(a.pump(&mut a_local, wrap(ta)), b.pump(&mut b_local, wrap(tb)));
            match (ra.unwrap(), rb.unwrap()) {
                (Pumped::Done, Pumped::Done) => break,
                _ => {
                    breaks += 1;
                    let (a_has, b_has) = (a.received(), b.received());
                    a.resume(b_has).unwrap();
                    b.resume(a_has).unwrap();
                }
            }
        }
        assert!(breaks >= 5, "the transport broke only {breaks} times");
        assert_eq!(b_task.await.unwrap(), to_b, "A to B, exactly once, in order");
        assert_eq!(a_task.await.unwrap(), to_a, "B to A, exactly once, in order");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transport_that_goes_silent_is_broken_after_the_liveness_time() {
        use tokio::io::AsyncWriteExt as _;
        let (mut app, mut local) = tokio::io::duplex(1024);
        app.write_all(b"waiting for an ack").await.unwrap();
        // The far end is held open but never answers: no FIN, no error.
        let (transport, _silent_peer) = tokio::io::duplex(1 << 20);
        let mut session = Session::new(DEFAULT_REPLAY_BYTES);
        let started = tokio::time::Instant::now();
        let pumped = session
            .pump_with(&mut local, transport, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(pumped, Pumped::Broken);
        let waited = started.elapsed();
        assert!(
            waited >= std::time::Duration::from_secs(5) && waited < std::time::Duration::from_secs(6),
            "{waited:?}"
        );
        // Nothing is lost: the bytes wait in the replay buffer for a resume.
        assert_eq!(session.sender.unacknowledged(), 18);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_bounds_the_replay_bytes_of_all_sessions() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let second = std::time::Duration::from_secs(1);
        let hour = std::time::Duration::from_secs(3600);
        let budget = Budget::new(2 * READ_CHUNK);
        // A's peer never acks: what A reads stays in its replay buffer.
        let (mut a_app, mut a_local) = tokio::io::duplex(1 << 20);
        a_app.write_all(&vec![1u8; 300_000]).await.unwrap();
        let (a_transport, _a_peer) = tokio::io::duplex(1 << 20);
        let a_budget = budget.clone();
        let a = tokio::spawn(async move {
            let mut session = Session::with_budget(DEFAULT_REPLAY_BYTES, a_budget);
            session.pump_with(&mut a_local, a_transport, hour).await
        });
        tokio::time::sleep(second).await;
        assert_eq!(budget.used(), 2 * READ_CHUNK, "A holds the whole budget, no more");
        // B cannot read its local side while A holds the budget…
        let (mut b_app, mut b_local) = tokio::io::duplex(1024);
        b_app.write_all(b"ten bytes!").await.unwrap();
        let (b_transport, mut b_peer) = tokio::io::duplex(1 << 20);
        let b_budget = budget.clone();
        let _b = tokio::spawn(async move {
            let mut session = Session::with_budget(DEFAULT_REPLAY_BYTES, b_budget);
            session.pump_with(&mut b_local, b_transport, hour).await
        });
        let mut frame = vec![0u8; HEADER_LEN + 10];
        assert!(
            tokio::time::timeout(second, b_peer.read_exact(&mut frame))
                .await
                .is_err(),
            "B sent data while the budget was full"
        );
        // …and can once A's session is gone.
        a.abort();
        let _ = a.await;
        tokio::time::timeout(second, b_peer.read_exact(&mut frame))
            .await
            .expect("B reads once A's budget is given back")
            .unwrap();
        assert_eq!(&frame[HEADER_LEN..], b"ten bytes!");
        assert_eq!(budget.used(), 10 + READ_CHUNK, "B holds its bytes and one read");
    }

    proptest::proptest! {
        #[test]
        fn random_splits_drops_and_resumes_deliver_exactly_the_stream(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..5000),
            sends in proptest::collection::vec(1usize..700, 1..10),
            drops in proptest::collection::vec(1usize..40, 0..8),
            ack_every in 1usize..6,
        ) {
            proptest::prop_assert_eq!(deliver(&data, &sends, &drops, ack_every), data);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Frame::decode(&bytes);
        }
    }
}
