//! Kernel offload of round robin: the pieces that talk to the kernel.
//!
//! An `rr` TCP listener on Linux is a `SO_REUSEPORT` group of two sockets
//! held by the primary: its own (index 0, the group's first member), then a
//! shared one that every worker listens on (index 1). A classic BPF program
//! attached to the group (`SO_ATTACH_REUSEPORT_CBPF`) returns the index of
//! the socket each new connection queues on (see [`Program`]).
//!
//! The reactor (`src/reactor/offload.rs`) decides which program runs; this
//! file attaches it. Linux only: elsewhere [`supported`] is false and `rr`
//! stays exact.

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;

/// Which socket of the group new connections go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The primary's socket: the primary accepts and hands connections out
    /// one by one with its window (exact round robin, for few connections).
    Primary,
    /// The shared socket: the first free worker accepts, the primary does no
    /// work per connection (for a high rate).
    Shared,
}

impl Program {
    /// The member's index in the group: what the program returns.
    pub fn index(self) -> u32 {
        match self {
            Program::Primary => 0,
            Program::Shared => 1,
        }
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
pub fn attach(fd: &OwnedFd, program: Program) -> io::Result<()> {
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    if !supported() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    // One instruction: `ret #index` (BPF_RET | BPF_K).
    let mut code = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: program.index(),
    }];
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
pub fn attach(_fd: &OwnedFd, _program: Program) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_name_the_group_members() {
        assert_eq!(Program::Primary.index(), 0);
        assert_eq!(Program::Shared.index(), 1);
    }
}
