//! A TCP proxy in front of an API server, to make it unreachable for the konnector alone while
//! the test (and the server) carry on: a network partition, a load balancer without backends.
//!
//! TLS passes through untouched (the proxy listens on 127.0.0.1, which the servers' certificates
//! name), so it works for `test-apiserver` and the real kube-apiserver alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards everything.
    Pass,
    /// Closes every open connection and every new one at once (a server that is gone).
    Refuse,
    /// Stops forwarding bytes: open connections hang, new ones are accepted and never answered
    /// (packets dropped on the way).
    Blackhole,
}

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    target: SocketAddr,
    mode: Arc<AtomicU8>,
    // Bumped on every mode change: connections watch it to close or freeze.
    generation: watch::Sender<u8>,
    task: JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Closes the copies of every open connection.
        self.generation.send_replace(REFUSE);
    }
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let (generation, _) = watch::channel(PASS);
        let accept_mode = mode.clone();
        let accept_gen = generation.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                match accept_mode.load(Ordering::SeqCst) {
                    REFUSE => drop(client),
                    mode => {
                        let gen_rx = accept_gen.subscribe();
                        tokio::spawn(forward(client, target, mode, gen_rx));
                    }
                }
            }
        });
        Ok(TcpProxy {
            port,
            target,
            mode,
            generation,
            task,
        })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Switches the mode; open connections follow at once.
    pub fn set(&self, mode: ProxyMode) {
        let m = match mode {
            ProxyMode::Pass => PASS,
            ProxyMode::Refuse => REFUSE,
            ProxyMode::Blackhole => BLACKHOLE,
        };
        self.mode.store(m, Ordering::SeqCst);
        self.generation.send_replace(m);
    }

    /// `kubeconfig` with its server pointed at this proxy (same scheme, host and CA).
    pub fn kubeconfig(&self, kubeconfig: &str) -> anyhow::Result<String> {
        let from = format!("127.0.0.1:{}", self.target.port());
        anyhow::ensure!(
            kubeconfig.contains(&from),
            "the kubeconfig does not name the proxied server {from}"
        );
        Ok(kubeconfig.replace(&from, &format!("127.0.0.1:{}", self.port)))
    }
}

/// The server port named in `kubeconfig` (`server: https://127.0.0.1:PORT`).
pub fn server_addr(kubeconfig: &str) -> anyhow::Result<SocketAddr> {
    let value: serde_yaml::Value = serde_yaml::from_str(kubeconfig)?;
    let server = value["clusters"][0]["cluster"]["server"]
        .as_str()
        .context("kubeconfig without clusters[0].cluster.server")?;
    let port: u16 = server
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("server {server} without a port"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn forward(client: TcpStream, target: SocketAddr, mode: u8, mut gen_rx: watch::Receiver<u8>) {
    if mode == BLACKHOLE {
        // Accepted, never answered, until the proxy passes again (then closed: the client
        // reconnects) or refuses.
        let _ = gen_rx.wait_for(|m| *m != BLACKHOLE).await;
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let copy = async {
        tokio::select! {
            _ = tokio::io::copy(&mut cr, &mut sw) => {}
            _ = tokio::io::copy(&mut sr, &mut cw) => {}
        }
    };
    let blackholed = tokio::select! {
        () = copy => false,
        m = gen_rx.wait_for(|m| *m != PASS) => m.is_ok_and(|m| *m == BLACKHOLE),
    };
    if blackholed {
        // Stop copying, hold the sockets open until the mode changes again.
        let _ = gen_rx.wait_for(|m| *m != BLACKHOLE).await;
    }
    let _ = cw.shutdown().await;
    let _ = sw.shutdown().await;
}
