//! The konnector version reported on the ClusterBinding (reference section 9.4).
//!
//! The reference derives it from a Go-style git version such as `v1.25.2+kube-bind-v0.0.15`; we
//! accept the same strings so that a backend comparing versions sees the same values.

/// The version string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse version {0:?}")]
pub struct VersionError(pub String);

/// `BinaryVersion` of the reference: `v0.0.0-…` => `v0.0.0`; otherwise the part after
/// `+kube-bind-` up to the next `-`.
pub fn binary_version(git_version: &str) -> Result<String, VersionError> {
    if git_version.starts_with("v0.0.0-") {
        return Ok("v0.0.0".to_string());
    }
    let err = || VersionError(git_version.to_string());
    let (_, suffix) = git_version.split_once('+').ok_or_else(err)?;
    if !suffix.starts_with("kube-bind") {
        return Err(err());
    }
    let rest = suffix.strip_prefix("kube-bind-").ok_or_else(err)?;
    let version = rest.split('-').next().unwrap_or_default();
    if version.is_empty() {
        return Err(err());
    }
    Ok(version.to_string())
}

/// The git version this binary reports: `KONNECTOR_GIT_VERSION` at build time, or one derived
/// from the crate version in the reference's format.
pub fn git_version() -> String {
    option_env!("KONNECTOR_GIT_VERSION")
        .map(String::from)
        .unwrap_or_else(|| format!("v1.33.0+kube-bind-v{}", env!("CARGO_PKG_VERSION")))
}

/// The message of `ValidVersion=False` (reference section 5.4).
pub fn parse_error_message(git_version: &str, err: &VersionError) -> String {
    format!("Konnector binary version string {git_version:?} cannot be parsed: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples() {
        assert_eq!(
            binary_version("v1.25.2+kube-bind-v0.0.15").unwrap(),
            "v0.0.15"
        );
        assert_eq!(
            binary_version("v0.0.0-master+$Format:%H$").unwrap(),
            "v0.0.0"
        );
        assert_eq!(
            binary_version("v1.25.2+kube-bla-v0.0.15")
                .unwrap_err()
                .to_string(),
            "failed to parse version \"v1.25.2+kube-bla-v0.0.15\""
        );
        assert!(binary_version("v1.25.2+foo").is_err());
        assert!(binary_version("v1.25.2").is_err());
        assert_eq!(
            binary_version("v1.31.0+kube-bind-v1.4.0-3-gabcdef").unwrap(),
            "v1.4.0"
        );
    }

    #[test]
    fn this_binary_reports_a_parseable_version() {
        let v = binary_version(&git_version()).unwrap();
        assert!(v.starts_with('v'), "{v}");
    }
}
