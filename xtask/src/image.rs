//! `cargo xtask image [--no-build]`: the container image the chart points at, built from what
//! this machine can make, and checked.
//!
//! 1. A static (musl) release `konnector` (`--target x86_64-unknown-linux-musl`).
//! 2. An OCI image `FROM scratch` holding only `/konnector`, built with `buildah` (no daemon,
//!    `vfs` storage under `target/image/`): non-root numeric user, entrypoint `/konnector`, the
//!    health and metrics ports, and the OCI labels (source, version, revision, licenses). It is
//!    written as an OCI archive, `target/image/konnector-<version>.oci.tar`, tagged
//!    `<IMAGE_REPOSITORY>:<version>`.
//! 3. The archive checked as a registry would see it: `index.json`, the manifest and the config
//!    by digest (user, entrypoint, ports, labels), one layer holding only the binary (no shell),
//!    the image about the size of the binary. The binary is extracted from the layer, must report
//!    `<version>`, and runs the demo's default-mode scenario against in-memory clusters.
//! 4. The chart packaged as `helm package` would, `target/image/konnector-<chart version>.tgz`,
//!    its `appVersion` being the image's tag.
//!
//! The Dockerfile builds the same layout with Docker; [`LAYOUT`] is what both declare, and a test
//! reads the Dockerfile to keep them from drifting.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The image's name in the chart (`values.yaml` `image.repository`).
pub const IMAGE_REPOSITORY: &str = "ghcr.io/konnector-rs/konnector";
/// The version of the binary, the image tag and the chart's `appVersion`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The static target.
const TARGET: &str = "x86_64-unknown-linux-musl";

/// What the image declares, whether `buildah` or the Dockerfile builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `USER`: numeric, not root (distroless' "nonroot").
    pub user: &'static str,
    /// `ENTRYPOINT`.
    pub entrypoint: &'static [&'static str],
    /// `EXPOSE`: `/healthz` and `/readyz` (`--health-probe-bind-address`), `/metrics`.
    pub ports: &'static [u16],
    /// `ENV`: mimalloc (the static build's allocator) returning memory it does not use: with its
    /// defaults the konnector's idle RSS was 24 MiB instead of 12 (`cargo xtask bench`).
    pub env: &'static [(&'static str, &'static str)],
}

/// The layout of the konnector image.
pub const LAYOUT: Layout = Layout {
    user: "65532:65532",
    entrypoint: &["/konnector"],
    ports: &[8080, 8081],
    env: &[
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DELAY", "0"),
    ],
};

/// The OCI labels, but for version and revision.
const LABELS: &[(&str, &str)] = &[
    ("org.opencontainers.image.title", "konnector"),
    (
        "org.opencontainers.image.description",
        "Klutch konnector: binds provider APIs into an app cluster",
    ),
    (
        "org.opencontainers.image.source",
        "https://github.com/konnector-rs/konnector",
    ),
    ("org.opencontainers.image.licenses", "Apache-2.0"),
];

