//! Where the etcd, kube-apiserver and kube-controller-manager binaries are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The folder `shared/` that sits beside the project checkout holds the packed binaries here.
const SHARED_FOLDER: &str = "shared/k8s-control-plane";

/// The server binaries a control plane is started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`; without it there is no garbage collection, no namespace
    /// deletion and no `default` ServiceAccount, but everything else works.
    pub kube_controller_manager: Option<PathBuf>,
}

/// Why no binaries were found; tests print it and skip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NotFound {
    /// A sentence that says where was looked and what was missing.
    pub reason: String,
}

impl NotFound {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

static FOUND: OnceLock<Result<Binaries, NotFound>> = OnceLock::new();

impl Binaries {
    /// Finds the binaries once per process (unpacking them may take seconds the first time).
    ///
    /// `KUBEBUILDER_ASSETS` wins when set (the envtest convention); otherwise the folder
    /// `../shared/k8s-control-plane` beside the checkout is used through its `unpack.sh`.
    pub fn find() -> Result<Binaries, NotFound> {
        FOUND.get_or_init(find_uncached).clone()
    }

    /// Uses the binaries in `dir` (`kube-controller-manager` is optional there).
    pub fn in_dir(dir: &Path) -> Result<Binaries, NotFound> {
        let need = |name: &str| -> Result<PathBuf, NotFound> {
            let path = dir.join(name);
            if is_executable(&path) {
                Ok(path)
            } else {
                Err(NotFound::new(format!(
                    "{} is missing or not executable",
                    path.display()
                )))
            }
        };
        let kcm = dir.join("kube-controller-manager");
        Ok(Binaries {
            etcd: need("etcd")?,
            kube_apiserver: need("kube-apiserver")?,
            kube_controller_manager: is_executable(&kcm).then_some(kcm),
        })
    }
}

fn find_uncached() -> Result<Binaries, NotFound> {
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let dir = PathBuf::from(assets);
        return Binaries::in_dir(&dir).map_err(|e| {
            NotFound::new(format!(
                "KUBEBUILDER_ASSETS={} does not hold the binaries: {}",
                dir.display(),
                e.reason
            ))
        });
    }
    let mut starts = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    let Some(shared) = starts.iter().find_map(|start| shared_folder_above(start)) else {
        return Err(NotFound::new(format!(
            "KUBEBUILDER_ASSETS is unset and no ../{SHARED_FOLDER}/unpack.sh beside the checkout \
             (looked above {})",
            starts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        )));
    };
    let unpack = shared.join("unpack.sh");
    let output = Command::new("bash")
        .arg(&unpack)
        .output()
        .map_err(|e| NotFound::new(format!("cannot run bash {}: {e}", unpack.display())))?;
    if !output.status.success() {
        return Err(NotFound::new(format!(
            "{} failed ({}): {}",
            unpack.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    let Some(dir) = printed.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Err(NotFound::new(format!(
            "{} printed no folder",
            unpack.display()
        )));
    };
    let dir = PathBuf::from(dir.trim());
    Binaries::in_dir(&dir).map_err(|e| {
        NotFound::new(format!(
            "{} unpacked into {}, but: {}",
            unpack.display(),
            dir.display(),
            e.reason
        ))
    })
}

/// The first `P/shared/k8s-control-plane` with an `unpack.sh`, for `P` a proper ancestor of
/// `start`: that is the folder `shared/` beside some checkout folder `X` at or above `start`.
fn shared_folder_above(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .skip(1)
        .map(|parent| parent.join(SHARED_FOLDER))
        .find(|candidate| candidate.join("unpack.sh").is_file())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_folder_is_looked_for_beside_each_ancestor() {
        let base = std::env::temp_dir().join(format!("kcp-binaries-{}", std::process::id()));
        let checkout = base.join("checkout");
        let deep = checkout.join("crates/x");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(shared_folder_above(&deep), None);
        let shared = base.join(SHARED_FOLDER);
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join("unpack.sh"), "").unwrap();
        assert_eq!(shared_folder_above(&deep), Some(shared.clone()));
        assert_eq!(shared_folder_above(&checkout), Some(shared));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_folder_without_the_binaries_is_not_found() {
        let err = Binaries::in_dir(Path::new("/nonexistent-kcp")).unwrap_err();
        assert!(err.reason.contains("/nonexistent-kcp/etcd"), "{err}");
    }
}
