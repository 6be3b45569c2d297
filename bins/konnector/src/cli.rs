//! Command line flags (reference §1.1, §1.2) and the small parsing decisions around them.
//!
//! The names and defaults are the reference's so that a deployment of the Go konnector keeps
//! working when its image is swapped. Only `--health-probe-bind-address` and
//! `--metrics-bind-address` (decisions H1) and `--max-concurrent-requests` are new.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};
use cluster_topology::{ClientOptions, ModeFlags};

/// Log output format (`--logging-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the reference's default).
    Text,
    /// One JSON object per line.
    Json,
}

/// The konnector's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "konnector",
    about = "Connect remote API services to local APIs",
    disable_version_flag = true
)]
pub struct Cli {
    /// Kubeconfig path. Default mode: the app (= binding) cluster. Control-plane mode: the
    /// control plane. Empty: $KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    #[arg(long, default_value = "")]
    pub kubeconfig: String,

    /// Run in the control plane and read the app cluster kubeconfig from a Secret.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, default_value_t = false)]
    pub control_plane_mode: bool,

    /// Name of the control-plane Secret holding the app cluster kubeconfig (control-plane mode).
    #[arg(long, default_value = "")]
    pub app_cluster_kubeconfig_secret_name: String,

    /// Namespace of that Secret (control-plane mode).
    #[arg(long, default_value = "")]
    pub app_cluster_kubeconfig_secret_namespace: String,

    /// Data key of the kubeconfig inside that Secret (control-plane mode).
    #[arg(long, default_value = konnector_api::strings::KUBECONFIG_KEY)]
    pub app_cluster_kubeconfig_secret_key: String,

    /// Namespace on the control plane holding the binding root resources (control-plane mode).
    #[arg(long, default_value = "")]
    pub binding_root_namespace: String,

    /// Fleet mode (with --control-plane-mode): serve every app cluster an AppClusterBinding on
    /// the control plane defines, sharded over the replicas by each app cluster's Lease.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = ArgAction::Set, default_value_t = false)]
    pub fleet: bool,

    /// Fleet mode: serve only the AppClusterBindings this label selector selects.
    #[arg(long, default_value = "")]
    pub fleet_selector: String,

    /// Name of the leader-election Lease (fleet mode: of each app cluster's Lease in its
    /// binding root namespace).
    #[arg(long, default_value = "klutch-bind")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease ($POD_NAMESPACE, else kube-system).
    #[arg(long, default_value_t = default_lease_namespace(std::env::var("POD_NAMESPACE").ok()))]
    pub lease_namespace: String,

    /// Address of the health server (/healthz, /readyz); `:8080` means every interface, `0`
    /// disables it.
    #[arg(long, default_value = ":8080")]
    pub health_probe_bind_address: String,

    /// Address of the metrics server (/metrics); `0` disables it.
    #[arg(long, default_value = ":8081")]
    pub metrics_bind_address: String,

    /// Most API requests in flight at once per cluster (the app cluster, each provider, the
    /// control plane), not counting watches. When an API server throttles (429, e.g. API
    /// Priority and Fairness), the konnector waits for its Retry-After, lowers its own limit
    /// below this one and raises it again as requests succeed. At least 1.
    #[arg(long, default_value = "32", value_parser = parse_max_concurrent_requests)]
    pub max_concurrent_requests: NonZeroUsize,

    /// Objects of one bound resource reconciled at once. A reconcile mostly waits for its one or
    /// two API round trips, so a burst of objects needs several; what reaches each server stays
    /// bounded by --max-concurrent-requests. At least 1.
    #[arg(long, default_value = "32", value_parser = parse_sync_workers)]
    pub sync_workers: NonZeroUsize,

    /// Log verbosity (klog style: 2 is the default, 4 debug, 6 and more trace).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    pub verbosity: u8,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub logging_format: LogFormat,

    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,

    // Inherited klog/component-base flags: accepted so that existing deployments keep starting,
    // and ignored.
    #[arg(long, hide = true)]
    vmodule: Option<String>,
    #[arg(long, hide = true)]
    log_flush_frequency: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    log_text_split_stream: Option<String>,
    #[arg(long, hide = true)]
    log_text_info_buffer_size: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    log_json_split_stream: Option<String>,
    #[arg(long, hide = true)]
    log_json_info_buffer_size: Option<String>,
}

impl Cli {
    /// Parses `args` (including the program name) after [`normalize_args`].
    pub fn try_parse_normalized<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::try_parse_from(normalize_args(args.into_iter().map(Into::into)))
    }

    /// The mode flags, for validation by `cluster-topology` (which owns the rules and messages).
    pub fn mode_flags(&self) -> ModeFlags {
        ModeFlags {
            control_plane_mode: self.control_plane_mode,
            app_cluster_kubeconfig_secret_name: self.app_cluster_kubeconfig_secret_name.clone(),
            app_cluster_kubeconfig_secret_namespace: self
                .app_cluster_kubeconfig_secret_namespace
                .clone(),
            app_cluster_kubeconfig_secret_key: self.app_cluster_kubeconfig_secret_key.clone(),
            binding_root_namespace: self.binding_root_namespace.clone(),
            fleet: self.fleet,
            fleet_selector: self.fleet_selector.clone(),
        }
    }

    /// How the konnector's clients treat each API server (`--max-concurrent-requests`); the
    /// cluster label is set per cluster.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::default().with_max_concurrent_requests(self.max_concurrent_requests)
    }

    /// `--kubeconfig`, `None` when empty (standard loading rules).
    pub fn kubeconfig_path(&self) -> Option<PathBuf> {
        (!self.kubeconfig.is_empty()).then(|| PathBuf::from(&self.kubeconfig))
    }
}