/// Runs the task.
pub fn run(repo: &Path, args: &[String]) -> Result<()> {
    let build = match args {
        [] => true,
        [flag] if flag == "--no-build" => false,
        _ => bail!("usage: cargo xtask image [--no-build]"),
    };
    let out = repo.join("target/image");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let chart_version = check_chart_app_version(repo)?;
    check_dockerfile(repo)?;
    let binary = if build {
        build_static(repo)?
    } else {
        crate::demo::konnector::binary_path(repo, true, Some(TARGET))
    };
    ensure!(
        binary.exists(),
        "{} is missing: run without --no-build",
        binary.display()
    );
    let revision = git_revision(repo);
    let archive = out.join(format!("konnector-{VERSION}.oci.tar"));
    build_image(&out, &binary, &archive, &revision)?;
    let binary_len = std::fs::metadata(&binary)?.len();
    let image = check_archive(&archive, &revision)?;
    let archive_len = std::fs::metadata(&archive)?.len();
    println!(
        "image {IMAGE_REPOSITORY}:{VERSION}: {} ({:.1} MiB; binary {:.1} MiB, layer {:.1} MiB)",
        archive.display(),
        mib(archive_len),
        mib(binary_len),
        mib(image.layer_len),
    );
    // About the size of the binary: the archive adds a tar header, the manifest and the config.
    ensure!(
        archive_len < binary_len + binary_len / 20 + 64 * 1024,
        "the archive ({archive_len} bytes) is much larger than the binary ({binary_len} bytes)"
    );
    let extracted = out.join("extracted/konnector");
    std::fs::create_dir_all(out.join("extracted"))?;
    std::fs::write(&extracted, &image.binary)?;
    set_executable(&extracted)?;
    let reported = version_of(&extracted)?;
    println!("the binary in the image reports: {reported}");
    ensure!(
        reported.ends_with(&format!("v{VERSION}")),
        "the binary in the image reports {reported:?}, not version {VERSION}"
    );
    println!("the binary in the image runs the demo's default-mode scenario:");
    crate::demo::run_default_mode(&extracted)?;
    let chart = package_chart(repo, &out, &chart_version)?;
    println!("chart: {}", chart.display());
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Fails unless the chart's `appVersion` is [`VERSION`]; returns the chart's own version.
fn check_chart_app_version(repo: &Path) -> Result<String> {
    let path = repo.join("charts/konnector/Chart.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let app_version = chart["appVersion"].as_str().unwrap_or_default();
    ensure!(
        app_version == VERSION,
        "{}: appVersion {app_version:?} is not the konnector's version {VERSION:?}",
        path.display()
    );
    chart["version"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: no version", path.display()))
}

/// Runs `cmd`, failing with its output if it fails.
fn run_cmd(cmd: &mut Command, what: &str) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The static release binary. ring's C and assembly need a musl C compiler: Debian's
/// `musl-tools` (`musl-gcc`). Returns the binary's path.
fn build_static(repo: &Path) -> Result<PathBuf> {
    let installed = run_cmd(
        Command::new("rustup").args(["target", "list", "--installed"]),
        "listing the installed targets",
    )?;
    if !installed.lines().any(|t| t.trim() == TARGET) {
        eprintln!("adding the {TARGET} target");
        run_cmd(
            Command::new("rustup").args(["target", "add", TARGET]),
            "rustup target add",
        )?;
    }
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        bail!("musl-gcc not found: install Debian's musl-tools (apt-get install musl-tools)");
    }
    eprintln!("building the static konnector: cargo build --release --target {TARGET}");
    crate::demo::konnector::build_for(
        repo,
        true,
        Some(TARGET),
        &[("CC_x86_64_unknown_linux_musl", "musl-gcc")],
    )
}

fn git_revision(repo: &Path) -> String {
    run_cmd(
        Command::new("git")
            .current_dir(repo)
            .args(["rev-parse", "HEAD"]),
        "git rev-parse",
    )
    .unwrap_or_else(|_| "unknown".to_owned())
}

/// `buildah` with its own storage under `out` (no daemon, no system storage touched).
fn buildah(out: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(out.join("storage"))
        .arg("--runroot")
        .arg(out.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    cmd
}

/// The image from scratch with only the binary, written as an OCI archive.
fn build_image(out: &Path, binary: &Path, archive: &Path, revision: &str) -> Result<()> {
    run_cmd(
        Command::new("buildah").arg("--version"),
        "buildah (Debian's buildah package)",
    )?;
    let ctr = run_cmd(
        buildah(out).args(["from", "--name", "konnector-image", "scratch"]),
        "buildah from scratch",
    );
    // A container left behind by an interrupted run has the same name: remove it and retry.
    let ctr = match ctr {
        Ok(c) => c,
        Err(_) => {
            let _ = run_cmd(buildah(out).args(["rm", "konnector-image"]), "buildah rm");
            run_cmd(
                buildah(out).args(["from", "--name", "konnector-image", "scratch"]),
                "buildah from scratch",
            )?
        }
    };
    let result = (|| {
        run_cmd(
            buildah(out)
                .args(["copy", "--chown", "0:0", "--chmod", "0755", &ctr])
                .arg(binary)
                .arg(LAYOUT.entrypoint[0]),
            "buildah copy",
        )?;
        let mut config = buildah(out);
        config
            .args(["config", "--user", LAYOUT.user])
            .arg("--entrypoint")
            .arg(serde_json::to_string(LAYOUT.entrypoint)?)
            .args(["--cmd", ""])
            .args(["--os", "linux", "--arch", "amd64"]);
        for port in LAYOUT.ports {
            config.arg("--port").arg(format!("{port}/tcp"));
        }
        for (k, v) in LAYOUT.env {
            config.arg("--env").arg(format!("{k}={v}"));
        }
        for (k, v) in image_labels(revision) {
            config.arg("--label").arg(format!("{k}={v}"));
        }
        run_cmd(config.arg(&ctr), "buildah config")?;
        let _ = std::fs::remove_file(archive);
        run_cmd(
            buildah(out)
                .args(["commit", "--format", "oci", "--disable-compression=false"])
                .arg(&ctr)
                .arg(format!(
                    "oci-archive:{}:{IMAGE_REPOSITORY}:{VERSION}",
                    archive.display()
                )),
            "buildah commit",
        )?;
        anyhow::Ok(())
    })();
    let _ = run_cmd(buildah(out).args(["rm", &ctr]), "buildah rm");
    result
}

/// Every label of the image.
fn image_labels(revision: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = LABELS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.insert("org.opencontainers.image.version".into(), VERSION.into());
    labels.insert("org.opencontainers.image.revision".into(), revision.into());
    labels
}

/// What the archive holds, once checked.
struct Image {
    binary: Vec<u8>,
    layer_len: u64,
}

/// A file of a tar archive: mode, owner and content.
struct TarFile {
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
}

/// The files of a tar archive, by path.
fn tar_files(bytes: &[u8]) -> Result<BTreeMap<String, TarFile>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().context("reading a tar archive")? {
        let mut entry = entry.context("reading a tar entry")?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let header = entry.header();
        let (mode, uid, gid) = (header.mode()?, header.uid()?, header.gid()?);
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.insert(
            path,
            TarFile {
                mode,
                uid,
                gid,
                data,
            },
        );
    }
    Ok(files)
}

/// The blob `digest` (`sha256:<hex>`) of an OCI layout, checked against its digest.
fn blob<'a>(files: &'a BTreeMap<String, TarFile>, digest: &str) -> Result<&'a [u8]> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {digest} is not sha256"))?;
    let data = &files
        .get(&format!("blobs/sha256/{hex}"))
        .with_context(|| format!("blob {digest} missing from the archive"))?
        .data;
    let actual = ring::digest::digest(&ring::digest::SHA256, data);
    let actual: String = actual.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    ensure!(actual == hex, "blob {digest} has digest sha256:{actual}");
    Ok(data)
}

