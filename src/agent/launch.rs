//! `-- CMD`: start a command with every probe live before it runs.
//!
//! The child is forked and held on a pipe before `exec`; probes attach to
//! its pid and the command's binary (the kernel installs them when the exec
//! maps the file), then the pipe releases it. std's `Command` cannot do this:
//! `spawn` returns only after the exec.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct HeldChild {
    pub pid: u32,
    release_fd: libc::c_int,
    exited: Option<i32>,
    /// It put itself under our ptrace, so its exec stops it (see `release`).
    traced: bool,
    /// Stopped by its exec under our ptrace, until `resume`.
    stopped: bool,
}

/// Finds CMD the way a shell would: a path with '/' as is, else along $PATH;
/// when it cannot be run, says why as a shell does.
pub fn resolve_command(cmd: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| -> Result<(), String> {
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("no such file: {cmd}"))
            }
            Err(e) => Err(format!("{cmd}: {e}")),
            Ok(m) if m.is_dir() => Err(format!("{cmd} is a directory, not a program")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Err(format!("{cmd} is not executable (chmod +x it)"))
            }
            Ok(_) => Ok(()),
        }
    };
    let found = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return runnable(&p).map(|_| found(p)).map_err(|e| anyhow!(e));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(cmd))
        .find(|p| runnable(p).is_ok())
        .map(found)
        .ok_or_else(|| anyhow!("command not found: {cmd} (give a path, or put it on $PATH)"))
}

impl HeldChild {
    /// Forks a child that waits for `release` before exec'ing `exe` with `args`
    /// (args[0] is the name the command was given as). Its stdout and stderr
    /// go to `output` when given, else its stdout joins our stderr: our
    /// stdout carries our data only.
    pub fn spawn(exe: &Path, args: &[String], output: Option<&Path>) -> Result<HeldChild> {
        let exe_c =
            CString::new(exe.as_os_str().as_bytes()).context("command path holds a NUL byte")?;
        let argv_c: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("an argument holds a NUL byte")?;
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // Opened before the fork (the child may only make async-signal-safe
        // calls); close-on-exec, so only its dup2 copies reach the command.
        let out_fd = match output {
            Some(p) => {
                let file = std::fs::File::create(p)
                    .with_context(|| format!("--cmd-output {}", p.display()))?;
                Some(file)
            }
            None => None,
        };
        let (stdout_to, stderr_to) = match &out_fd {
            Some(f) => {
                use std::os::fd::AsRawFd;
                (f.as_raw_fd(), f.as_raw_fd())
            }
            None => (libc::STDERR_FILENO, libc::STDERR_FILENO),
        };

        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: plain syscalls on owned descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        let (read_fd, write_fd) = (fds[0], fds[1]);
        // The child says here whether it is under our ptrace, before it
        // waits for the release: the release must know whether an exec stop
        // is coming, and must not guess from /proc before the child ran.
        let mut said = [0 as libc::c_int; 2];
        // SAFETY: as above.
        if unsafe { libc::pipe2(said.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the child only calls async-signal-safe functions (ptrace,
        // read, write, close, execv, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                libc::close(write_fd);
                if libc::dup2(stdout_to, libc::STDOUT_FILENO) < 0
                    || (stderr_to != libc::STDERR_FILENO
                        && libc::dup2(stderr_to, libc::STDERR_FILENO) < 0)
                {
                    libc::_exit(127);
                }
                // So that its exec stops it (see `release`). Where ptrace is
                // not allowed it runs on as before.
                libc::close(said[0]);
                let traced: u8 = if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == 0 {
                    b'y'
                } else {
                    b'n'
                };
                libc::write(said[1], (&traced as *const u8).cast(), 1);
                libc::close(said[1]);
                let mut b = 0u8;
                // Released (1 byte) or abandoned (EOF: the tracer died): only a release runs CMD.
                let n = libc::read(read_fd, (&mut b as *mut u8).cast(), 1);
                if n == 1 {
                    libc::execv(exe_c.as_ptr(), argv.as_ptr());
                }
                libc::_exit(127);
            }
        }
        unsafe { libc::close(read_fd) };
        unsafe { libc::close(said[1]) };
        let mut answer = 0u8;
        // SAFETY: reading one byte from our own pipe; EOF (the child died) reads as not traced.
        let n = unsafe { libc::read(said[0], (&mut answer as *mut u8).cast(), 1) };
        unsafe { libc::close(said[0]) };
        drop(out_fd);
        Ok(HeldChild {
            pid: pid as u32,
            release_fd: write_fd,
            exited: None,
            traced: n == 1 && answer == b'y',
            stopped: false,
        })
    }

    /// Lets the child exec its command, and returns once its image is
    /// mapped. Where the child could put itself under our ptrace, its exec
    /// stops it before the program's first instruction, so what needs the
    /// load address (a PIE's caller walk) is set before any map operation;
    /// `resume` lets it run. Elsewhere it runs at once, as before.
    pub fn release(&mut self) -> Result<()> {
        if self.release_fd < 0 {
            return Ok(());
        }
        let b = 1u8;
        // SAFETY: writing one byte to our own pipe.
        let n = unsafe { libc::write(self.release_fd, (&b as *const u8).cast(), 1) };
        unsafe { libc::close(self.release_fd) };
        self.release_fd = -1;
        if n != 1 {
            bail!(
                "could not start the command: {}",
                std::io::Error::last_os_error()
            );
        }
        if self.traced {
            let mut status = 0;
            // SAFETY: waiting for our own child; it stops at its exec or exits.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
            if r == self.pid as i32 {
                if libc::WIFSTOPPED(status) {
                    self.stopped = true;
                } else {
                    self.exited = Some(shell_status(status));
                }
            }
        }
        Ok(())
    }

    /// Lets a child stopped at its exec run (a no-op otherwise).
    pub fn resume(&mut self) {
        if std::mem::take(&mut self.stopped) {
            // SAFETY: detaching our own stopped tracee; the exec's SIGTRAP is dropped.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid as libc::pid_t, 0, 0) };
        }
    }

    /// The exit status once the child has ended (shell convention: 128+signal).
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.exited.is_none() {
            let mut status = 0;
            // SAFETY: reaping our own child.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 {
                self.exited = Some(shell_status(status));
            }
        }
        self.exited
    }
}

/// A wait status as a shell reports it: 128+N for signal N.
fn shell_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    }
}

impl HeldChild {
    /// Ends a command that outlived the run (duration reached, or the
    /// tracer was interrupted): SIGTERM, then SIGKILL after two seconds.
    pub fn terminate(&mut self) -> i32 {
        if let Some(status) = self.try_wait() {
            return status;
        }
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        self.resume();
        // Never leave a held child behind: closing the pipe makes it exit.
        if self.release_fd >= 0 {
            unsafe { libc::close(self.release_fd) };
            self.release_fd = -1;
        }
        if self.exited.is_none() {
            let mut status = 0;
            unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        }
    }
}
