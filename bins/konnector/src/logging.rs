//! Logging setup: `-v` (klog-style verbosity) and `--logging-format` mapped onto `tracing`.
//!
//! Logs go to stderr like klog's. Dependencies (kube, hyper, rustls, ...) stay quiet unless the
//! verbosity is very high, and even then never above `debug`: their trace output can contain
//! request details, and credentials must never reach the logs.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Our crates, whose level follows `-v` directly.
const OWN_CRATES: [&str; 4] = [
    "konnector",
    "cluster_topology",
    "sync_engine",
    "konnector_api",
];

/// The `tracing` filter for klog verbosity `v`: 0-2 info (2 is the reference default), 3-4
/// debug, 5 and more trace for our crates; dependencies warn, info from 5, debug from 7.
pub fn filter_directives(v: u8) -> String {
    let own = match v {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    };
    let deps = match v {
        0..=4 => "warn",
        5..=6 => "info",
        _ => "debug",
    };
    let mut directives = vec![deps.to_owned()];
    if v <= 6 {
        // kube's trace layer logs every failed response at ERROR: thousands of lines during an
        // outage, each one also reported (rate-limited) by the request's owner.
        directives.push("kube_client::client::builder=off".to_owned());
    }
    directives.extend(OWN_CRATES.iter().map(|c| format!("{c}={own}")));
    directives.join(",")
}

/// Installs the global subscriber. Called once by the binary (the engine library never does).
pub fn init(format: LogFormat, v: u8) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter_directives(v))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("failed to initialize logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_verbosity_is_info_for_us_and_warn_for_dependencies() {
        let d = filter_directives(2);
        assert!(d.starts_with("warn,"), "{d}");
        assert!(d.contains("konnector=info"));
        assert!(d.contains("sync_engine=info"));
        assert!(d.contains("cluster_topology=info"));
    }

    #[test]
    fn higher_verbosity_raises_levels_but_dependencies_never_trace() {
        assert!(filter_directives(4).contains("sync_engine=debug"));
        assert!(filter_directives(2).contains("kube_client::client::builder=off"));
        assert!(!filter_directives(7).contains("kube_client::client::builder=off"));
        assert!(filter_directives(4).starts_with("warn,"));
        assert!(filter_directives(6).contains("konnector=trace"));
        assert!(filter_directives(6).starts_with("info,"));
        assert!(filter_directives(u8::MAX).starts_with("debug,"));
        for v in 0..=u8::MAX {
            assert!(EnvFilter::try_new(filter_directives(v)).is_ok());
        }
    }
}
