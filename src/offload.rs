//! Kernel offload of round robin: the pieces that talk to the kernel.
//!
//! An `rr` TCP listener on Linux is a `SO_REUSEPORT` group held by the
//! primary: the primary's own socket first (index 0), then a socket every
//! worker listens on. A classic BPF program attached to the group
//! (`SO_ATTACH_REUSEPORT_CBPF`) chooses, for every new connection, the
//! socket it queues on:
//!
//! - [`Program::Primary`]: always the primary's socket. The primary accepts
//!   and hands connections out one by one with its window of unacknowledged
//!   connections: exact round robin, the mode for few connections.
//! - [`Program::Spread`]: one of the given members at random, weighted (the
//!   reactor names the one shared socket): the workers accept and the
//!   primary does no work per connection, the mode for a high rate.
//!
//! The reactor (`src/reactor/offload.rs`) decides which program runs; this
//! file builds the programs, attaches them, reads a listening socket's
//! accept queue length and stops one. Linux only: elsewhere [`supported`] is
//! false and `rr` stays exact.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Which socket of the group new connections go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// Index 0, the primary's socket.
    Primary,
    /// `(index in the group, weight)`: a random one, in proportion to weight.
    /// Weights of 0 are left out; an empty list means [`Program::Primary`].
    Spread(Vec<(u32, u32)>),
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const ALU_MOD_K: u16 = 0x94; // BPF_ALU (4) | BPF_MOD (0x90) | BPF_K (0)
const JMP_JGE_K: u16 = 0x35; // BPF_JMP (5) | BPF_JGE (0x30) | BPF_K (0)
const RET_K: u16 = 0x06; // BPF_RET (6) | BPF_K (0)
/// `SKF_AD_OFF + SKF_AD_RANDOM`: a load of this offset yields a random u32.
const AD_RANDOM: u32 = (-0x1000i32 + 56) as u32;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Most members a spread program names (it stays far below the kernel's
/// 4096 instructions, and jumps fit in a u8).
pub const MAX_MEMBERS: usize = 1000;

impl Program {
    /// The instructions: `ret #0`, or `A = random % total; if A < w0: ret i0;
    /// if A < w0+w1: ret i1; ...; ret i_last`.
    pub fn instructions(&self) -> Vec<Insn> {
        let members: Vec<(u32, u32)> = match self {
            Program::Primary => Vec::new(),
            Program::Spread(m) => m
                .iter()
                .copied()
                .filter(|(_, w)| *w > 0)
                .take(MAX_MEMBERS)
                .collect(),
        };
        let total: u64 = members.iter().map(|(_, w)| *w as u64).sum();
        if members.is_empty() || total > u32::MAX as u64 {
            return vec![insn(RET_K, 0, 0, 0)];
        }
        if members.len() == 1 {
            return vec![insn(RET_K, 0, 0, members[0].0)];
        }
        let mut out = vec![
            insn(LD_W_ABS, 0, 0, AD_RANDOM),
            insn(ALU_MOD_K, 0, 0, total as u32),
        ];
        let mut upto = 0u32;
        let last = members.len() - 1;
        for (i, (index, weight)) in members.iter().enumerate() {
            upto += weight;
            if i < last {
                // A >= upto: skip this member's ret; else return it.
                out.push(insn(JMP_JGE_K, 1, 0, upto));
            }
            out.push(insn(RET_K, 0, 0, *index));
        }
        out
    }
}

/// Whether this platform can run the offload.
pub fn supported() -> bool {
    cfg!(all(
        target_os = "linux",
        not(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc64"
        ))
    ))
}

/// Attaches `program` to the `SO_REUSEPORT` group of `fd` (any member).
#[cfg(target_os = "linux")]
pub fn attach(fd: &OwnedFd, program: &Program) -> io::Result<()> {
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    if !supported() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let mut code: Vec<libc::sock_filter> = program
        .instructions()
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    // `struct sock_fprog` with its padding spelled out, so that every byte
    // handed to the kernel is initialised.
    #[repr(C)]
    struct Fprog {
        len: u16,
        pad: [u8; std::mem::size_of::<usize>() - 2],
        filter: *mut libc::sock_filter,
    }
    const _: () = assert!(std::mem::size_of::<Fprog>() == std::mem::size_of::<libc::sock_fprog>());
    let prog = Fprog {
        len: code.len() as u16,
        pad: [0; std::mem::size_of::<usize>() - 2],
        filter: code.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `code`, which lives until the call returns;
    // the kernel copies the program and keeps no pointer to our memory.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            &prog as *const Fprog as *const libc::c_void,
            std::mem::size_of::<Fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn attach(_fd: &OwnedFd, _program: &Program) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Connections waiting in a listening TCP socket's accept queue (Linux
/// reports it as `tcpi_unacked` of a listening socket); `None` elsewhere or
/// on error.
#[cfg(target_os = "linux")]
pub fn queued(fd: &OwnedFd) -> Option<u32> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes; the
    // kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_state == 10/* TCP_LISTEN */).then_some(info.tcpi_unacked)
}

#[cfg(not(target_os = "linux"))]
pub fn queued(_fd: &OwnedFd) -> Option<u32> {
    None
}

/// Stops a listening socket: it leaves its `SO_REUSEPORT` group at once
/// (whoever else still holds the fd), and what was queued on it is reset,
/// so drain it first.
pub fn stop_listening(fd: &OwnedFd) {
    // SAFETY: shutdown(2) on a socket we own; no memory is involved.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_is_ret_zero() {
        assert_eq!(Program::Primary.instructions(), vec![insn(RET_K, 0, 0, 0)]);
        assert_eq!(
            Program::Spread(vec![]).instructions(),
            vec![insn(RET_K, 0, 0, 0)]
        );
        assert_eq!(
            Program::Spread(vec![(3, 0)]).instructions(),
            vec![insn(RET_K, 0, 0, 0)]
        );
    }

    #[test]
    fn one_member_is_returned_directly() {
        assert_eq!(
            Program::Spread(vec![(2, 5)]).instructions(),
            vec![insn(RET_K, 0, 0, 2)]
        );
    }

    /// Runs the program the way the kernel would, for a given random value.
    fn run(p: &[Insn], random: u32) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = random,
                ALU_MOD_K => a %= i.k,
                JMP_JGE_K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn spread_follows_weights() {
        let p = Program::Spread(vec![(1, 1), (4, 0), (2, 2), (3, 1)]).instructions();
        let mut seen = [0u32; 5];
        for r in 0..4000u32 {
            seen[run(&p, r) as usize] += 1;
        }
        assert_eq!(seen, [0, 1000, 2000, 1000, 0]);
    }
}
