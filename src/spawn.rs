//! Spawning worker processes: `posix_spawn` (vfork-fast even from a big Node
//! process), the channel placed at a fixed fd number, stdio wired as asked, and
//! a [`Process`] handle returned to watch and reap the child without
//! `waitpid(-1)`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::process::Process;
use crate::sys;

/// What a child's fd `i` is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// The parent's own fd `i`.
    Inherit,
    /// `/dev/null`.
    Ignore,
    /// A new stream socketpair, the parent keeping the other end, as
    /// Node's `'pipe'` slots are (a socket's buffer is also several times a
    /// pipe's 64 KiB: a worker writing its stdout synchronously blocks, or
    /// gets `EAGAIN`, as often as under Node).
    Pipe,
    /// A specific fd of the parent.
    Fd(RawFd),
    /// The rcluster channel (Node's `'ipc'`): connections and control.
    Channel,
    /// The worker's message channel (`process.send()` and the events that
    /// must stay in order with messages), read on each side's JS thread.
    Messages,
}

/// Everything needed to start one worker.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Path of the executable (`process.execPath`).
    pub file: String,
    /// Full argv, `argv[0]` included.
    pub argv: Vec<String>,
    /// Full environment as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// Working directory of the child, if not the parent's.
    pub cwd: Option<String>,
    /// The child's fds 0.. (and where the channel goes).
    pub stdio: Vec<Stdio>,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// Signals and reaps exactly this child.
    pub process: Process,
    /// For each stdio slot that was [`Stdio::Pipe`], the parent's end.
    pub pipes: Vec<Option<OwnedFd>>,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("argument contains a NUL byte: {s:?}"),
        )
    })
}

/// Duplicates `fd` to a number at or above `min`, close-on-exec, so that the
/// dup2 sequence in the child can never clobber a source it still needs.
fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: zeroed storage is then initialised by the call.
        let mut fa = FileActions(unsafe { std::mem::zeroed() });
        // SAFETY: initialising the struct we own.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut fa.0) })?;
        Ok(fa)
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: the struct was initialised in `new`.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> io::Result<Attr> {
        // SAFETY: zeroed storage is then initialised by the call.
        let mut a = Attr(unsafe { std::mem::zeroed() });
        // SAFETY: initialising the struct we own.
        check(unsafe { libc::posix_spawnattr_init(&mut a.0) })?;
        Ok(a)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: the struct was initialised in `new`.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

/// Starts a child as described by `opts`, placing `channel` wherever
/// `opts.stdio` says [`Stdio::Channel`] and `messages` where it says
/// [`Stdio::Messages`]. The child starts with every signal at
/// its default disposition and an empty signal mask (Node ignores SIGPIPE in
/// the parent; the child must not inherit that).
pub fn spawn(
    opts: &SpawnOptions,
    channel: Option<&OwnedFd>,
    messages: Option<&OwnedFd>,
) -> io::Result<Spawned> {
    let file = cstr(&opts.file)?;
    let argv: Vec<CString> = opts
        .argv
        .iter()
        .map(|s| cstr(s))
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = opts
        .env
        .iter()
        .map(|s| cstr(s))
        .collect::<io::Result<_>>()?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|s| s.as_ptr() as *mut _).collect();
    argv_p.push(ptr::null_mut());
    let mut env_p: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr() as *mut _).collect();
    env_p.push(ptr::null_mut());
    let cwd = opts.cwd.as_deref().map(cstr).transpose()?;
    let devnull = cstr("/dev/null")?;

    // Sources are moved above every target number first.
    let above = opts.stdio.len().max(3) as RawFd;
    let mut sources: Vec<Option<OwnedFd>> = Vec::with_capacity(opts.stdio.len());
    let mut pipes: Vec<Option<OwnedFd>> = Vec::with_capacity(opts.stdio.len());
    for (i, s) in opts.stdio.iter().enumerate() {
        let (src, keep) = match s {
            Stdio::Inherit => (Some(dup_above(i as RawFd, above)?), None),
            Stdio::Ignore => (None, None),
            Stdio::Fd(fd) => (Some(dup_above(*fd, above)?), None),
            Stdio::Channel => {
                let ch = channel.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no channel to place")
                })?;
                (Some(dup_above(ch.as_raw_fd(), above)?), None)
            }
            Stdio::Messages => {
                let ch = messages.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no message channel to place")
                })?;
                (Some(dup_above(ch.as_raw_fd(), above)?), None)
            }
            Stdio::Pipe => {
                let (ours, theirs) = sys::stream_pair()?;
                (Some(dup_above(theirs.as_raw_fd(), above)?), Some(ours))
            }
        };
        sources.push(src);
        pipes.push(keep);
    }

    let mut fa = FileActions::new()?;
    for (i, s) in opts.stdio.iter().enumerate() {
        // SAFETY: `fa` is initialised; the path outlives the spawn call.
        match (&sources[i], s) {
            (Some(src), _) => check(unsafe {
                libc::posix_spawn_file_actions_adddup2(&mut fa.0, src.as_raw_fd(), i as RawFd)
            })?,
            (None, _) => check(unsafe {
                libc::posix_spawn_file_actions_addopen(
                    &mut fa.0,
                    i as RawFd,
                    devnull.as_ptr(),
                    libc::O_RDWR,
                    0,
                )
            })?,
        }
    }
    if let Some(dir) = &cwd {
        // SAFETY: `fa` is initialised; `dir` outlives the spawn call.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut fa.0, dir.as_ptr()) })?;
    }

    let mut attr = Attr::new()?;
    // SAFETY: sigset_t storage initialised by sigfillset/sigemptyset before use;
    // `attr` is initialised.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigdelset(&mut all, libc::SIGKILL);
        libc::sigdelset(&mut all, libc::SIGSTOP);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &all))?;
        check(libc::posix_spawnattr_setsigmask(&mut attr.0, &none))?;
        check(libc::posix_spawnattr_setflags(
            &mut attr.0,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        ))?;
    }

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: file, argv and envp are
    // NUL-terminated arrays of NUL-terminated strings kept alive above.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            file.as_ptr(),
            &fa.0,
            &attr.0,
            argv_p.as_ptr(),
            env_p.as_ptr(),
        )
    })?;
    drop(sources);
    let process = match Process::open(pid) {
        Ok(p) => p,
        Err(e) => {
            // Without a handle we cannot supervise it: stop it now and reap it.
            // SAFETY: plain syscalls on the pid we just created.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, ptr::null_mut(), 0);
            }
            return Err(e);
        }
    };
    Ok(Spawned {
        pid,
        process,
        pipes,
    })
}

