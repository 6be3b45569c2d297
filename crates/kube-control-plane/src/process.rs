//! Server processes: spawning into one process group, stopping by pid, and the watchdog that
//! kills them when the test process is gone.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, io_err};

/// How long a server gets between SIGTERM and SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(3);

/// One running server.
#[derive(Debug)]
pub(crate) struct Proc {
    pub name: &'static str,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `program args` with stdout and stderr appended to `log`, in process group `pgid`
    /// (`None`: a new group led by this process).
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
        pgid: Option<u32>,
    ) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("open {}", log.display())))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(pgid.map_or(0, |p| p as i32));
        let child = command
            .spawn()
            .map_err(io_err(format!("spawn {}", program.display())))?;
        Ok(Self {
            name,
            child,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (it is reaped then).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }
}

/// Sends `signal` (e.g. `TERM`) to `pid` with the `kill` command; the crate has no unsafe code,
/// so no `libc::kill`. Only ever called for a child that has not been reaped yet, so the pid
/// cannot have been reused.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops `procs` together: SIGTERM, then SIGKILL for those still alive after [`GRACE`].
/// Blocking; returns once all are reaped.
/// SIGKILLs `proc` and reaps it: a crash, with no graceful end of its connections.
pub(crate) fn kill(proc: &mut Proc) {
    if proc.exit_status().is_none() {
        let _ = proc.child.kill();
        proc.exited = proc.child.wait().ok();
    }
}

pub(crate) fn terminate(procs: &mut [&mut Proc]) {
    for p in procs.iter_mut() {
        if p.exit_status().is_none() {
            signal(p.pid(), "TERM");
        }
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && procs.iter_mut().any(|p| p.exit_status().is_none()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in procs.iter_mut() {
        if p.exit_status().is_none() {
            let _ = p.child.kill();
            p.exited = p.child.wait().ok();
        }
    }
}

/// A `sh` that waits for end-of-file on its stdin and then SIGKILLs a process group. Only this
/// process holds the pipe's write end (std opens it close-on-exec, so no other child inherits
/// it), and the kernel closes it when this process ends in whatever way, even by SIGKILL or
/// `std::process::exit` with the control plane in a `static`. No polling.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    pub fn spawn(pgid: u32) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            // No `--` before the negative pid: dash's kill rejects it; bash accepts this too.
            .arg(r#"read -r _ignored; kill -KILL "-$1" 2>/dev/null; exit 0"#)
            .arg("kube-control-plane-watchdog")
            .arg(pgid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C to the terminal's group must not take the watchdog down
            // before it has done its work.
            .process_group(0)
            .spawn()
            .map_err(io_err("spawn the watchdog (sh)"))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Lets the watchdog go (its group kill is a no-op once the servers are gone) and reaps it.
    pub fn release(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of `path`, or a note why there are none.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({e})"),
    }
}

/// Tails of the given logs, each under a header line naming its file.
pub(crate) fn tails(logs: &[PathBuf], lines: usize) -> String {
    let mut out = String::new();
    for log in logs {
        if log.exists() {
            out.push_str(&format!(
                "\n----- last {lines} lines of {}\n{}\n",
                log.display(),
                tail(log, lines)
            ));
        }
    }
    out
}
