//! Resumable streams: the frame format and the bookkeeping that lets a
//! byte stream outlive the connection carrying it (issue "sessions that
//! survive"; used by `kubectl hatch` and the sidecar).
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
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf as _, Bytes};

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
    Data { offset: u64, bytes: Bytes },
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
    /// Its kind byte, offset and payload.
    fn parts(&self) -> (u8, u64, &[u8]) {
        match self {
            Frame::Data { offset, bytes } => (KIND_DATA, *offset, bytes),
            Frame::Ack { offset } => (KIND_ACK, *offset, &[]),
            Frame::End { offset } => (KIND_END, *offset, &[]),
        }
    }

    /// Appends the frame's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, offset, payload) = self.parts();
        encode_header(kind, offset, payload.len(), out);
        out.extend_from_slice(payload);
    }

    /// Queues the frame's encoding on `out` without copying its payload.
    fn queue(self, out: &mut Queue) {
        let (kind, offset, payload) = self.parts();
        let mut header = Vec::with_capacity(HEADER_LEN);
        encode_header(kind, offset, payload.len(), &mut header);
        out.push(header.into());
        if let Frame::Data { bytes, .. } = self {
            out.push(bytes);
        }
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
                bytes: Bytes::copy_from_slice(bytes),
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
    /// Unacknowledged bytes, from `sent - replay.len` on: the payloads of
    /// the frames sent, shared with them (not copied).
    replay: Queue,
    /// The replay buffer's bound.
    pub limit: usize,
}

impl Sender {
    /// A sender whose replay buffer holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            sent: 0,
            end: None,
            replay: Queue::default(),
            limit,
        }
    }

    /// The offset of the oldest byte still kept.
    pub fn oldest(&self) -> u64 {
        self.sent - self.replay.len as u64
    }

    /// Bytes sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.replay.len
    }

    fn check_room(&self, payload: usize) -> Result<(), ResumeError> {
        if let Some(end) = self.end {
            return Err(ResumeError::AfterEnd(end));
        }
        if self.replay.len + payload > self.limit {
            return Err(ResumeError::Full(self.replay.len));
        }
        Ok(())
    }

    fn keep(&mut self, payload: Bytes) {
        self.sent += payload.len() as u64;
        self.replay.push(payload);
    }

    /// Frames carrying `bytes` (kept until acknowledged, shared, not
    /// copied), at most [`MAX_PAYLOAD`] each. Refused when the replay
    /// buffer would overflow: the caller waits for an ack.
    pub fn send(&mut self, bytes: Bytes) -> Result<Vec<Frame>, ResumeError> {
        self.check_room(bytes.len())?;
        let mut frames = Vec::with_capacity(bytes.len().div_ceil(MAX_PAYLOAD));
        data_frames(self.sent, bytes.clone(), &mut frames);
        self.keep(bytes);
        Ok(frames)
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
        self.replay.advance(offset.saturating_sub(self.oldest()) as usize);
        Ok(())
    }

    /// After a reconnect: the frames that bring a peer holding `peer`
    /// bytes up to date (and the end, if the stream ended). Their payloads
    /// share the replay buffer's.
    pub fn resume_from(&mut self, peer: u64) -> Result<Vec<Frame>, ResumeError> {
        let oldest = self.oldest();
        if peer < oldest {
            return Err(ResumeError::Unrecoverable { peer, oldest });
        }
        self.acknowledge(peer)?;
        let mut frames = Vec::new();
        let mut offset = peer;
        for kept in &self.replay.bufs {
            offset = data_frames(offset, kept.clone(), &mut frames);
        }
        if let Some(end) = self.end {
            frames.push(Frame::End { offset: end });
        }
        Ok(frames)
    }
}

