//! The primary <-> worker channel: one `SOCK_SEQPACKET` socket, an ordered
//! outbound queue with back-pressure, and an inbound decoder that reassembles
//! chunked messages and refuses frames that lie.
//!
//! Where seqpacket sockets do not exist (macOS) the channel is a
//! `SOCK_STREAM` socket carrying the same frames back to back. The writer
//! then sends several frames per system call and resumes after partial
//! writes; an fd always rides on the write that starts its frame, so it
//! reaches the reader with that frame's first bytes. The reader keeps a byte
//! buffer and a queue of received fds, each tagged with the stream offset at
//! which the read that brought it ended, and refuses an fd that no frame
//! starting in that read claimed. The socket type is read from the socket
//! itself, so both ends agree without being told.
//!
//! A [`Channel`] is shared between threads (`&self` everywhere): the writer
//! side is a mutex-protected queue, so the JS thread and the reactor thread can
//! both send without reordering each other's frames. A send never blocks: what
//! the socket cannot take now waits in the queue, and the owner of the poll
//! loop flushes it when the socket is writable again.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::frame::{
    FrameError, Header, Kind, FLAG_CONT, FLAG_MORE, HEADER_LEN, KNOWN_FLAGS, MAX_PACKET,
    MAX_PAYLOAD,
};
use crate::sys;

/// Default ceiling for one reassembled message (1 GiB).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

/// One packet waiting to be written: a header and a slice of a shared payload.
struct Packet {
    header: [u8; HEADER_LEN],
    data: Arc<[u8]>,
    start: usize,
    end: usize,
    fd: Option<PassFd>,
}

/// An fd riding on a packet: ours to close after sending, or shared with a
/// caller that keeps its own reference (a connection held until acknowledged).
enum PassFd {
    Owned(#[allow(dead_code)] OwnedFd),
    Shared(Arc<OwnedFd>),
}

impl PassFd {
    fn raw(&self) -> RawFd {
        match self {
            PassFd::Owned(f) => f.as_raw_fd(),
            PassFd::Shared(f) => f.as_raw_fd(),
        }
    }
}

impl Packet {
    fn len(&self) -> usize {
        HEADER_LEN + self.end - self.start
    }
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Packet>,
    bytes: usize,
    /// Stream mode: bytes of the front packet already written.
    sent: usize,
    closed: bool,
}

impl Outbox {
    /// Refuses further sends and drops what waits (and the fds in it).
    fn close(&mut self) {
        self.closed = true;
        self.queue.clear();
        self.bytes = 0;
        self.sent = 0;
    }
}

/// Largest message payload copied into one buffer for `send(2)` rather than
/// gathered by `sendmsg(2)` (see [`Channel::send_message_from`]).
const SMALL_MESSAGE: usize = 2048;

/// Most packets gathered into one write on a stream channel.
const MAX_GATHER: usize = 64;
/// Most bytes gathered into one write on a stream channel.
const MAX_GATHER_BYTES: usize = 256 * 1024;

/// Whether everything handed to the channel has reached the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// The queue is empty.
    Done,
    /// Packets wait for the socket to become writable (poll for `POLLOUT`).
    Pending,
}

/// The sending and receiving ends of one channel socket.
pub struct Channel {
    fd: OwnedFd,
    /// A `SOCK_STREAM` socket (framing done here) rather than seqpacket.
    stream: bool,
    out: Mutex<Outbox>,
    next_message: AtomicU64,
    /// Woken when output starts waiting for the socket (see [`Channel::set_waker`]).
    waker: std::sync::OnceLock<Arc<sys::Waker>>,
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Channel {
    /// Wraps a connected `SOCK_SEQPACKET` or `SOCK_STREAM` socket and makes
    /// it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        sys::set_nonblocking(fd.as_raw_fd(), true)?;
        sys::no_sigpipe(fd.as_raw_fd())?;
        let stream = sys::is_stream(fd.as_raw_fd())?;
        if stream && cfg!(not(target_os = "linux")) {
            sys::grow_buffers(fd.as_raw_fd(), 256 * 1024);
        }
        Ok(Channel {
            stream,
            fd,
            out: Mutex::new(Outbox::default()),
            next_message: AtomicU64::new(1),
            waker: std::sync::OnceLock::new(),
        })
    }