/// The `--lease-namespace` default: `$POD_NAMESPACE`, or `kube-system` when unset or empty.
pub fn default_lease_namespace(pod_namespace: Option<String>) -> String {
    pod_namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "kube-system".to_owned())
}

/// `--sync-workers`: a positive whole number (0 would reconcile nothing).
fn parse_sync_workers(value: &str) -> Result<NonZeroUsize, String> {
    positive(value, "with 0 no object would ever be synced")
}

/// `--max-concurrent-requests`: a positive whole number (0 would let no request through).
fn parse_max_concurrent_requests(value: &str) -> Result<NonZeroUsize, String> {
    positive(
        value,
        "with 0 no request could ever be sent to an API server",
    )
}

fn positive(value: &str, why_not_zero: &str) -> Result<NonZeroUsize, String> {
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| format!("expected a positive whole number, got {value:?}"))?;
    NonZeroUsize::new(n).ok_or_else(|| format!("must be at least 1: {why_not_zero}"))
}

/// Accepts `_` for `-` in long flag names (`--control_plane_mode`), as the reference's
/// `WordSepNormalizeFunc` does. Values and everything after a `--` terminator are kept as given.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut terminated = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || terminated || !arg.starts_with("--") {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            terminated = true;
            out.push(arg);
            continue;
        }
        let normalized = match arg.split_once('=') {
            Some((name, value)) => format!("{}={value}", name.replace('_', "-")),
            None => arg.replace('_', "-"),
        };
        out.push(normalized);
    }
    out
}

