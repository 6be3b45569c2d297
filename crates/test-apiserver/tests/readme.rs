//! The README's kube-rs example runs, and the README shows it as it is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/kube_client.rs"]
mod example;

#[tokio::test]
async fn readme_example_runs() {
    example::run().await.unwrap();
}

#[test]
fn readme_shows_the_example() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let example = std::fs::read_to_string(dir.join("examples/kube_client.rs")).unwrap();
    // The README quotes the example from its first `use` to the end of `run`.
    let start = example.find("use k8s_openapi").unwrap();
    let end = example.find("#[allow(dead_code)]").unwrap();
    let quoted = example[start..end].trim_end();
    assert!(
        readme.contains(quoted),
        "README.md must quote examples/kube_client.rs (from `use` to the end of `run`):\n{quoted}"
    );
}
