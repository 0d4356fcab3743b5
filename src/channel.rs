//! The primary <-> worker channel: one `SOCK_SEQPACKET` socket, an ordered
//! outbound queue with back-pressure, and an inbound decoder that reassembles
//! chunked messages and refuses frames that lie.
//!
//! A [`Channel`] is shared between threads (`&self` everywhere): the writer
//! side is a mutex-protected queue, so the JS thread and the reactor thread can
//! both send without reordering each other's frames. A send never blocks: what
//! the socket cannot take now waits in the queue, and the owner of the poll
//! loop flushes it when the socket is writable again.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
    closed: bool,
}

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
    out: Mutex<Outbox>,
    next_message: AtomicU64,
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Channel {
    /// Wraps a connected `SOCK_SEQPACKET` socket and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        sys::set_nonblocking(fd.as_raw_fd(), true)?;
        Ok(Channel {
            fd,
            out: Mutex::new(Outbox::default()),
            next_message: AtomicU64::new(1),
        })
    }

    /// A connected pair: `(ours, theirs)`. `theirs` stays blocking and
    /// close-on-exec, ready to be handed to a child.
    pub fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (a, b) = sys::seqpacket_pair()?;
        Ok((Channel::new(a)?, b))
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
        let mut out = self.out.lock();
        out.closed = true;
        out.queue.clear();
        out.bytes = 0;
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
        for p in packets {
            out.bytes += p.len();
            out.queue.push_back(p);
        }
        self.flush_locked(&mut out)
    }

    /// Writes as much of the queue as the socket takes now.
    pub fn flush(&self) -> io::Result<Flush> {
        let mut out = self.out.lock();
        self.flush_locked(&mut out)
    }

    fn flush_locked(&self, out: &mut Outbox) -> io::Result<Flush> {
        while let Some(p) = out.queue.front() {
            let iov = [
                IoSlice::new(&p.header),
                IoSlice::new(&p.data[p.start..p.end]),
            ];
            let pass = p.fd.as_ref().map(PassFd::raw);
            match sys::send_packet(self.fd.as_raw_fd(), &iov, pass) {
                Ok(_) => {
                    let p = out.queue.pop_front().expect("front exists");
                    out.bytes -= p.len();
                    // The fd (our copy) is closed here: the receiver has its own.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.closed = true;
                    out.queue.clear();
                    out.bytes = 0;
                    return Err(e);
                }
            }
        }
        Ok(Flush::Done)
    }

    /// Receives one raw packet. `Ok(None)`: nothing waiting.
    pub fn recv_raw(&self, buf: &mut [u8]) -> io::Result<Option<sys::Received>> {
        sys::recv_packet(self.fd.as_raw_fd(), buf)
    }
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
            buf: vec![0u8; MAX_PACKET],
            partial: None,
            max_message,
        }
    }

    /// Reads and decodes one packet from `ch`. On `Err` the channel must be
    /// closed; every fd that came with the bad packet has already been closed.
    pub fn read(&mut self, ch: &Channel) -> Result<Read, ReadError> {
        let r = match ch.recv_raw(&mut self.buf) {
            Ok(None) => return Ok(Read::Empty),
            Ok(Some(r)) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Read::Partial),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Read::Eof),
            Err(e) => return Err(ReadError::Io(e)),
        };
        if r.len == 0 && r.fds.is_empty() && !r.truncated {
            // recvmsg returns 0 both at end of file and for an empty packet
            // from a live peer. Only a hung-up peer is end of file; an empty
            // packet is a short frame like any other.
            if sys::peer_hung_up(ch.as_raw_fd()) {
                return Ok(Read::Eof);
            }
            self.partial = None;
            return Err(ReadError::Frame(FrameError::Short(0)));
        }
        let len = r.len;
        self.decode(len, r).map_err(|e| {
            self.partial = None;
            ReadError::Frame(e)
        })
    }

    /// Decodes a packet already sitting in `self.buf[..len]`.
    fn decode(&mut self, len: usize, r: sys::Received) -> Result<Read, FrameError> {
        if r.truncated {
            return Err(FrameError::Truncated);
        }
        let packet = &self.buf[..len];
        let h = Header::parse(packet, r.fds.len())?;
        let mut fds = r.fds;
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
        match (&mut self.partial, cont) {
            (None, false) => {
                if payload.len() > self.max_message {
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
                self.partial = Some(Partial {
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
                if size > self.max_message {
                    return Err(FrameError::TooLarge(size));
                }
                p.data.extend_from_slice(payload);
                if more {
                    return Ok(Read::Partial);
                }
                let p = self.partial.take().expect("partial exists");
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
}