/// Reads the archive as a registry would and checks what the image declares and holds.
fn check_archive(archive: &Path, revision: &str) -> Result<Image> {
    let bytes = std::fs::read(archive).with_context(|| format!("reading {}", archive.display()))?;
    let files = tar_files(&bytes)?;
    let index: Value = serde_json::from_slice(
        &files
            .get("index.json")
            .context("index.json missing from the archive")?
            .data,
    )?;
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    ensure!(
        manifests.len() == 1,
        "the index lists {} manifests",
        manifests.len()
    );
    let manifest: Value = serde_json::from_slice(blob(
        &files,
        manifests[0]["digest"].as_str().unwrap_or_default(),
    )?)?;
    let config: Value = serde_json::from_slice(blob(
        &files,
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    )?)?;
    check_config(&config, revision)?;
    let layers = manifest["layers"]
        .as_array()
        .context("manifest without layers")?;
    ensure!(
        layers.len() == 1,
        "the image has {} layers, not 1",
        layers.len()
    );
    let media_type = layers[0]["mediaType"].as_str().unwrap_or_default();
    let compressed = blob(&files, layers[0]["digest"].as_str().unwrap_or_default())?;
    let layer = if media_type.ends_with("+gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(compressed)
            .read_to_end(&mut out)
            .context("decompressing the layer")?;
        out
    } else {
        compressed.to_vec()
    };
    let entries = tar_files(&layer)?;
    let paths: Vec<&String> = entries
        .iter()
        .filter(|(_, f)| !f.data.is_empty())
        .map(|(p, _)| p)
        .collect();
    let binary_path = LAYOUT.entrypoint[0].trim_start_matches('/');
    ensure!(
        paths == [binary_path],
        "the layer holds {paths:?}, not only the binary (no shell, nothing else)"
    );
    let TarFile {
        mode,
        uid,
        gid,
        data,
    } = &entries[binary_path];
    ensure!(
        mode & 0o777 == 0o755 && *uid == 0 && *gid == 0,
        "/{binary_path}: mode {mode:o}, owner {uid}:{gid}; want 755, root-owned (the user cannot change it)"
    );
    Ok(Image {
        binary: data.clone(),
        layer_len: compressed.len() as u64,
    })
}