    /// A connected pair: `(ours, theirs)`. `theirs` stays blocking and
    /// close-on-exec, ready to be handed to a child. Seqpacket on Linux, a
    /// stream where [`sys::portable`] is on.
    pub fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (a, b) = sys::channel_pair()?;
        Ok((Channel::new(a)?, b))
    }

    /// Whether this is a stream channel.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Asks to be woken (once per transition) when a send from any thread
    /// leaves output waiting for the socket, so that a level-triggered poll
    /// loop can start watching for writability. Set once; later calls are ignored.
    pub fn set_waker(&self, waker: Arc<sys::Waker>) {
        let _ = self.waker.set(waker);
    }

    /// Gives the socket back (queued output is dropped).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Bytes queued and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.out.lock().bytes
    }

    /// Marks the channel closed: later sends fail with `NotConnected` and the
    /// queue (and any fds in it) is dropped.
    pub fn close_output(&self) {
        self.out.lock().close();
    }

    /// Sends one control frame (payload up to [`MAX_PAYLOAD`]) with an optional fd.
    pub fn send_frame(
        &self,
        kind: Kind,
        flags: u8,
        id: u64,
        payload: &[u8],
        fd: Option<OwnedFd>,
    ) -> io::Result<Flush> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "control frame payload too large",
            ));
        }
        // Refuse here what the receiver would refuse (and close the channel for).
        if flags & !KNOWN_FLAGS != 0 || flags & (FLAG_MORE | FLAG_CONT) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame flags unknown or reserved for message chunks",
            ));
        }
        let (min_fds, max_fds) = kind.fd_range();
        let nfds = usize::from(fd.is_some());
        if nfds < min_fds || nfds > max_fds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {kind:?} frame carries {min_fds}..={max_fds} fds, not {nfds}"),
            ));
        }
        let data: Arc<[u8]> = Arc::from(payload);
        let end = data.len();
        self.enqueue(std::iter::once(make_packet(
            kind,
            flags,
            id,
            data,
            0,
            end,
            fd.map(PassFd::Owned),
        )))
    }

    /// Sends a connection to the worker: a [`Kind::Conn`] frame whose payload is
    /// the listener id. The caller keeps its own reference to the fd (the
    /// primary holds every connection until the worker acknowledges it).
    pub fn send_conn(&self, conn_id: u64, listener: u32, fd: Arc<OwnedFd>) -> io::Result<Flush> {
        let data: Arc<[u8]> = Arc::from(&listener.to_le_bytes()[..]);
        self.enqueue(std::iter::once(make_packet(
            Kind::Conn,
            0,
            conn_id,
            data,
            0,
            4,
            Some(PassFd::Shared(fd)),
        )))
    }

    /// Shuts the socket down both ways: the peer sees end of file at once,
    /// queued output is dropped, and later sends fail. The fd itself stays
    /// open until the last owner drops the channel.
    pub fn shutdown(&self) {
        self.close_output();
        // SAFETY: shutdown(2) on an fd we own; errors (already shut) are harmless.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Sends a user message of any size, chunked into packets of at most
    /// [`MAX_PAYLOAD`] bytes. All chunks are queued together, so messages from
    /// several threads never interleave. The fd, if any, rides on the first chunk.
    pub fn send_message(
        &self,
        flags: u8,
        payload: Vec<u8>,
        fd: Option<OwnedFd>,
    ) -> io::Result<Flush> {
        self.send_chunked(Kind::Message, flags, payload, fd)
    }

    /// [`Channel::send_message`] from a borrowed payload. On a seqpacket
    /// channel with nothing queued, a message that fits one packet is written
    /// straight from `payload` (no copy, no allocation: the usual case of a
    /// lone `process.send()`); otherwise it is copied and queued as usual.
    pub fn send_message_from(
        &self,
        flags: u8,
        payload: &[u8],
        fd: Option<OwnedFd>,
    ) -> io::Result<Flush> {
        if !self.stream
            && payload.len() <= MAX_PAYLOAD
            && flags & !KNOWN_FLAGS == 0
            && flags & (FLAG_MORE | FLAG_CONT) == 0
        {
            let mut out = self.out.lock();
            if out.closed {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "channel closed",
                ));
            }
            if out.queue.is_empty() {
                let id = self.next_message.fetch_add(1, Ordering::Relaxed);
                let mut header = [0u8; HEADER_LEN];
                Header::new(Kind::Message, flags, fd.is_some() as u16, payload.len(), id)
                    .write(&mut header);
                let iov = [IoSlice::new(&header), IoSlice::new(payload)];
                // A small message without an fd goes out of one buffer (send(2)).
                // (Not zeroed: only the bytes written are read.)
                let mut flat = [MaybeUninit::<u8>::uninit(); HEADER_LEN + SMALL_MESSAGE];
                let small = fd.is_none() && payload.len() <= SMALL_MESSAGE;
                let flat: &[u8] = if small {
                    let dst = flat.as_mut_ptr().cast::<u8>();
                    // SAFETY: header and payload fit in `flat` (`small`), do not
                    // overlap it, and the slice covers exactly the bytes written.
                    unsafe {
                        ptr::copy_nonoverlapping(header.as_ptr(), dst, HEADER_LEN);
                        ptr::copy_nonoverlapping(
                            payload.as_ptr(),
                            dst.add(HEADER_LEN),
                            payload.len(),
                        );
                        std::slice::from_raw_parts(dst, HEADER_LEN + payload.len())
                    }
                } else {
                    &[]
                };
                loop {
                    let r = if small {
                        sys::send_bytes(self.fd.as_raw_fd(), flat)
                    } else {
                        sys::send_packet(
                            self.fd.as_raw_fd(),
                            &iov,
                            fd.as_ref().map(AsRawFd::as_raw_fd),
                        )
                    };
                    match r {
                        // The fd (our copy) is closed on return: the receiver has its own.
                        Ok(_) => return Ok(Flush::Done),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // Full: queued below (a new id then; ids only tell messages apart).
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            out.close();
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.send_chunked(Kind::Message, flags, payload.to_vec(), fd)
    }

    /// Sends a worker-to-worker message ([`Kind::Relay`]), chunked like a message.
    pub fn send_relay(&self, flags: u8, payload: Vec<u8>) -> io::Result<Flush> {
        self.send_chunked(Kind::Relay, flags, payload, None)
    }

    fn send_chunked(
        &self,
        kind: Kind,
        flags: u8,
        payload: Vec<u8>,
        fd: Option<OwnedFd>,
    ) -> io::Result<Flush> {
        if flags & !KNOWN_FLAGS != 0 || flags & (FLAG_MORE | FLAG_CONT) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message flags unknown or reserved for chunking",
            ));
        }
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        let data: Arc<[u8]> = Arc::from(payload);
        let total = data.len();
        let mut packets = Vec::with_capacity(total / MAX_PAYLOAD + 1);
        let mut fd = fd;
        let mut start = 0;
        loop {
            let end = (start + MAX_PAYLOAD).min(total);
            let mut f = flags;
            if start > 0 {
                f |= FLAG_CONT;
            }
            if end < total {
                f |= FLAG_MORE;
            }
            packets.push(make_packet(
                kind,
                f,
                id,
                data.clone(),
                start,
                end,
                fd.take().map(PassFd::Owned),
            ));
            if end >= total {
                break;
            }
            start = end;
        }
        self.enqueue(packets.into_iter())
    }

    fn enqueue(&self, packets: impl Iterator<Item = Packet>) -> io::Result<Flush> {
        let mut out = self.out.lock();
        if out.closed {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "channel closed",
            ));
        }
        let was_empty = out.queue.is_empty();
        for p in packets {
            out.bytes += p.len();
            out.queue.push_back(p);
        }
        if !was_empty {
            // Output already waits for the socket, and whoever polls it knows
            // (see `set_waker`): trying now would only fail again.
            return Ok(Flush::Pending);
        }
        let r = self.flush_locked(&mut out);
        if was_empty && matches!(r, Ok(Flush::Pending)) {
            if let Some(w) = self.waker.get() {
                w.wake();
            }
        }
        r
    }

    /// Writes the whole queue, waiting for the socket to take it for at most
    /// `limit`: for a close that must not drop what was sent just before it
    /// (the peer reads it before the end of file). Returns whether the queue
    /// emptied; false when the time ran out or the socket failed (the peer
    /// gone), and what is left is then dropped by the close as before.
    pub fn flush_within(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.flush() {
                Ok(Flush::Done) => return true,
                Ok(Flush::Pending) => {}
                Err(_) => return false,
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one pollfd, valid for the call; the fd is ours and open.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// Writes as much of the queue as the socket takes now.
    pub fn flush(&self) -> io::Result<Flush> {
        let mut out = self.out.lock();
        self.flush_locked(&mut out)
    }

    fn flush_locked(&self, out: &mut Outbox) -> io::Result<Flush> {
        while !out.queue.is_empty() {
            let written = if self.stream {
                self.write_stream(out)
            } else {
                self.write_packets(out)
            };
            match written {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.close();
                    return Err(e);
                }
            }
        }
        Ok(Flush::Done)
    }

    /// Seqpacket mode: one write of the front packet, or of several with one
    /// system call once output has queued up; drops what was sent (the fds
    /// riding on it are our copies: the receiver has its own).
    fn write_packets(&self, out: &mut Outbox) -> io::Result<()> {
        let n = if out.queue.len() == 1 {
            // The usual case (a connection, a lone message): no allocation.
            sys::send_packets(self.fd.as_raw_fd(), &[iov_of(&out.queue[0])])?
        } else {
            let batch: Vec<_> = out.queue.iter().take(MAX_GATHER).map(iov_of).collect();
            sys::send_packets(self.fd.as_raw_fd(), &batch)?
        };
        for p in out.queue.drain(..n) {
            out.bytes -= p.len();
        }
        Ok(())
    }

    /// Stream mode: one write gathering packets from the front, resuming
    /// after a partial one; a packet with an fd always starts a write.
    fn write_stream(&self, out: &mut Outbox) -> io::Result<()> {
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(2 * MAX_GATHER);
        let mut pass = None;
        let mut bytes = 0;
        for (i, p) in out.queue.iter().take(MAX_GATHER).enumerate() {
            if i > 0 && (p.fd.is_some() || bytes >= MAX_GATHER_BYTES) {
                break;
            }
            let skip = if i == 0 { out.sent } else { 0 };
            if skip == 0 {
                pass = pass.or_else(|| p.fd.as_ref().map(PassFd::raw));
            }
            if skip < HEADER_LEN {
                iov.push(IoSlice::new(&p.header[skip..]));
                iov.push(IoSlice::new(&p.data[p.start..p.end]));
            } else {
                iov.push(IoSlice::new(&p.data[p.start + skip - HEADER_LEN..p.end]));
            }
            bytes += p.len() - skip;
        }
        let mut n = sys::send_packet(self.fd.as_raw_fd(), &iov, pass)?;
        drop(iov);
        while n > 0 {
            let rest = out.queue.front().expect("written bytes").len() - out.sent;
            if n < rest {
                out.sent += n;
                break;
            }
            n -= rest;
            out.sent = 0;
            let p = out.queue.pop_front().expect("front exists");
            out.bytes -= p.len();
        }
        Ok(())
    }

    /// Receives one raw packet. `Ok(None)`: nothing waiting.
    pub fn recv_raw(&self, buf: &mut [u8]) -> io::Result<Option<sys::Received>> {
        sys::recv_packet(self.fd.as_raw_fd(), buf)
    }
}