/// A listen address flag that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} {value:?}: {reason}")]
pub struct AddressError {
    /// The flag, e.g. `--health-probe-bind-address`.
    pub flag: &'static str,
    /// What was given.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

/// Parses a Go-style listen address: `:8080` (every interface), `127.0.0.1:8080`,
/// `[::1]:8080`, `localhost:8080`. Returns `None` for `0`, which disables the listener (the
/// controller-runtime convention for metrics).
pub fn parse_bind_address(
    flag: &'static str,
    value: &str,
) -> Result<Option<SocketAddr>, AddressError> {
    let err = |reason: &str| AddressError {
        flag,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value == "0" {
        return Ok(None);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(err("expected [host]:port"));
    };
    let port: u16 = port.parse().map_err(|_| err("invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Ok(Some(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, port)));
    }
    // A host name (e.g. `localhost`): resolved once, at startup.
    (host, port)
        .to_socket_addrs()
        .map_err(|e| err(&e.to_string()))?
        .next()
        .map(Some)
        .ok_or_else(|| err("host name does not resolve"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_normalized(std::iter::once("konnector").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_references() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.kubeconfig, "");
        assert!(!cli.control_plane_mode);
        assert_eq!(cli.app_cluster_kubeconfig_secret_name, "");
        assert_eq!(cli.app_cluster_kubeconfig_secret_namespace, "");
        assert_eq!(cli.app_cluster_kubeconfig_secret_key, "kubeconfig");
        assert_eq!(cli.binding_root_namespace, "");
        assert_eq!(cli.lease_name, "klutch-bind");
        assert_eq!(cli.health_probe_bind_address, ":8080");
        assert_eq!(cli.metrics_bind_address, ":8081");
        assert_eq!(cli.verbosity, 2);
        assert_eq!(cli.max_concurrent_requests.get(), 32);
        assert_eq!(cli.client_options(), ClientOptions::default());
        assert_eq!(cli.logging_format, LogFormat::Text);
        assert!(!cli.version);
        assert_eq!(cli.kubeconfig_path(), None);
    }

    #[test]
    fn lease_namespace_defaults_to_pod_namespace_then_kube_system() {
        assert_eq!(
            default_lease_namespace(Some("klutch-bind".into())),
            "klutch-bind"
        );
        assert_eq!(default_lease_namespace(Some(String::new())), "kube-system");
        assert_eq!(default_lease_namespace(None), "kube-system");
    }

    #[test]
    fn underscores_are_accepted_in_flag_names_only() {
        assert_eq!(
            normalize_args(
                [
                    "konnector_bin",
                    "--control_plane_mode",
                    "--app_cluster_kubeconfig_secret_name=my_secret",
                    "--binding_root_namespace",
                    "ns_x",
                    "--",
                    "--keep_me"
                ]
                .map(String::from)
            ),
            [
                "konnector_bin",
                "--control-plane-mode",
                "--app-cluster-kubeconfig-secret-name=my_secret",
                "--binding-root-namespace",
                "ns_x",
                "--",
                "--keep_me"
            ]
        );
        let cli = parse(&[
            "--lease_name=x_y",
            "--app_cluster_kubeconfig_secret_key",
            "k_1",
        ])
        .unwrap();
        assert_eq!(cli.lease_name, "x_y");
        assert_eq!(cli.app_cluster_kubeconfig_secret_key, "k_1");
    }

    #[test]
    fn boolean_flag_takes_an_optional_value_like_pflag() {
        assert!(parse(&["--control-plane-mode"]).unwrap().control_plane_mode);
        assert!(
            parse(&["--control-plane-mode=true"])
                .unwrap()
                .control_plane_mode
        );
        assert!(
            !parse(&["--control-plane-mode=false"])
                .unwrap()
                .control_plane_mode
        );
        // Without `=`, the next argument is not swallowed as the flag's value.
        let cli = parse(&["--control-plane-mode", "--binding-root-namespace", "r"]).unwrap();
        assert!(cli.control_plane_mode);
        assert_eq!(cli.binding_root_namespace, "r");
    }

    #[test]
    fn verbosity_and_format_are_parsed_klog_style() {
        assert_eq!(parse(&["-v", "4"]).unwrap().verbosity, 4);
        assert_eq!(parse(&["-v=5"]).unwrap().verbosity, 5);
        assert_eq!(parse(&["--v=6"]).unwrap().verbosity, 6);
        assert_eq!(
            parse(&["--logging-format=json"]).unwrap().logging_format,
            LogFormat::Json
        );
        assert!(parse(&["--logging-format=xml"]).is_err());
    }

    #[test]
    fn inherited_klog_flags_are_accepted_and_ignored() {
        parse(&[
            "--vmodule=foo=3",
            "--log-flush-frequency=5s",
            "--log-text-split-stream",
            "--log-json-split-stream=false",
            "--log-text-info-buffer-size=0",
            "--log-json-info-buffer-size=0",
        ])
        .unwrap();
    }

    #[test]
    fn mode_flags_carry_every_control_plane_value() {
        let cli = parse(&[
            "--control-plane-mode",
            "--app-cluster-kubeconfig-secret-name=s",
            "--app-cluster-kubeconfig-secret-namespace=ns",
            "--app-cluster-kubeconfig-secret-key=k",
            "--binding-root-namespace=root",
            "--kubeconfig=/tmp/kc",
        ])
        .unwrap();
        let flags = cli.mode_flags();
        assert!(flags.control_plane_mode);
        assert_eq!(flags.app_cluster_kubeconfig_secret_name, "s");
        assert_eq!(flags.app_cluster_kubeconfig_secret_namespace, "ns");
        assert_eq!(flags.app_cluster_kubeconfig_secret_key, "k");
        assert_eq!(flags.binding_root_namespace, "root");
        assert_eq!(cli.kubeconfig_path(), Some(PathBuf::from("/tmp/kc")));
    }

    #[test]
    fn max_concurrent_requests_is_positive() {
        let cli = parse(&["--max-concurrent-requests=5"]).unwrap();
        assert_eq!(cli.client_options().max_concurrent_requests.get(), 5);
        assert_eq!(
            parse(&["--max_concurrent_requests", "7"])
                .unwrap()
                .max_concurrent_requests
                .get(),
            7
        );
        let e = parse(&["--max-concurrent-requests=0"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--max-concurrent-requests")
                && e.contains("must be at least 1: with 0 no request could ever be sent"),
            "{e}"
        );
        assert_eq!(parse(&[]).unwrap().sync_workers.get(), 32);
        assert_eq!(
            parse(&["--sync-workers=64"]).unwrap().sync_workers.get(),
            64
        );
        let e = parse(&["--sync-workers=0"]).unwrap_err().to_string();
        assert!(
            e.contains("--sync-workers") && e.contains("no object would ever be synced"),
            "{e}"
        );
        for bad in ["-1", "many", ""] {
            let e = parse(&[&format!("--max-concurrent-requests={bad}")])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--max-concurrent-requests") && e.contains("positive whole number"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_flags_and_positional_arguments_are_errors() {
        assert!(parse(&["--no-such-flag"]).is_err());
        assert!(parse(&["positional"]).is_err());
    }

    #[test]
    fn go_style_listen_addresses() {
        let f = "--health-probe-bind-address";
        assert_eq!(
            parse_bind_address(f, ":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address(f, "127.0.0.1:9000").unwrap(),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address(f, "[::1]:9000").unwrap(),
            Some("[::1]:9000".parse().unwrap())
        );
        assert!(parse_bind_address(f, "localhost:9000").unwrap().is_some());
        assert_eq!(parse_bind_address(f, "0").unwrap(), None);
        for bad in ["8080", ":http", ":99999", "", "1.2.3.4"] {
            let e = parse_bind_address(f, bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("invalid --health-probe-bind-address"),
                "{e}"
            );
        }
    }
}