/// Data frames of at most [`MAX_PAYLOAD`] carrying `bytes` from `offset`
/// on (sharing them); the offset after them.
fn data_frames(mut offset: u64, mut bytes: Bytes, frames: &mut Vec<Frame>) -> u64 {
    while !bytes.is_empty() {
        let chunk = bytes.split_to(bytes.len().min(MAX_PAYLOAD));
        let len = chunk.len() as u64;
        frames.push(Frame::Data { offset, bytes: chunk });
        offset += len;
    }
    offset
}

/// Bytes waiting to be written, in the buffers they arrived in: written
/// with one vectored write where the writer takes one, never copied
/// into one buffer.
#[derive(Debug, Default)]
struct Queue {
    bufs: VecDeque<Bytes>,
    /// Bytes in `bufs`.
    len: usize,
}

/// Buffers handed to one vectored write.
const QUEUE_SLICES: usize = 32;

impl Queue {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.bufs.push_back(bytes);
        }
    }

    fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    fn clear(&mut self) {
        self.bufs.clear();
        self.len = 0;
    }

    /// The first buffers as slices for a vectored write.
    fn slices(&self) -> ([IoSlice<'_>; QUEUE_SLICES], usize) {
        let mut slices = [IoSlice::new(&[]); QUEUE_SLICES];
        let mut n = 0;
        for (slot, buf) in slices.iter_mut().zip(&self.bufs) {
            *slot = IoSlice::new(buf);
            n += 1;
        }
        (slices, n)
    }

    /// Drops `n` bytes (written, or acknowledged) from the front.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.bufs.front_mut().expect("no more written than queued");
            if front.len() <= n {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Writes the front of the queue once.
    async fn write_some<W>(&self, writer: &mut W) -> std::io::Result<usize>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt as _;
        let (slices, n) = self.slices();
        writer.write_vectored(&slices[..n]).await
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
                // Saturating: the offset is the peer's, up to u64::MAX.
                if let Some(end) = self.ended
                    && offset.saturating_add(bytes.len() as u64) > end
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

/// Buffers for local reads, recycled: a read's bytes go out and wait in
/// the replay buffer as they were read (no copy), and once acknowledged
/// their buffer comes back here; transport reads likewise, once the local
/// side took their payloads. Fresh buffers would cost a page fault per 4
/// KiB on first touch, more than the copy saved.
///
/// A block coming back is always kept, and a new one is made only when
/// every block is lent out, so a pool never holds more blocks than were
/// lent out at once: during a bulk transfer every block is recycled
/// however the queues' depth swings (a block freed and allocated again
/// costs a fresh mapping: 64 page faults, each page zeroed, and an
/// `munmap` — in the sidecar, whose allocator maps every block apart,
/// that was an eighth of its CPU on the cluster, 1,000 mappings a
/// second, when the pool kept no more free blocks than lent ones). Once
/// the stream has been quiet for [`QUIET`], the free blocks go
/// ([`Blocks::release_free`]); when the pump returns (the transport
/// broke: a detached session) the pool goes with it.
#[derive(Debug, Default)]
struct Blocks {
    /// Blocks back from being lent out as [`Bytes`] (in the replay
    /// buffer, or waiting for the local side).
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// A read this small is copied out and its block reused at once: a block
/// holds at least this much while it is lent out, so the bytes kept pin
/// at most `READ_CHUNK_BULK / COPY_BELOW` (4) times their size (a stream
/// of small reads would otherwise pin a 256 KiB block per few bytes until
/// the ack).
const COPY_BELOW: usize = READ_CHUNK;

/// A session this long without a read lets its free blocks go.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

impl Blocks {
    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Vec<u8> {
        self.free()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK_BULK))
    }

    /// Whether blocks wait in the pool.
    fn has_free(&self) -> bool {
        !self.free().is_empty()
    }

    /// Gives the free blocks back to the allocator (a quiet session).
    fn release_free(&self) {
        // Taken out under the lock, unmapped after it is let go.
        let released = std::mem::take(&mut *self.free());
        drop(released);
    }

    /// `block`'s bytes as [`Bytes`] that give the buffer back when the
    /// last of them is dropped.
    fn share(self: &Arc<Self>, block: Vec<u8>) -> Bytes {
        Bytes::from_owner(Block {
            bytes: block,
            home: Arc::downgrade(self),
        })
    }
}

/// A buffer lent out as [`Bytes`].
struct Block {
    bytes: Vec<u8>,
    home: std::sync::Weak<Blocks>,
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let mut block = std::mem::take(&mut self.bytes);
            block.clear();
            home.free().push(block);
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
    /// Encoded frames for the current transport.
    outgoing: Queue,
    /// Bytes received for the local side (payloads of the frames read,
    /// shared with the transport's read buffer).
    to_local: Queue,
    /// The local side ended its stream (EOF read).
    local_ended: bool,
    /// The local side's writing half was shut (the peer's end arrived).
    local_shut: bool,
    /// What the last ack sent named.
    acked: u64,
    /// How much the next local read takes.
    read_size: usize,
    /// The shared bound this session's replay bytes count against, and
    /// how much of it this session holds.
    budget: Option<(Arc<Budget>, usize)>,
}

/// How long a transport may stay silent while this side waits on it.
pub const DEFAULT_LIVENESS: std::time::Duration = std::time::Duration::from_secs(20);

/// How much is read from the local side at once: a read that fills the
/// smaller size makes the next one the larger (a bulk transfer pays for
/// fewer reads), one that does not goes back (an idle session holds only
/// the smaller one of the shared budget).
const READ_CHUNK: usize = 64 * 1024;
const READ_CHUNK_BULK: usize = 4 * READ_CHUNK;
/// How often a session blocked on the shared budget looks again.
const BUDGET_RETRY: std::time::Duration = std::time::Duration::from_millis(20);
/// An ack goes out once this much arrived since the last one, or
/// [`ACK_DELAY`] after the first byte it would name: a bulk stream gets
/// one ack per this many bytes (each one is a record through every hop),
/// a trickle one per delay.
const ACK_EVERY: u64 = 256 * 1024;
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// Local bytes read ahead of the transport: no more is read while this
/// much waits to be written (the bytes in flight stay few and hot in the
/// cache; the rest waits in the local socket, as a plain copy's would).
const OUTGOING_HIGH: usize = READ_CHUNK_BULK;
/// Bytes received ahead of the local side: the transport is not read
/// while this much waits for a slow local reader (back-pressure reaches
/// the sender instead of memory growing). Acks keep going out then, so
/// the peer does not take the pause for a dead connection.
const TO_LOCAL_HIGH: usize = 1 << 20;

impl Session {
    /// A session whose replay buffer per direction holds `replay_limit`
    /// bytes (at least one read's worth, 64 KiB).
    pub fn new(replay_limit: usize) -> Self {
        Self {
            sender: Sender::new(replay_limit.max(READ_CHUNK_BULK)),
            receiver: Receiver::default(),
            outgoing: Queue::default(),
            to_local: Queue::default(),
            local_ended: false,
            local_shut: false,
            acked: 0,
            read_size: READ_CHUNK,
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
    /// so; a bulk read becomes a smaller one when only that fits); gives
    /// back what acks freed beyond that (all but the unacknowledged bytes
    /// once the local side ended).
    fn budget_allows_read(&mut self) -> bool {
        if self.budget_allows(self.read_size) {
            return true;
        }
        if self.read_size > READ_CHUNK {
            self.read_size = READ_CHUNK;
            return self.budget_allows(READ_CHUNK);
        }
        false
    }

    fn budget_allows(&mut self, read_size: usize) -> bool {
        let next_read = if self.local_ended { 0 } else { read_size };
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
        for frame in self.sender.resume_from(peer_received)? {
            frame.queue(&mut self.outgoing);
        }
        self.queue_ack();
        Ok(())
    }

    fn queue_ack(&mut self) {
        self.acked = self.receiver.received();
        Frame::Ack { offset: self.acked }.queue(&mut self.outgoing);
    }

    fn done(&self) -> bool {
        self.local_ended
            && self.sender.unacknowledged() == 0
            && self.outgoing.is_empty()
            && self.receiver.finished()
            && self.to_local.is_empty()
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
        // A local read lands in a block that is sent as it is: its frames'
        // payloads and the replay buffer share it.
        let blocks = Arc::new(Blocks::default());
        let mut reading = blocks.take();
        // Transport reads land in blocks from the same pool: the frames'
        // payloads wait for the local side as slices of the block (no
        // copy), a partial frame at its end moves to the next block.
        let mut incoming = blocks.take();
        let mut payloads: Vec<std::ops::Range<usize>> = Vec::new();
        // Heard from the peer (or had nothing waiting on it) at this time.
        // The timer is reset only when it fires early, not per read.
        let mut last_heard = tokio::time::Instant::now();
        let liveness_check = tokio::time::sleep(liveness);
        tokio::pin!(liveness_check);
        let ack_timer = tokio::time::sleep(ACK_DELAY);
        tokio::pin!(ack_timer);
        let mut ack_armed = false;
        let mut was_waiting = false;
        // While the transport is not read (a slow local side), acks still
        // go out now and then: the peer hears this side is alive.
        let keepalive = tokio::time::sleep(liveness);
        tokio::pin!(keepalive);
        let mut paused = false;
        // A transport may keep part of what it accepted (TLS keeps whole
        // records, `Framed` a frame) until it is written to or flushed
        // again: once nothing more waits to be written, it is flushed, or
        // the last frames (an ack, the end) would sit there until the
        // liveness time called the connection broken.
        let mut unflushed = false;
        // The last read from either side: a pool quiet for QUIET lets its
        // free blocks go.
        let mut last_read = tokio::time::Instant::now();
        let quiet_check = tokio::time::sleep(QUIET);
        tokio::pin!(quiet_check);
        loop {
            if self.done() {
                let _ = transport_w.shutdown().await;
                return Ok(Pumped::Done);
            }
            if self.sender.unacknowledged() + self.read_size > self.sender.limit {
                self.read_size = READ_CHUNK;
            }
            let room = self.sender.unacknowledged() + self.read_size <= self.sender.limit
                && self.outgoing.len < OUTGOING_HIGH;
            let budget_ok = self.budget_allows_read();
            let can_read_local = !self.local_ended && room && budget_ok;
            let blocked_on_budget = !self.local_ended && room && !budget_ok;
            let reading_transport = self.to_local.len < TO_LOCAL_HIGH;
            let waiting_on_peer =
                reading_transport && (self.sender.unacknowledged() > 0 || !self.outgoing.is_empty());
            if waiting_on_peer && !was_waiting {
                // A quiet session is not an overdue one: the clock starts
                // when something begins to wait on the peer (and this side
                // listens for it).
                last_heard = tokio::time::Instant::now();
            }
            was_waiting = waiting_on_peer;
            if !reading_transport && !paused {
                keepalive
                    .as_mut()
                    .reset(tokio::time::Instant::now() + liveness / 4);
            }
            paused = !reading_transport;
            let read_size = self.read_size;
            tokio::select! {
                () = &mut liveness_check, if waiting_on_peer => {
                    let due = last_heard + liveness;
                    if tokio::time::Instant::now() >= due {
                        return Ok(Pumped::Broken);
                    }
                    liveness_check.as_mut().reset(due);
                }
                () = &mut keepalive, if paused => {
                    self.queue_ack();
                    keepalive.as_mut().reset(tokio::time::Instant::now() + liveness / 4);
                }
                () = &mut ack_timer, if ack_armed => {
                    ack_armed = false;
                    if self.receiver.received() > self.acked {
                        self.queue_ack();
                    }
                }
                () = &mut quiet_check, if blocks.has_free() => {
                    let due = last_read + QUIET;
                    if tokio::time::Instant::now() >= due {
                        blocks.release_free();
                    } else {
                        quiet_check.as_mut().reset(due);
                    }
                }
                // Other sessions' acks free the shared budget: look again.
                _ = tokio::time::sleep(BUDGET_RETRY), if blocked_on_budget => {}
                read = async { local_r.read_buf(&mut (&mut reading).limit(read_size)).await }, if can_read_local => {
                    last_read = tokio::time::Instant::now();
                    match read {
                        Ok(0) | Err(_) => {
                            self.local_ended = true;
                            self.sender.end().queue(&mut self.outgoing);
                        }
                        Ok(n) => {
                            self.read_size = if n == read_size { READ_CHUNK_BULK } else { READ_CHUNK };
                            let read = if n < COPY_BELOW {
                                let read = Bytes::copy_from_slice(&reading);
                                reading.clear();
                                read
                            } else {
                                blocks.share(std::mem::replace(&mut reading, blocks.take()))
                            };
                            for frame in self.sender.send(read)? {
                                frame.queue(&mut self.outgoing);
                            }
                        }
                    }
                }
                // A block never grows: what is left after a partial frame
                // (shorter than a whole one) always leaves room.
                read = transport_r.read_buf(&mut incoming), if reading_transport => {
                    match read {
                        Ok(0) | Err(_) => return Ok(Pumped::Broken),
                        Ok(_) => {}
                    }
                    last_heard = tokio::time::Instant::now();
                    last_read = last_heard;
                    let mut used = 0;
                    let mut new_bytes = 0;
                    payloads.clear();
                    while let Some((frame, len)) = FrameRef::decode(&incoming[used..])? {
                        match frame {
                            FrameRef::Ack { offset } => self.sender.acknowledge(offset)?,
                            _ => {
                                let new = self.receiver.accept_ref(frame)?.len();
                                if new > 0 {
                                    payloads.push(used + len - new..used + len);
                                    new_bytes += new;
                                }
                            }
                        }
                        used += len;
                    }
                    if new_bytes >= COPY_BELOW {
                        let mut next = blocks.take();
                        next.extend_from_slice(&incoming[used..]);
                        let block = blocks.share(std::mem::replace(&mut incoming, next));
                        for payload in payloads.drain(..) {
                            self.to_local.push(block.slice(payload));
                        }
                    } else {
                        // A few bytes (keystrokes, acks) are copied out and
                        // the block kept (see COPY_BELOW).
                        for payload in payloads.drain(..) {
                            self.to_local.push(Bytes::copy_from_slice(&incoming[payload]));
                        }
                        incoming.drain(..used);
                    }
                    let unacked = self.receiver.received() - self.acked;
                    if unacked >= ACK_EVERY || self.receiver.finished() && unacked > 0 {
                        self.queue_ack();
                    } else if unacked > 0 && !ack_armed {
                        ack_timer.as_mut().reset(last_heard + ACK_DELAY);
                        ack_armed = true;
                    }
                }
                written = async {
                    if self.outgoing.is_empty() {
                        transport_w.flush().await.map(|()| None)
                    } else {
                        self.outgoing.write_some(&mut transport_w).await.map(Some)
                    }
                }, if !self.outgoing.is_empty() || unflushed => {
                    match written {
                        Ok(Some(0)) | Err(_) => return Ok(Pumped::Broken),
                        Ok(Some(n)) => {
                            self.outgoing.advance(n);
                            unflushed = true;
                        }
                        Ok(None) => unflushed = false,
                    }
                }
                written = self.to_local.write_some(&mut local_w), if !self.to_local.is_empty() => {
                    // A local side that cannot take more has gone: what it
                    // would have read is dropped, as a closed socket drops it.
                    match written {
                        Ok(0) | Err(_) => self.to_local.clear(),
                        Ok(n) => {
                            self.to_local.advance(n);
                            // A buffered local side (stdout is) gets what
                            // arrived now, not when its buffer fills.
                            if self.to_local.is_empty() && local_w.flush().await.is_err() {
                                self.to_local.clear();
                            }
                        }
                    }
                }
            }
            if self.receiver.finished() && self.to_local.is_empty() && !self.local_shut {
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
    fn bytes_sent_are_split_into_frames_and_kept_for_replay_without_a_copy() {
        let data = Bytes::from((0..150_000u32).map(|i| (i % 249) as u8).collect::<Vec<u8>>());
        let mut sender = Sender::new(1 << 20);
        sender.send(Bytes::from_static(b"first")).unwrap();
        let frames = sender.send(data.clone()).unwrap();
        let sizes: Vec<(u64, usize)> = frames
            .iter()
            .map(|f| match f {
                Frame::Data { offset, bytes } => (*offset, bytes.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sizes,
            [
                (5, MAX_PAYLOAD),
                (5 + MAX_PAYLOAD as u64, MAX_PAYLOAD),
                (5 + 2 * MAX_PAYLOAD as u64, 150_000 - 2 * MAX_PAYLOAD)
            ]
        );
        // The frames' payloads are the bytes handed in, not copies of them.
        let Frame::Data { bytes, .. } = &frames[1] else {
            unreachable!()
        };
        assert_eq!(bytes.as_ptr(), data[MAX_PAYLOAD..].as_ptr());
        assert_eq!(sender.unacknowledged(), 150_005);
        // An ack inside a kept buffer keeps only its rest.
        sender.acknowledge(7).unwrap();
        assert_eq!(sender.unacknowledged(), 149_998);
        assert_eq!(
            sender.resume_from(5),
            Err(ResumeError::Unrecoverable { peer: 5, oldest: 7 })
        );
        let resent = sender.resume_from(9).unwrap();
        let Frame::Data { offset: 9, bytes } = &resent[0] else {
            panic!("{resent:?}")
        };
        assert_eq!(bytes.as_ptr(), data[4..].as_ptr());
        assert_eq!(
            resent
                .iter()
                .map(|f| match f {
                    Frame::Data { bytes, .. } => bytes.len(),
                    _ => 0,
                })
                .sum::<usize>(),
            149_996
        );
        let mut small = Sender::new(4);
        assert_eq!(
            small.send(Bytes::from_static(b"12345")),
            Err(ResumeError::Full(0))
        );
    }

    #[test]
    fn blocks_come_back_to_the_pool_while_a_stream_flows_and_go_when_released() {
        let blocks = Arc::new(Blocks::default());
        // A burst: six blocks out at once (a deep queue), then all back
        // (it drained): all six stay for the next burst (the pool used to
        // free all but one).
        let lent: Vec<Bytes> = (0..6).map(|_| blocks.share(blocks.take())).collect();
        let addresses: Vec<*const u8> = lent.iter().map(|b| b.as_ptr()).collect();
        drop(lent);
        assert_eq!(blocks.free().len(), 6);
        // The next burst gets the same memory back, not fresh mappings,
        // and never more blocks than were out at once.
        let again: Vec<Bytes> = (0..6).map(|_| blocks.share(blocks.take())).collect();
        assert!(again.iter().all(|b| addresses.contains(&b.as_ptr())));
        assert!(!blocks.has_free());
        drop(again);
        // A quiet session lets them go.
        blocks.release_free();
        assert!(!blocks.has_free());
    }

    #[test]
    fn frames_round_trip_and_wait_for_their_whole() {
        let frames = [
            Frame::Data {
                offset: 7,
                bytes: Bytes::from_static(b"hello"),
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
    fn frames_queued_are_the_frames_encoded() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 249) as u8).collect();
        let mut sender = Sender::new(1 << 20);
        let mut expected = Vec::new();
        let mut queue = Queue::default();
        for frame in sender.send(Bytes::from(data)).unwrap() {
            frame.encode(&mut expected);
            frame.queue(&mut queue);
        }
        sender.end().queue(&mut queue);
        sender.end().encode(&mut expected);
        // Written a few bytes at a time, the queue gives the same bytes.
        let mut got = Vec::new();
        while !queue.is_empty() {
            let (slices, n) = queue.slices();
            let mut take = 1000;
            for slice in &slices[..n] {
                let part = take.min(slice.len());
                got.extend_from_slice(&slice[..part]);
                take -= part;
            }
            queue.advance(1000 - take);
        }
        assert_eq!(got, expected);
        // And decoded in place, they are the same frames.
        let (frame, used) = FrameRef::decode(&got).unwrap().unwrap();
        assert_eq!(used, HEADER_LEN + MAX_PAYLOAD);
        let resent = sender.resume_from(0).unwrap();
        assert!(frame.to_frame() == resent[0], "the first frame differs");
        assert!(
            resent
                .iter()
                .all(|f| !matches!(f, Frame::Data { bytes, .. } if bytes.len() > MAX_PAYLOAD)),
            "a resent frame is over the payload limit"
        );
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
            bytes: Bytes::from_static(b"x"),
        };
        assert_eq!(
            receiver.accept(&gap),
            Err(ResumeError::Gap { have: 0, starts: 3 })
        );
        let mut sender = Sender::new(8);
        sender.send(Bytes::from_static(b"12345678")).unwrap();
        assert_eq!(sender.send(Bytes::from_static(b"9")), Err(ResumeError::Full(8)));
        sender.acknowledge(4).unwrap();
        sender.send(Bytes::from_static(b"9")).unwrap();
        assert_eq!(
            sender.resume_from(2),
            Err(ResumeError::Unrecoverable { peer: 2, oldest: 4 })
        );
        assert_eq!(
            sender.acknowledge(100),
            Err(ResumeError::Beyond { peer: 100, sent: 9 })
        );
        sender.end();
        assert_eq!(
            sender.send(Bytes::from_static(b"late")),
            Err(ResumeError::AfterEnd(9))
        );
    }

    /// Found by the `resume_frames` fuzz target: after an end, a data frame
    /// at an offset near `u64::MAX` overflowed the end check (a panic in a
    /// debug build, a wrapped comparison in a release one).
    #[test]
    fn data_at_the_last_offsets_after_an_end_is_refused_not_an_overflow() {
        let mut receiver = Receiver::default();
        receiver.accept(&Frame::End { offset: 0 }).unwrap();
        let last = Frame::Data {
            offset: u64::MAX,
            bytes: Bytes::from_static(b"abcd"),
        };
        assert_eq!(receiver.accept(&last), Err(ResumeError::AfterEnd(0)));
        assert_eq!(receiver.received(), 0);
    }

    #[test]
    fn a_resend_that_overlaps_gives_only_the_new_bytes() {
        let mut receiver = Receiver::default();
        let first = Frame::Data {
            offset: 0,
            bytes: Bytes::from_static(b"hello"),
        };
        assert_eq!(receiver.accept(&first).unwrap(), b"hello");
        let again = Frame::Data {
            offset: 2,
            bytes: Bytes::from_static(b"llo world"),
        };
        assert_eq!(receiver.accept(&again).unwrap(), b" world");
        assert_eq!(receiver.accept(&first).unwrap(), b"");
        assert_eq!(receiver.received(), 11);
        assert_eq!(receiver.accept(&Frame::End { offset: 11 }).unwrap(), b"");
        assert!(receiver.finished());
        assert_eq!(
            receiver.accept(&Frame::Data {
                offset: 11,
                bytes: Bytes::from_static(b"!")
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
            wire.extend(sender.send(Bytes::copy_from_slice(&data[at..at + n])).unwrap());
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

    /// A transport that keeps what it accepted until written to again or
    /// flushed (as TLS does with a record when the socket is full): the
    /// last frames must not wait there. On paused time a stuck pump would
    /// see the liveness time pass at once and end `Broken`.
    #[tokio::test(start_paused = true)]
    async fn frames_a_transport_buffered_are_flushed_out() {
        let to_b: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (a_app, mut a_local) = tokio::io::duplex(64 * 1024);
        let (b_app, mut b_local) = tokio::io::duplex(64 * 1024);
        let a_task = tokio::spawn(app(a_app, to_b.clone()));
        let b_task = tokio::spawn(app(b_app, Vec::new()));
        let (ta, tb) = tokio::io::duplex(4 * 1024);
        let (ta, tb) = (crate::frames::Framed::new(ta), crate::frames::Framed::new(tb));
        let (mut a, mut b) = (
            Session::new(DEFAULT_REPLAY_BYTES),
            Session::new(DEFAULT_REPLAY_BYTES),
        );
        let (ra, rb) = tokio::join!(a.pump(&mut a_local, ta), b.pump(&mut b_local, tb));
        assert_eq!((ra.unwrap(), rb.unwrap()), (Pumped::Done, Pumped::Done));
        assert_eq!(b_task.await.unwrap(), to_b, "A to B, exactly once, in order");
        assert!(a_task.await.unwrap().is_empty());
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
    async fn a_session_idle_longer_than_the_liveness_time_is_not_called_broken() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let liveness = std::time::Duration::from_secs(20);
        let (mut a_app, mut a_local) = tokio::io::duplex(1024);
        let (mut b_app, mut b_local) = tokio::io::duplex(1024);
        let (ta, tb) = tokio::io::duplex(1 << 16);
        let a = tokio::spawn(async move {
            let mut session = Session::new(DEFAULT_REPLAY_BYTES);
            session.pump_with(&mut a_local, ta, liveness).await
        });
        let b = tokio::spawn(async move {
            let mut session = Session::new(DEFAULT_REPLAY_BYTES);
            session.pump_with(&mut b_local, tb, liveness).await
        });
        let mut got = [0u8; 5];
        for word in [b"hello", b"again", b"third"] {
            a_app.write_all(word).await.unwrap();
            b_app.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, word);
            // Quiet for longer than the liveness time: nothing waits on
            // the peer, so nothing is overdue.
            tokio::time::sleep(3 * liveness).await;
            assert!(
                !a.is_finished() && !b.is_finished(),
                "a quiet session was called broken"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_side_that_does_not_read_holds_the_sender_back_without_a_break() {
        use tokio::io::AsyncWriteExt as _;
        let liveness = std::time::Duration::from_secs(20);
        let (mut a_app, mut a_local) = tokio::io::duplex(1 << 16);
        // B's application never reads.
        let (_b_app, mut b_local) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 16];
            for _ in 0..(32 << 20) / chunk.len() {
                if a_app.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let (ta, tb) = tokio::io::duplex(1 << 16);
        let (mut a, mut b) = (
            Session::new(DEFAULT_REPLAY_BYTES),
            Session::new(DEFAULT_REPLAY_BYTES),
        );
        let pumped = tokio::time::timeout(3 * liveness, async {
            tokio::select! {
                pumped = a.pump_with(&mut a_local, ta, liveness) => pumped,
                pumped = b.pump_with(&mut b_local, tb, liveness) => pumped,
            }
        })
        .await;
        assert!(pumped.is_err(), "a pump ended while its peer was only slow");
        assert!(
            b.to_local.len <= TO_LOCAL_HIGH + READ_CHUNK_BULK,
            "B holds {} bytes for its local side",
            b.to_local.len
        );
        assert!(a.sender.unacknowledged() <= DEFAULT_REPLAY_BYTES);
        assert!(
            a.sent() < 16 << 20,
            "A read {} bytes: nothing held it back",
            a.sent()
        );
        writer.abort();
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