/// A packet's iovecs (header and payload) and the fd riding on it.
fn iov_of(p: &Packet) -> ([IoSlice<'_>; 2], Option<RawFd>) {
    (
        [
            IoSlice::new(&p.header),
            IoSlice::new(&p.data[p.start..p.end]),
        ],
        p.fd.as_ref().map(PassFd::raw),
    )
}

fn make_packet(
    kind: Kind,
    flags: u8,
    id: u64,
    data: Arc<[u8]>,
    start: usize,
    end: usize,
    fd: Option<PassFd>,
) -> Packet {
    let mut header = [0u8; HEADER_LEN];
    Header::new(kind, flags, fd.is_some() as u16, end - start, id).write(&mut header);
    Packet {
        header,
        data,
        start,
        end,
        fd,
    }
}

/// A complete inbound frame (messages reassembled).
#[derive(Debug)]
pub struct Incoming {
    pub kind: Kind,
    pub flags: u8,
    pub id: u64,
    pub payload: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

struct Partial {
    kind: Kind,
    id: u64,
    flags: u8,
    data: Vec<u8>,
    fd: Option<OwnedFd>,
}

/// What reading from a channel produced.
#[derive(Debug)]
pub enum Read {
    /// A complete frame.
    Frame(Incoming),
    /// A chunk was absorbed; the message is not complete yet.
    Partial,
    /// Nothing more to read now.
    Empty,
    /// The peer closed its end.
    Eof,
}

/// Inbound side: validates every packet and reassembles chunked messages.
pub struct Inbox {
    buf: Vec<u8>,
    partial: Option<Partial>,
    max_message: usize,
    stream: StreamIn,
    /// Seqpacket mode: packets received by the last `recvmmsg`, packet `i`
    /// in `buf[i * MAX_PACKET..]`, and the next one to decode.
    batch: Vec<sys::Received>,
    next: usize,
    /// The last `recvmmsg` found the socket empty (it returned fewer packets
    /// than it could take): once `batch` is used up, the next read reports
    /// `Empty` without asking the kernel again. Poll loops are
    /// level-triggered, so a packet that arrives meanwhile wakes them.
    drained: bool,
    /// The last read reported the peer's reset (see [`Inbox::reset`]).
    reset: bool,
}

/// Most packets taken from a seqpacket channel with one system call. The
/// buffer is `BATCH * MAX_PACKET` bytes of address space, of which only what
/// packets actually fill is ever touched.
const BATCH: usize = 16;

/// Most fds a stream reader holds that no frame has claimed yet.
const MAX_UNCLAIMED_FDS: usize = 64;

/// A stream channel's unparsed bytes and the fds that came with them.
#[derive(Default)]
struct StreamIn {
    /// Bytes `head..tail` of `buf` are received and not yet parsed
    /// (`buf` is allocated on first use).
    head: usize,
    tail: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Received fds, each with the stream offset at which its read ended: it
    /// belongs to a frame that starts before that offset.
    fds: VecDeque<(u64, OwnedFd)>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new(DEFAULT_MAX_MESSAGE)
    }
}

/// Why reading failed: the socket failed or the peer sent a bad frame.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Frame(FrameError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "channel I/O error: {e}"),
            ReadError::Frame(e) => write!(f, "bad frame on channel: {e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Frame(e) => Some(e),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}

impl Inbox {
    /// An inbox that refuses messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Inbox {
        Inbox {
            buf: Vec::new(),
            partial: None,
            max_message,
            stream: StreamIn::default(),
            batch: Vec::new(),
            next: 0,
            drained: false,
            reset: false,
        }
    }

    /// A peer that closed its end with frames of ours unread makes the
    /// kernel report `ECONNRESET` once, ahead of the frames it had sent
    /// that are still queued here (a worker that exits with a connection
    /// the reactor handed it unread, after handing others back). Those are
    /// read on: a reset is the end of file only when it comes again with
    /// nothing read in between.
    fn reset(&mut self) -> Read {
        if std::mem::replace(&mut self.reset, true) {
            Read::Eof
        } else {
            Read::Partial
        }
    }

    /// Forgets that the socket was last found empty: the next read asks the
    /// kernel. For a caller that stopped reading before `Empty` and must now
    /// read everything (a worker's last frames after it exited).
    pub fn rearm(&mut self) {
        self.drained = false;
    }

    /// Reads and decodes one packet from `ch`. On `Err` the channel must be
    /// closed; every fd that came with the bad packet has already been closed.
    pub fn read(&mut self, ch: &Channel) -> Result<Read, ReadError> {
        if ch.stream {
            return self.read_stream(ch).inspect_err(|_| {
                self.partial = None;
                self.stream.fds.clear();
            });
        }
        if self.next == self.batch.len() {
            self.batch.clear();
            self.next = 0;
            if std::mem::take(&mut self.drained) {
                return Ok(Read::Empty);
            }
            if self.buf.len() < BATCH * MAX_PACKET {
                self.buf = vec![0u8; BATCH * MAX_PACKET];
            }
            match sys::recv_packets(ch.as_raw_fd(), &mut self.buf, MAX_PACKET, &mut self.batch) {
                Ok(0) => return Ok(Read::Empty),
                Ok(n) => {
                    self.drained = n < BATCH && cfg!(target_os = "linux");
                    self.reset = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Read::Partial),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(self.reset()),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        let at = self.next * MAX_PACKET;
        let r = std::mem::replace(
            &mut self.batch[self.next],
            sys::Received {
                len: 0,
                fds: Vec::new(),
                truncated: false,
            },
        );
        self.next += 1;
        if r.len == 0 && r.fds.is_empty() && !r.truncated {
            // recvmsg returns 0 both at end of file and for an empty packet
            // from a live peer. Only a hung-up peer is end of file; an empty
            // packet is a short frame like any other.
            if sys::peer_hung_up(ch.as_raw_fd()) {
                self.batch.clear();
                self.next = 0;
                return Ok(Read::Eof);
            }
            self.fail();
            return Err(ReadError::Frame(FrameError::Short(0)));
        }
        if r.truncated {
            self.fail();
            return Err(ReadError::Frame(FrameError::Truncated));
        }
        let packet = &self.buf[at..at + r.len];
        decode(&mut self.partial, self.max_message, packet, r.fds).map_err(|e| {
            self.fail();
            ReadError::Frame(e)
        })
    }

    /// After a bad frame: forgets the message in progress and closes every
    /// fd received with packets not decoded yet.
    fn fail(&mut self) {
        self.partial = None;
        self.batch.clear();
        self.next = 0;
        self.drained = false;
    }

    /// Stream mode: decodes the next whole frame in the buffer, reading more
    /// from the socket when it holds none.
    fn read_stream(&mut self, ch: &Channel) -> Result<Read, ReadError> {
        if self.buf.len() < 2 * MAX_PACKET {
            self.buf = vec![0u8; 2 * MAX_PACKET];
        }
        let st = &mut self.stream;
        loop {
            let avail = st.tail - st.head;
            if avail >= HEADER_LEN {
                let hdr = &self.buf[st.head..st.head + HEADER_LEN];
                // Refuse a lying header before waiting for its payload.
                let kind = Kind::from_u8(hdr[0]).ok_or(FrameError::UnknownKind(hdr[0]))?;
                if hdr[1] & !KNOWN_FLAGS != 0 {
                    return Err(FrameError::UnknownFlags(hdr[1]).into());
                }
                let len = u32::from_le_bytes(hdr[4..8].try_into().expect("4 bytes")) as usize;
                if len > MAX_PAYLOAD {
                    // What follows the header in the buffer may be later
                    // frames: only the limit can be named.
                    return Err(FrameError::OverMax {
                        declared: len as u32,
                    }
                    .into());
                }
                if avail >= HEADER_LEN + len {
                    let start = st.base + st.head as u64;
                    // An fd whose read ended before this frame began belonged
                    // to an earlier frame that did not claim it.
                    if st.fds.front().is_some_and(|(end, _)| *end <= start) {
                        return Err(FrameError::BadFds {
                            kind,
                            declared: 0,
                            received: st.fds.len(),
                        }
                        .into());
                    }
                    let want = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
                    let fds: Vec<OwnedFd> = (0..want.min(st.fds.len()))
                        .filter_map(|_| st.fds.pop_front().map(|(_, f)| f))
                        .collect();
                    let packet = &self.buf[st.head..st.head + HEADER_LEN + len];
                    st.head += HEADER_LEN + len;
                    if st.head == st.tail {
                        st.base += st.tail as u64;
                        st.head = 0;
                        st.tail = 0;
                    }
                    return decode(&mut self.partial, self.max_message, packet, fds)
                        .map_err(ReadError::Frame);
                }
            }
            // Make room for at least one whole frame after what is buffered.
            if st.head > 0 && self.buf.len() - st.tail < MAX_PACKET {
                self.buf.copy_within(st.head..st.tail, 0);
                st.base += st.head as u64;
                st.tail -= st.head;
                st.head = 0;
            }
            let r = match ch.recv_raw(&mut self.buf[st.tail..]) {
                Ok(None) => return Ok(Read::Empty),
                Ok(Some(r)) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // See `reset()` (a field, not the method: `st` borrows `self`).
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    if std::mem::replace(&mut self.reset, true) {
                        return Ok(Read::Eof);
                    }
                    continue;
                }
                Err(e) => return Err(ReadError::Io(e)),
            };
            self.reset = false;
            if r.truncated && !r.fds.is_empty() {
                return Err(FrameError::Truncated.into());
            }
            if r.len == 0 && r.fds.is_empty() {
                return Ok(Read::Eof);
            }
            st.tail += r.len;
            // fds that came without bytes belong to the frame starting next.
            let end = st.base + st.tail as u64 + u64::from(r.len == 0);
            for f in r.fds {
                st.fds.push_back((end, f));
            }
            if st.fds.len() > MAX_UNCLAIMED_FDS {
                return Err(FrameError::BadFds {
                    kind: Kind::Message,
                    declared: 0,
                    received: st.fds.len(),
                }
                .into());
            }
        }
    }
}

/// Decodes one frame (`packet`, header included, and the fds that came with
/// it) into `partial`'s reassembly.
fn decode(
    partial: &mut Option<Partial>,
    max_message: usize,
    packet: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Read, FrameError> {
    {
        let h = Header::parse(packet, fds.len())?;
        let mut fds = fds;
        let fd = fds.pop();
        let payload = &packet[HEADER_LEN..];
        if !h.kind.chunked() {
            if h.flags & (FLAG_MORE | FLAG_CONT) != 0 {
                return Err(FrameError::OutOfSequence(h.id));
            }
            return Ok(Read::Frame(Incoming {
                kind: h.kind,
                flags: h.flags,
                id: h.id,
                payload: payload.to_vec(),
                fd,
            }));
        }
        let cont = h.flags & FLAG_CONT != 0;
        let more = h.flags & FLAG_MORE != 0;
        match (&mut *partial, cont) {
            (None, false) => {
                if payload.len() > max_message {
                    return Err(FrameError::TooLarge(payload.len()));
                }
                if !more {
                    return Ok(Read::Frame(Incoming {
                        kind: h.kind,
                        flags: h.flags,
                        id: h.id,
                        payload: payload.to_vec(),
                        fd,
                    }));
                }
                *partial = Some(Partial {
                    kind: h.kind,
                    id: h.id,
                    flags: h.flags & !(FLAG_MORE | FLAG_CONT),
                    data: payload.to_vec(),
                    fd,
                });
                Ok(Read::Partial)
            }
            (Some(p), true) if p.id == h.id && p.kind == h.kind => {
                if fd.is_some() {
                    return Err(FrameError::BadFds {
                        kind: h.kind,
                        declared: h.nfds,
                        received: 1,
                    });
                }
                let size = p.data.len() + payload.len();
                if size > max_message {
                    return Err(FrameError::TooLarge(size));
                }
                p.data.extend_from_slice(payload);
                if more {
                    return Ok(Read::Partial);
                }
                let p = partial.take().expect("partial exists");
                Ok(Read::Frame(Incoming {
                    kind: p.kind,
                    flags: p.flags,
                    id: p.id,
                    payload: p.data,
                    fd: p.fd,
                }))
            }
            _ => Err(FrameError::OutOfSequence(h.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode, FLAG_ADVANCED};

    fn pair() -> (Channel, Channel) {
        let (a, b) = Channel::pair().unwrap();
        (a, Channel::new(b).unwrap())
    }

    fn read_frame(inbox: &mut Inbox, ch: &Channel) -> Incoming {
        loop {
            match inbox.read(ch).unwrap() {
                Read::Frame(f) => return f,
                Read::Partial => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn small_message_round_trip() {
        let (a, b) = pair();
        assert_eq!(
            a.send_message(FLAG_ADVANCED, b"{\"x\":1}".to_vec(), None)
                .unwrap(),
            Flush::Done
        );
        let mut inbox = Inbox::default();
        let f = read_frame(&mut inbox, &b);
        assert_eq!(f.kind, Kind::Message);
        assert_eq!(f.payload, b"{\"x\":1}");
        assert_eq!(f.flags & FLAG_ADVANCED, FLAG_ADVANCED);
        assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
        drop(a);
        assert!(matches!(inbox.read(&b).unwrap(), Read::Eof));
    }

    /// A peer that closes with frames of ours unread: what it sent before
    /// is still read, then the end of file (the kernel's one-time
    /// `ECONNRESET` on a seqpacket channel is read past).
    #[test]
    fn frames_sent_before_a_reset_are_read_before_eof() {
        let (a, b) = pair();
        for id in 1..=3u64 {
            a.send_frame(Kind::Control, 0, id, b"{}", None).unwrap();
        }
        // `a` never reads this one: closing it then resets the channel.
        b.send_frame(Kind::Control, 0, 9, b"{}", None).unwrap();
        drop(a);
        let mut inbox = Inbox::default();
        for id in 1..=3u64 {
            assert_eq!(read_frame(&mut inbox, &b).id, id);
        }
        assert!(matches!(inbox.read(&b).unwrap(), Read::Eof));
    }

    #[test]
    fn flush_within_writes_a_queue_the_peer_reads_meanwhile() {
        let (a, b) = pair();
        let big = vec![7u8; 4 * 1024 * 1024];
        assert_eq!(
            a.send_message(0, big.clone(), None).unwrap(),
            Flush::Pending
        );
        let reader = std::thread::spawn(move || {
            let mut inbox = Inbox::new(8 * 1024 * 1024);
            loop {
                match inbox.read(&b) {
                    Ok(Read::Frame(f)) => return f.payload.len(),
                    Ok(Read::Partial) => continue,
                    Ok(Read::Empty) => std::thread::sleep(std::time::Duration::from_millis(1)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        assert!(a.flush_within(std::time::Duration::from_secs(10)));
        assert_eq!(a.queued_bytes(), 0);
        assert_eq!(reader.join().unwrap(), big.len());
    }

    #[test]
    fn flush_within_gives_up_when_nobody_reads_or_the_peer_is_gone() {
        let (a, b) = pair();
        assert_eq!(
            a.send_message(0, vec![1u8; 4 * 1024 * 1024], None).unwrap(),
            Flush::Pending
        );
        let t = std::time::Instant::now();
        assert!(!a.flush_within(std::time::Duration::from_millis(50)));
        assert!(t.elapsed() >= std::time::Duration::from_millis(50));
        assert!(a.queued_bytes() > 0);
        drop(b);
        let t = std::time::Instant::now();
        assert!(!a.flush_within(std::time::Duration::from_secs(10)));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn chunk_out_of_sequence_is_refused() {
        let (a, b) = pair();
        let raw = |p: Vec<u8>| {
            sys::send_packet(a.as_raw_fd(), &[IoSlice::new(&p)], None).unwrap();
        };
        raw(encode(Kind::Message, FLAG_MORE, 0, 1, b"abc"));
        raw(encode(Kind::Message, FLAG_CONT, 0, 2, b"def"));
        let mut inbox = Inbox::default();
        assert!(matches!(inbox.read(&b).unwrap(), Read::Partial));
        assert!(matches!(
            inbox.read(&b),
            Err(ReadError::Frame(FrameError::OutOfSequence(_)))
        ));
        // A continuation without a start.
        raw(encode(Kind::Message, FLAG_CONT, 0, 5, b"x"));
        assert!(matches!(
            inbox.read(&b),
            Err(ReadError::Frame(FrameError::OutOfSequence(5)))
        ));
    }

    #[test]
    fn message_limit_is_enforced() {
        let (a, b) = pair();
        a.send_message(0, vec![1u8; 3 * MAX_PAYLOAD], None).unwrap();
        let mut inbox = Inbox::new(2 * MAX_PAYLOAD);
        assert!(matches!(inbox.read(&b).unwrap(), Read::Partial));
        assert!(matches!(inbox.read(&b).unwrap(), Read::Partial));
        assert!(matches!(
            inbox.read(&b),
            Err(ReadError::Frame(FrameError::TooLarge(_)))
        ));
    }

    #[test]
    fn send_after_close_fails() {
        let (a, _b) = pair();
        a.close_output();
        assert!(a.send_frame(Kind::Online, 0, 0, &[], None).is_err());
    }

    #[test]
    fn message_from_a_borrowed_payload_goes_direct_then_queues_when_full() {
        let (a, b) = pair();
        // Idle: written at once, an fd riding along.
        let (x, y) = sys::channel_pair().unwrap();
        drop(y);
        assert_eq!(
            a.send_message_from(0, b"first", Some(x)).unwrap(),
            Flush::Done
        );
        // Until the socket is full; then copies are queued, in order.
        let big = vec![7u8; 4000];
        let mut sent = 1;
        while a.send_message_from(0, &big, None).unwrap() == Flush::Done {
            sent += 1;
            assert!(sent < 100_000, "the socket never filled");
        }
        sent += 1;
        for _ in 0..3 {
            assert_eq!(
                a.send_message_from(0, b"later", None).unwrap(),
                Flush::Pending
            );
        }
        // Larger than a packet: chunked as usual.
        a.send_message_from(0, &vec![9u8; MAX_PAYLOAD + 10], None)
            .unwrap();
        let mut inbox = Inbox::default();
        let first = read_frame(&mut inbox, &b);
        assert_eq!(first.payload, b"first");
        assert!(first.fd.is_some());
        let mut got = 1;
        let mut later = 0;
        let mut chunked = false;
        while !chunked {
            while a.flush().unwrap() == Flush::Pending {
                match inbox.read(&b).unwrap() {
                    Read::Frame(f) => {
                        got += 1;
                        later += usize::from(f.payload == b"later");
                    }
                    Read::Partial | Read::Empty => {}
                    Read::Eof => panic!("eof"),
                }
            }
            match inbox.read(&b).unwrap() {
                Read::Frame(f) if f.payload.len() == MAX_PAYLOAD + 10 => chunked = true,
                Read::Frame(f) => {
                    got += 1;
                    assert!(later == 0 || f.payload == b"later", "order kept");
                    later += usize::from(f.payload == b"later");
                }
                Read::Partial | Read::Empty => {}
                Read::Eof => panic!("eof"),
            }
        }
        assert_eq!(got, sent + 3);
        assert_eq!(later, 3);
        a.close_output();
        assert!(a.send_message_from(0, b"x", None).is_err());
    }
}