/// The config's user, entrypoint, ports and labels are [`LAYOUT`]'s and [`image_labels`]'.
fn check_config(config: &Value, revision: &str) -> Result<()> {
    let c = &config["config"];
    ensure!(
        c["User"] == LAYOUT.user,
        "user {} is not {}",
        c["User"],
        LAYOUT.user
    );
    let entrypoint: Vec<&str> = c["Entrypoint"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        entrypoint == LAYOUT.entrypoint,
        "entrypoint {entrypoint:?} is not {:?}",
        LAYOUT.entrypoint
    );
    let cmd = c["Cmd"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(cmd == 0, "the image has a Cmd: {}", c["Cmd"]);
    let ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let want: Vec<String> = LAYOUT.ports.iter().map(|p| format!("{p}/tcp")).collect();
    ensure!(ports == want, "exposed ports {ports:?}, not {want:?}");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (k, v) in LAYOUT.env {
        let want = format!("{k}={v}");
        ensure!(env.contains(&want.as_str()), "Env {env:?} lacks {want}");
    }
    for (k, v) in image_labels(revision) {
        ensure!(
            c["Labels"][&k] == v.as_str(),
            "label {k} is {}, not {v:?}",
            c["Labels"][&k]
        );
    }
    ensure!(
        config["os"] == "linux" && config["architecture"] == "amd64",
        "platform {}/{}",
        config["os"],
        config["architecture"]
    );
    Ok(())
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `konnector --version`'s version.
fn version_of(binary: &Path) -> Result<String> {
    let out = run_cmd(Command::new(binary).arg("--version"), "konnector --version")?;
    out.strip_prefix("konnector version ")
        .map(str::to_owned)
        .with_context(|| format!("unexpected --version output {out:?}"))
}

/// The chart as `helm package` makes it: `konnector/...` in a gzipped tar, without what
/// `.helmignore` leaves out.
fn package_chart(repo: &Path, out: &Path, version: &str) -> Result<PathBuf> {
    let chart = repo.join("charts/konnector");
    let ignored = helmignore(&chart)?;
    let path = out.join(format!("konnector-{version}.tgz"));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let mut files = Vec::new();
    collect_files(&chart, &chart, &ignored, &mut files)?;
    files.sort();
    for rel in files {
        let mut header = tar::Header::new_gnu();
        let data = std::fs::read(chart.join(&rel))?;
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("konnector/{rel}"), data.as_slice())?;
    }
    tar.into_inner()?.finish()?;
    Ok(path)
}

/// The `.helmignore` entries: directory names (`ci/`) and file globs (`*.orig`).
fn helmignore(chart: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(chart.join(".helmignore")).unwrap_or_default();
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn is_ignored(rel: &str, is_dir: bool, ignored: &[String]) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    ignored.iter().any(|p| {
        if let Some(dir) = p.strip_suffix('/') {
            is_dir && (rel == dir || name == dir)
        } else if let Some(suffix) = p.strip_prefix('*') {
            name.ends_with(suffix)
        } else {
            name == p || rel == p
        }
    })
}

fn collect_files(root: &Path, dir: &Path, ignored: &[String], out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)?
            .to_string_lossy()
            .replace('\\', "/");
        let is_dir = entry.file_type()?.is_dir();
        if is_ignored(&rel, is_dir, ignored) {
            continue;
        }
        if is_dir {
            collect_files(root, &path, ignored, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Fails unless the Dockerfile declares [`LAYOUT`]: both ways of building the image make the
/// same image.
fn check_dockerfile(repo: &Path) -> Result<()> {
    let path = repo.join("Dockerfile");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let layout = dockerfile_layout(&text)?;
    let want = DockerfileLayout {
        user: LAYOUT.user.to_owned(),
        entrypoint: LAYOUT.entrypoint.iter().map(|s| (*s).to_owned()).collect(),
        ports: LAYOUT.ports.to_vec(),
        env: LAYOUT
            .env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        copied_to: LAYOUT.entrypoint[0].to_owned(),
    };
    ensure!(
        layout == want,
        "{} declares {layout:?}, the image {want:?}",
        path.display()
    );
    for (k, v) in LABELS {
        ensure!(
            text.contains(&format!("{k}=\"{v}\"")),
            "{} lacks the label {k}={v:?}",
            path.display()
        );
    }
    Ok(())
}

/// What the Dockerfile's final stage declares: `USER`, `ENTRYPOINT`, `EXPOSE`, and the path the
/// binary is copied to.
#[derive(Debug, Default, PartialEq, Eq)]
struct DockerfileLayout {
    user: String,
    entrypoint: Vec<String>,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
    copied_to: String,
}

fn dockerfile_layout(text: &str) -> Result<DockerfileLayout> {
    // Continuation lines joined; only the last stage counts.
    let joined = text.replace("\\\n", " ");
    let mut layout = DockerfileLayout::default();
    for line in joined.lines().map(str::trim) {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => layout = DockerfileLayout::default(),
            "USER" => layout.user = rest.trim().to_owned(),
            "ENTRYPOINT" => {
                layout.entrypoint = serde_json::from_str(rest.trim())
                    .with_context(|| format!("ENTRYPOINT {rest} is not exec form"))?;
            }
            "EXPOSE" => {
                for p in rest.split_whitespace() {
                    layout.ports.push(
                        p.trim_end_matches("/tcp")
                            .parse()
                            .with_context(|| format!("EXPOSE {p}"))?,
                    );
                }
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair
                        .split_once('=')
                        .with_context(|| format!("ENV {pair} is not key=value"))?;
                    layout
                        .env
                        .push((k.to_owned(), v.trim_matches('"').to_owned()));
                }
            }
            "COPY" => {
                if let Some(dest) = rest.split_whitespace().last() {
                    layout.copied_to = dest.to_owned();
                }
            }
            _ => {}
        }
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_declares_the_layout_buildah_builds() {
        check_dockerfile(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))).unwrap();
        // Numeric and not root: runAsNonRoot can only check a numeric user.
        let (uid, gid) = LAYOUT.user.split_once(':').unwrap();
        assert!(uid.parse::<u32>().unwrap() > 0 && gid.parse::<u32>().unwrap() > 0);
    }

    #[test]
    fn only_the_last_stage_counts() {
        let text = "FROM a AS build\nUSER 0\nEXPOSE 1\nENV A=1\nFROM scratch\nCOPY --from=build /out/k \\\n  /konnector\nUSER 1:1\nENV B=2 \\\n    C=\"3\"\nEXPOSE 8080 8081/tcp\nENTRYPOINT [\"/konnector\"]\n";
        let l = dockerfile_layout(text).unwrap();
        assert_eq!(
            l,
            DockerfileLayout {
                user: "1:1".into(),
                entrypoint: vec!["/konnector".into()],
                ports: vec![8080, 8081],
                env: vec![("B".into(), "2".into()), ("C".into(), "3".into())],
                copied_to: "/konnector".into(),
            }
        );
        assert!(dockerfile_layout("FROM x\nENTRYPOINT /konnector\n").is_err());
    }

    #[test]
    fn helmignore_patterns() {
        let ignored: Vec<String> = ["ci/", "*.orig", ".DS_Store"].map(String::from).to_vec();
        assert!(is_ignored("ci", true, &ignored));
        assert!(!is_ignored("ci", false, &ignored));
        assert!(is_ignored("templates/x.yaml.orig", false, &ignored));
        assert!(is_ignored(".DS_Store", false, &ignored));
        assert!(!is_ignored("templates/deployment.yaml", false, &ignored));
    }

    #[test]
    fn the_chart_app_version_is_the_konnector_version() {
        check_chart_app_version(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))).unwrap();
    }
}
