//! Runs one in-memory API server until interrupted, writing an admin kubeconfig for `kubectl`.

use clap::Parser;
use test_apiserver::{ADMIN, Options, TestApiServer};

/// An in-memory Kubernetes API server for manual use with kubectl.
#[derive(Debug, Parser)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write the admin kubeconfig.
    #[arg(long)]
    kubeconfig_out: Option<std::path::PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    http: bool,
    /// Authorize requests with the RBAC objects stored in the server.
    #[arg(long)]
    rbac: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let options = Options {
        tls: !args.http,
        port: args.port,
        rbac: args.rbac,
        ..Options::default()
    };
    let server = TestApiServer::start(options).await?;
    let kubeconfig = server.kubeconfig(ADMIN).unwrap_or_default();
    match &args.kubeconfig_out {
        Some(path) => std::fs::write(path, &kubeconfig)?,
        None => print!("{kubeconfig}"),
    }
    eprintln!("test-apiserver listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
