//! Control-plane flag validation (reference §1.3) and the resulting [`Mode`].
//!
//! Kept free of clap so that the binary owns the flag definitions while the rules and the exact
//! messages live here, next to the code that depends on them.

use std::fmt;

/// A key inside a namespaced Secret (`namespace/name`, data key `key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key in `data`.
    pub key: String,
}

impl SecretKeyRef {
    /// A reference to `key` in Secret `namespace/name`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            key: key.into(),
        }
    }
}

/// Formats as `<namespace>/<name>`, the way every konnector message names a Secret.
impl fmt::Display for SecretKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The mode the konnector runs in, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The konnector runs in the app cluster; the local config serves the binding and app roles.
    Default,
    /// The konnector runs in the control plane; the app cluster is reached with a kubeconfig read
    /// from a control-plane Secret, and bindings live in `binding_root_namespace`.
    ControlPlane {
        /// Where the app cluster kubeconfig is stored (on the control plane).
        app_kubeconfig_secret: SecretKeyRef,
        /// Namespace on the control plane holding the binding root resources.
        binding_root_namespace: String,
    },
    /// Fleet mode (`--control-plane-mode --fleet`): the konnector runs in the control plane and
    /// serves every app cluster an `AppClusterBinding` selected by `selector` defines, each as
    /// a control-plane-mode konnector would (see [`crate::fleet`]).
    Fleet {
        /// `--fleet-selector`.
        selector: crate::fleet::LabelSelector,
    },
}

impl Mode {
    /// Whether this is control-plane mode.
    pub fn is_control_plane(&self) -> bool {
        matches!(self, Self::ControlPlane { .. })
    }

    /// Whether this is fleet mode.
    pub fn is_fleet(&self) -> bool {
        matches!(self, Self::Fleet { .. })
    }
}

/// The mode-related command line flags as given (reference §1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeFlags {
    /// `--control-plane-mode`.
    pub control_plane_mode: bool,
    /// `--app-cluster-kubeconfig-secret-name`.
    pub app_cluster_kubeconfig_secret_name: String,
    /// `--app-cluster-kubeconfig-secret-namespace`.
    pub app_cluster_kubeconfig_secret_namespace: String,
    /// `--app-cluster-kubeconfig-secret-key`.
    pub app_cluster_kubeconfig_secret_key: String,
    /// `--binding-root-namespace`.
    pub binding_root_namespace: String,
    /// `--fleet`.
    pub fleet: bool,
    /// `--fleet-selector`.
    pub fleet_selector: String,
}

impl Default for ModeFlags {
    /// The flag defaults of the reference (the key defaults to `kubeconfig`).
    fn default() -> Self {
        Self {
            control_plane_mode: false,
            app_cluster_kubeconfig_secret_name: String::new(),
            app_cluster_kubeconfig_secret_namespace: String::new(),
            app_cluster_kubeconfig_secret_key: konnector_api::strings::KUBECONFIG_KEY.to_owned(),
            binding_root_namespace: String::new(),
            fleet: false,
            fleet_selector: String::new(),
        }
    }
}

/// A control-plane flag combination the konnector refuses (exact reference messages, and ours
/// for fleet mode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `--app-cluster-kubeconfig-secret-name` is empty.
    #[error(
        "--app-cluster-kubeconfig-secret-name is required when --control-plane-mode is enabled"
    )]
    MissingSecretName,
    /// `--app-cluster-kubeconfig-secret-namespace` is empty.
    #[error(
        "--app-cluster-kubeconfig-secret-namespace is required when --control-plane-mode is enabled"
    )]
    MissingSecretNamespace,
    /// `--app-cluster-kubeconfig-secret-key` is empty.
    #[error("--app-cluster-kubeconfig-secret-key cannot be empty")]
    EmptySecretKey,
    /// `--binding-root-namespace` is empty.
    #[error("--binding-root-namespace is required when --control-plane-mode is enabled")]
    MissingBindingRootNamespace,
    /// `--fleet` without `--control-plane-mode`.
    #[error("--fleet requires --control-plane-mode")]
    FleetWithoutControlPlaneMode,
    /// `--fleet-selector` without `--fleet`.
    #[error("--fleet-selector requires --fleet")]
    SelectorWithoutFleet,
    /// A per-cluster control-plane flag given with `--fleet`.
    #[error(
        "{flag} does not apply with --fleet: each AppClusterBinding names its app cluster's kubeconfig Secret and binding root namespace"
    )]
    NotWithFleet {
        /// The flag.
        flag: &'static str,
    },
    /// `--fleet-selector` does not parse.
    #[error("--fleet-selector: {0}")]
    Selector(crate::fleet::SelectorError),
}