/// Sends `sig` to the process (no pid-reuse race).
pub fn signal(process: &Process, sig: i32) -> io::Result<()> {
    process.signal(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::ExitStatus;
    use std::io::Read;

    fn wait(process: &Process) -> ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(fd) = process.exit_fd() {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 5000) };
            }
            if let Some(s) = process.try_reap().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "child did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn spawn_pipe_and_exit_code() {
        let opts = SpawnOptions {
            file: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi $X; exit 3".into()],
            env: vec!["X=there".into()],
            cwd: Some("/".into()),
            stdio: vec![Stdio::Ignore, Stdio::Pipe, Stdio::Inherit],
        };
        let mut s = spawn(&opts, None, None).unwrap();
        let mut out = String::new();
        std::fs::File::from(s.pipes[1].take_ref())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hi there\n");
        assert_eq!(wait(&s.process), ExitStatus::Code(3));
    }

    #[test]
    fn stdio_pipes_are_sockets_as_in_node() {
        let opts = SpawnOptions {
            file: "/bin/sh".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "test -S /dev/fd/0 && test -S /dev/fd/1 && test -S /dev/fd/2".into(),
            ],
            env: vec![],
            cwd: None,
            stdio: vec![Stdio::Pipe, Stdio::Pipe, Stdio::Pipe],
        };
        let s = spawn(&opts, None, None).unwrap();
        assert!(s.pipes.iter().all(|p| p.is_some()));
        assert_eq!(wait(&s.process), ExitStatus::Code(0));
    }

    #[test]
    fn extra_pipe_slots_go_both_ways() {
        use std::io::Write;
        // Slot 3 is a socketpair: the child reads a line from it and
        // answers on it.
        let opts = SpawnOptions {
            file: "/bin/sh".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "test -S /dev/fd/3 && read l <&3 && echo \"got $l\" >&3".into(),
            ],
            env: vec![],
            cwd: None,
            stdio: vec![Stdio::Ignore, Stdio::Inherit, Stdio::Inherit, Stdio::Pipe],
        };
        let mut s = spawn(&opts, None, None).unwrap();
        let mut f = std::fs::File::from(s.pipes[3].take().unwrap());
        f.write_all(b"ping\n").unwrap();
        let mut out = String::new();
        f.read_to_string(&mut out).unwrap();
        assert_eq!(out, "got ping\n");
        assert_eq!(wait(&s.process), ExitStatus::Code(0));
    }

    #[test]
    fn channels_land_on_their_fds_and_signal_kills() {
        let (ours, theirs) = sys::channel_pair().unwrap();
        let opts = SpawnOptions {
            file: "/bin/sh".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                "test -S /dev/fd/3 && test -S /dev/fd/4 && echo ok >&3; sleep 5".into(),
            ],
            env: vec![],
            cwd: None,
            stdio: vec![
                Stdio::Ignore,
                Stdio::Inherit,
                Stdio::Inherit,
                Stdio::Channel,
                Stdio::Messages,
            ],
        };
        let (_messages, their_messages) = sys::channel_pair().unwrap();
        // Each channel kind needs its socket.
        assert!(spawn(&opts, Some(&theirs), None).is_err());
        let s = spawn(&opts, Some(&theirs), Some(&their_messages)).unwrap();
        drop(theirs);
        drop(their_messages);
        let mut buf = [0u8; 16];
        sys::set_nonblocking(ours.as_raw_fd(), false).unwrap();
        let r = sys::recv_packet(ours.as_raw_fd(), &mut buf);
        // recv_packet uses MSG_DONTWAIT; poll first.
        let r = match r.unwrap() {
            Some(r) => r,
            None => {
                let mut p = libc::pollfd {
                    fd: ours.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 5000) };
                sys::recv_packet(ours.as_raw_fd(), &mut buf)
                    .unwrap()
                    .unwrap()
            }
        };
        assert_eq!(&buf[..r.len], b"ok\n");
        signal(&s.process, libc::SIGTERM).unwrap();
        assert_eq!(wait(&s.process), ExitStatus::Signal(libc::SIGTERM));
    }

    #[test]
    fn missing_executable_is_an_error() {
        let opts = SpawnOptions {
            file: "/nonexistent/rcluster-test".into(),
            argv: vec!["x".into()],
            stdio: vec![Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
            ..Default::default()
        };
        assert!(spawn(&opts, None, None).is_err());
    }

    trait TakeRef {
        fn take_ref(&mut self) -> OwnedFd;
    }
    impl TakeRef for Option<OwnedFd> {
        fn take_ref(&mut self) -> OwnedFd {
            self.take().unwrap()
        }
    }
}
