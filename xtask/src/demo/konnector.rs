//! Building and running the real `konnector` binary as a child process: its output is kept (the
//! last lines are shown when a step fails), `/healthz` is polled, and it is stopped with SIGTERM,
//! then killed if it does not exit in time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How many lines of konnector output are kept for error reports.
const KEPT_LINES: usize = 200;

/// Builds the konnector (debug profile) with the cargo that runs this xtask and returns the
/// binary's path. Cargo's own progress goes to the terminal, so a first build is not silent.
pub fn build(repo: &Path) -> Result<PathBuf> {
    build_profile(repo, false)
}

/// Like [`build`], with the release profile when `release` (what users run, and what a
/// benchmark must measure).
pub fn build_profile(repo: &Path, release: bool) -> Result<PathBuf> {
    build_for(repo, release, None, &[])
}

/// Like [`build_profile`], for `target` (the host's when `None`), with `env` set for cargo (e.g.
/// the C compiler of a cross target).
pub fn build_for(
    repo: &Path,
    release: bool,
    target: Option<&str>,
    env: &[(&str, &str)],
) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(&cargo);
    command
        .args(["build", "--package", "konnector", "--bin", "konnector"])
        .current_dir(repo)
        .envs(env.iter().copied());
    if release {
        command.arg("--release");
    }
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    // `cargo run` gave this process xtask's package variables (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...). Build scripts such as ring's rerun when those change, so passing
    // them on would rebuild half the dependency tree here and again in every other build that
    // shares the target directory.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || key == "CARGO_PRIMARY_PACKAGE"
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .status()
        .with_context(|| format!("running {} build -p konnector", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!("`cargo build -p konnector` failed ({status})");
    }
    let bin = binary_path(repo, release, target);
    if !bin.is_file() {
        bail!(
            "built the konnector but found no binary at {}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Where cargo puts the konnector built for `target` (`CARGO_TARGET_DIR` honoured).
pub fn binary_path(repo: &Path, release: bool, target: Option<&str>) -> PathBuf {
    let mut dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                repo.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| repo.join("target"));
    if let Some(target) = target {
        dir.push(target);
    }
    dir.join(if release { "release" } else { "debug" })
        .join(format!("konnector{}", std::env::consts::EXE_SUFFIX))
}

/// The tail of a process's stdout and stderr, interleaved as the lines arrive.
#[derive(Debug, Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    fn last(&self, n: usize) -> Vec<String> {
        self.0
            .lock()
            .map(|lines| {
                lines
                    .iter()
                    .skip(lines.len().saturating_sub(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A running konnector; killed if dropped without [`Konnector::stop`].
#[derive(Debug)]
pub struct Konnector {
    child: Child,
    tail: Tail,
}

impl Konnector {
    /// Starts `bin` with `args`.
    /// `HOME` points into `home` and `KUBECONFIG` is removed, so a developer's own
    /// `~/.kube/config` can never be picked up by mistake.
    pub fn spawn(bin: &Path, args: &[String], home: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAMESPACE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let tail = Tail::default();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(out, tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(err, tail.clone()));
        }
        Ok(Self { child, tail })
    }

    /// The process id (for the `--keep` message).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last `n` lines the konnector printed.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.tail.last(n)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM (through `kill`, which keeps xtask free of unsafe code), then SIGKILL after
    /// `grace`. Returns the exit status and whether the konnector exited on its own.
    pub async fn stop(mut self, grace: Duration) -> Result<(ExitStatus, bool)> {
        if let Some(status) = self.exited() {
            return Ok((status, true));
        }
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok((status?, true)),
            Err(_) => {
                self.child.kill().await.context("killing the konnector")?;
                Ok((self.child.wait().await?, false))
            }
        }
    }
}

async fn capture(reader: impl tokio::io::AsyncRead + Unpin, tail: Tail) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tail.push(line);
    }
}

/// Whether `GET /healthz` on the konnector's health address answers 200.
pub async fn healthy(addr: SocketAddr) -> bool {
    matches!(http_status(addr, "/healthz").await, Ok(200))
}

/// The status code of a plain HTTP/1.1 `GET` (enough for the konnector's health server).
async fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .context("health check timed out")??;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP response")
}

/// A free port on 127.0.0.1 (bound and released; the konnector binds it right after).
pub fn free_local_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