impl ModeFlags {
    /// Validates the flags in the reference's order (first failure wins) and returns the mode.
    /// In default mode nothing is checked and the control-plane flags are ignored.
    pub fn validate(&self) -> Result<Mode, FlagError> {
        if !self.fleet_selector.is_empty() && !self.fleet {
            return Err(FlagError::SelectorWithoutFleet);
        }
        if self.fleet {
            return self.validate_fleet();
        }
        if !self.control_plane_mode {
            return Ok(Mode::Default);
        }
        if self.app_cluster_kubeconfig_secret_name.is_empty() {
            return Err(FlagError::MissingSecretName);
        }
        if self.app_cluster_kubeconfig_secret_namespace.is_empty() {
            return Err(FlagError::MissingSecretNamespace);
        }
        if self.app_cluster_kubeconfig_secret_key.is_empty() {
            return Err(FlagError::EmptySecretKey);
        }
        if self.binding_root_namespace.is_empty() {
            return Err(FlagError::MissingBindingRootNamespace);
        }
        Ok(Mode::ControlPlane {
            app_kubeconfig_secret: SecretKeyRef::new(
                &self.app_cluster_kubeconfig_secret_namespace,
                &self.app_cluster_kubeconfig_secret_name,
                &self.app_cluster_kubeconfig_secret_key,
            ),
            binding_root_namespace: self.binding_root_namespace.clone(),
        })
    }

    /// Fleet mode: control-plane mode without any per-cluster flag (the key only at its
    /// default), and a selector that parses.
    fn validate_fleet(&self) -> Result<Mode, FlagError> {
        if !self.control_plane_mode {
            return Err(FlagError::FleetWithoutControlPlaneMode);
        }
        let per_cluster = [
            (
                "--app-cluster-kubeconfig-secret-name",
                !self.app_cluster_kubeconfig_secret_name.is_empty(),
            ),
            (
                "--app-cluster-kubeconfig-secret-namespace",
                !self.app_cluster_kubeconfig_secret_namespace.is_empty(),
            ),
            (
                "--app-cluster-kubeconfig-secret-key",
                self.app_cluster_kubeconfig_secret_key != konnector_api::strings::KUBECONFIG_KEY,
            ),
            (
                "--binding-root-namespace",
                !self.binding_root_namespace.is_empty(),
            ),
        ];
        if let Some((flag, _)) = per_cluster.iter().find(|(_, given)| *given) {
            return Err(FlagError::NotWithFleet { flag });
        }
        let selector = crate::fleet::LabelSelector::parse(&self.fleet_selector)
            .map_err(FlagError::Selector)?;
        Ok(Mode::Fleet { selector })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> ModeFlags {
        ModeFlags {
            control_plane_mode: true,
            app_cluster_kubeconfig_secret_name: "app-kubeconfig".into(),
            app_cluster_kubeconfig_secret_namespace: "klutch-system".into(),
            app_cluster_kubeconfig_secret_key: "kubeconfig".into(),
            binding_root_namespace: "klutch-bind-ns-acb".into(),
            ..ModeFlags::default()
        }
    }

    fn fleet() -> ModeFlags {
        ModeFlags {
            control_plane_mode: true,
            fleet: true,
            ..ModeFlags::default()
        }
    }

    #[test]
    fn fleet_mode_takes_no_per_cluster_flag() {
        assert!(fleet().validate().is_ok_and(|m| m.is_fleet()));
        let selected = ModeFlags {
            fleet_selector: "tier=gold".into(),
            ..fleet()
        };
        assert!(matches!(selected.validate(), Ok(Mode::Fleet { .. })));
        let cases = [
            (ModeFlags { control_plane_mode: false, ..fleet() }, "--fleet requires --control-plane-mode".to_owned()),
            (ModeFlags { fleet: false, fleet_selector: "a=b".into(), ..fleet() }, "--fleet-selector requires --fleet".to_owned()),
            (ModeFlags { fleet_selector: "a in b".into(), ..fleet() }, "--fleet-selector: invalid label selector \"a in b\": \"a in b\": expected a list in parentheses".to_owned()),
        ]
        .into_iter()
        .chain(
            [
                ("--app-cluster-kubeconfig-secret-name", ModeFlags { app_cluster_kubeconfig_secret_name: "x".into(), ..fleet() }),
                ("--app-cluster-kubeconfig-secret-namespace", ModeFlags { app_cluster_kubeconfig_secret_namespace: "x".into(), ..fleet() }),
                ("--app-cluster-kubeconfig-secret-key", ModeFlags { app_cluster_kubeconfig_secret_key: "x".into(), ..fleet() }),
                ("--binding-root-namespace", ModeFlags { binding_root_namespace: "x".into(), ..fleet() }),
            ]
            .map(|(flag, flags)| (flags, format!("{flag} does not apply with --fleet: each AppClusterBinding names its app cluster's kubeconfig Secret and binding root namespace"))),
        );
        for (flags, message) in cases {
            match flags.validate() {
                Err(e) => assert_eq!(e.to_string(), message),
                Ok(mode) => panic!("expected {message:?}, got {mode:?}"),
            }
        }
    }

    #[test]
    fn default_mode_validates_nothing() {
        let flags = ModeFlags {
            control_plane_mode: false,
            app_cluster_kubeconfig_secret_key: String::new(),
            ..ModeFlags::default()
        };
        assert_eq!(flags.validate(), Ok(Mode::Default));
        assert_eq!(ModeFlags::default().validate(), Ok(Mode::Default));
    }

    #[test]
    fn default_key_is_kubeconfig() {
        assert_eq!(
            ModeFlags::default().app_cluster_kubeconfig_secret_key,
            "kubeconfig"
        );
    }

    #[test]
    fn complete_control_plane_flags_give_control_plane_mode() {
        let mode = complete().validate();
        assert_eq!(
            mode,
            Ok(Mode::ControlPlane {
                app_kubeconfig_secret: SecretKeyRef::new(
                    "klutch-system",
                    "app-kubeconfig",
                    "kubeconfig"
                ),
                binding_root_namespace: "klutch-bind-ns-acb".into(),
            })
        );
        assert!(mode.is_ok_and(|m| m.is_control_plane()));
    }

    #[test]
    fn each_message_is_exact() {
        let cases = [
            (
                ModeFlags {
                    app_cluster_kubeconfig_secret_name: String::new(),
                    ..complete()
                },
                "--app-cluster-kubeconfig-secret-name is required when --control-plane-mode is enabled",
            ),
            (
                ModeFlags {
                    app_cluster_kubeconfig_secret_namespace: String::new(),
                    ..complete()
                },
                "--app-cluster-kubeconfig-secret-namespace is required when --control-plane-mode is enabled",
            ),
            (
                ModeFlags {
                    app_cluster_kubeconfig_secret_key: String::new(),
                    ..complete()
                },
                "--app-cluster-kubeconfig-secret-key cannot be empty",
            ),
            (
                ModeFlags {
                    binding_root_namespace: String::new(),
                    ..complete()
                },
                "--binding-root-namespace is required when --control-plane-mode is enabled",
            ),
        ];
        for (flags, message) in cases {
            match flags.validate() {
                Err(e) => assert_eq!(e.to_string(), message),
                Ok(mode) => panic!("expected {message:?}, got {mode:?}"),
            }
        }
    }

    #[test]
    fn first_failure_wins_in_reference_order() {
        let all_empty = ModeFlags {
            control_plane_mode: true,
            app_cluster_kubeconfig_secret_name: String::new(),
            app_cluster_kubeconfig_secret_namespace: String::new(),
            app_cluster_kubeconfig_secret_key: String::new(),
            binding_root_namespace: String::new(),
            ..ModeFlags::default()
        };
        assert_eq!(all_empty.validate(), Err(FlagError::MissingSecretName));
        let name_set = ModeFlags {
            app_cluster_kubeconfig_secret_name: "n".into(),
            ..all_empty.clone()
        };
        assert_eq!(name_set.validate(), Err(FlagError::MissingSecretNamespace));
        let ns_set = ModeFlags {
            app_cluster_kubeconfig_secret_namespace: "ns".into(),
            ..name_set
        };
        assert_eq!(ns_set.validate(), Err(FlagError::EmptySecretKey));
        let key_set = ModeFlags {
            app_cluster_kubeconfig_secret_key: "k".into(),
            ..ns_set
        };
        assert_eq!(
            key_set.validate(),
            Err(FlagError::MissingBindingRootNamespace)
        );
    }

    #[test]
    fn secret_ref_displays_namespace_slash_name() {
        assert_eq!(SecretKeyRef::new("ns", "s", "k").to_string(), "ns/s");
    }
}
