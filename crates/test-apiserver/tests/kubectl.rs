//! The real `kubectl` against the server: apply (client-side and server-side), get -o json,
//! wait, patch, delete, get --watch, authentication and authorization failures.

// Helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use test_apiserver::{Options, TestApiServer, User};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    dir: PathBuf,
}

impl Kubectl {
    fn new(server: &TestApiServer, user: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tas-kubectl-{name}-{}-{}",
            std::process::id(),
            server.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kubeconfig"), server.kubeconfig(user).unwrap()).unwrap();
        Self { dir }
    }

    fn with_token(self, token: &str, real: &str) -> Self {
        let path = self.dir.join("kubeconfig");
        let k = std::fs::read_to_string(&path).unwrap().replace(real, token);
        std::fs::write(path, k).unwrap();
        self
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs kubectl (bounded), feeding `stdin`; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut child = self.cmd(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes())
            .await
            .unwrap();
        drop(input);
        let out = bounded("kubectl", child.wait_with_output()).await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str], stdin: &str) -> String {
        let (ok, out, err) = self.run(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a, "").await).unwrap()
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: default\ndata:\n  a: \"1\"\n";

#[tokio::test]
async fn apply_get_patch_delete() {
    let server = start(Options::default()).await;
    let k = Kubectl::new(&server, "admin", "apply");
    assert!(
        k.ok(&["apply", "-f", "-"], CM)
            .await
            .contains("configmap/demo created")
    );
    assert!(
        k.ok(&["apply", "-f", "-"], &CM.replace("\"1\"", "\"2\""))
            .await
            .contains("configmap/demo configured")
    );
    let cm = k.json(&["get", "configmap", "demo"]).await;
    assert_eq!(cm["data"]["a"], "2");
    assert!(
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    let ssa = CM
        .replace("name: demo", "name: ssa")
        .replace("a: \"1\"", "b: \"x\"");
    assert!(
        k.ok(&["apply", "--server-side", "-f", "-"], &ssa)
            .await
            .contains("configmap/ssa serverside-applied")
    );
    let got = k
        .json(&["get", "configmap", "ssa", "--show-managed-fields"])
        .await;
    assert_eq!(got["data"]["b"], "x");
    let mf = &got["metadata"]["managedFields"][0];
    assert_eq!(
        (mf["manager"].as_str(), mf["operation"].as_str()),
        (Some("kubectl"), Some("Apply"))
    );
    let got = k
        .json(&["get", "configmap", "demo", "--show-managed-fields"])
        .await;
    let managers: Vec<&str> = got["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"kubectl-client-side-apply"),
        "{managers:?}"
    );

    k.ok(
        &[
            "patch",
            "configmap",
            "demo",
            "-p",
            r#"{"data":{"s":"strategic"}}"#,
        ],
        "",
    )
    .await;
    k.ok(
        &[
            "patch",
            "configmap",
            "demo",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"m":"merge"}}"#,
        ],
        "",
    )
    .await;
    k.ok(
        &[
            "patch",
            "configmap",
            "demo",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/data/a"}]"#,
        ],
        "",
    )
    .await;
    let cm = k.json(&["get", "configmap", "demo"]).await;
    assert_eq!(
        cm["data"],
        serde_json::json!({"s": "strategic", "m": "merge"})
    );

    // Human-readable output uses server-side Tables with the real printer columns.
    let table = k.ok(&["get", "configmaps"], "").await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["demo", "2"]);
    let list = k.json(&["get", "configmaps"]).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    assert!(
        k.ok(&["delete", "configmap", "demo"], "")
            .await
            .contains("configmap \"demo\" deleted")
    );
    let (ok, _, err) = k.run(&["get", "configmap", "demo"], "").await;
    assert!(!ok);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"demo\" not found"),
        "{err}"
    );
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, maximum: 10}
"#;

#[tokio::test]
async fn crds_wait_and_custom_resources() {
    let server = start(Options::default()).await;
    let k = Kubectl::new(&server, "admin", "crd");
    k.ok(&["apply", "-f", "-"], CRD).await;
    let out = k
        .ok(
            &[
                "wait",
                "--for=condition=Established",
                "crd/gadgets.example.com",
                "--timeout=15s",
            ],
            "",
        )
        .await;
    assert!(out.contains("condition met"), "{out}");
    let gadget =
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 3}\n";
    assert!(
        k.ok(&["apply", "--server-side", "-f", "-"], gadget)
            .await
            .contains("gadget.example.com/g1 serverside-applied")
    );
    let g = k.json(&["get", "gd", "g1"]).await;
    assert_eq!(g["spec"]["size"], 3);
    assert_eq!(g["metadata"]["generation"], 1);
    let (ok, _, err) = k
        .run(
            &["apply", "-f", "-"],
            &gadget.replace("g1", "g2").replace("size: 3", "size: 11"),
        )
        .await;
    assert!(!ok);
    assert!(
        err.contains(
            "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"
        ),
        "{err}"
    );
    // kubectl asks for strict field validation: unknown fields are an error, not pruned.
    let (ok, _, err) = k
        .run(
            &["apply", "-f", "-"],
            &gadget
                .replace("g1", "g3")
                .replace("size: 3", "size: 3, colour: red"),
        )
        .await;
    assert!(!ok);
    assert!(
        err.contains("Gadget in version \"v1\" cannot be handled as a Gadget: strict decoding error: unknown field \"spec.colour\""),
        "{err}"
    );
    k.ok(&["delete", "crd", "gadgets.example.com"], "").await;
    let (ok, _, err) = k.run(&["get", "gadgets"], "").await;
    assert!(!ok, "{err}");
}

#[tokio::test]
async fn get_watch_prints_changes() {
    let server = start(Options::default()).await;
    let k = Kubectl::new(&server, "admin", "watch");
    let mut child = k
        .cmd(&[
            "get",
            "configmaps",
            "--watch",
            "-o",
            "name",
            "--request-timeout=20s",
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until kubectl's watch is open before writing.
    wait_for("kubectl watch", || {
        let open = server
            .requests()
            .iter()
            .any(|r| r.verb == "watch" && r.resource == "configmaps");
        async move { open.then_some(()) }
    })
    .await;
    let client = admin(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for n in ["w1", "w2"] {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(n.into());
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = bounded("watch line", lines.next_line())
            .await
            .unwrap()
            .unwrap();
        seen.push(line);
    }
    assert_eq!(seen, ["configmap/w1", "configmap/w2"]);
    child.kill().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

#[tokio::test]
async fn authentication_and_authorization_failures() {
    let server = start(Options::default().rbac().user(User::new("alice", &[]))).await;
    let bad = Kubectl::new(&server, "admin", "badtoken")
        .with_token("not-a-token", &server.token("admin").unwrap());
    let (ok, _, err) = bad.run(&["get", "namespaces"], "").await;
    assert!(!ok);
    assert!(
        err.contains("error: You must be logged in to the server"),
        "{err}"
    );
    let alice = Kubectl::new(&server, "alice", "alice");
    // SelfSubjectAccessReview answers from the same authorizer.
    let (ok, out, _) = alice.run(&["auth", "can-i", "list", "secrets"], "").await;
    assert!(!ok);
    assert_eq!(out.trim(), "no");
    let admin = Kubectl::new(&server, "admin", "admin-can-i");
    assert_eq!(
        admin
            .ok(&["auth", "can-i", "delete", "namespaces"], "")
            .await
            .trim(),
        "yes"
    );
    let (ok, _, err) = alice.run(&["get", "secrets"], "").await;
    assert!(!ok);
    assert!(
        err.contains(
            "Error from server (Forbidden): secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        ),
        "{err}"
    );
}

/// `kubectl create <kind>` sends protobuf bodies; the supported built-ins are decoded.
#[tokio::test]
async fn create_generators_send_protobuf() {
    let server = start(Options::default()).await;
    let k = Kubectl::new(&server, "admin", "create");
    k.ok(&["create", "namespace", "team"], "").await;
    k.ok(
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            "team",
            "--from-literal=a=b",
        ],
        "",
    )
    .await;
    k.ok(&["create", "configmap", "c1", "--from-literal=x=y"], "")
        .await;
    k.ok(&["create", "serviceaccount", "bot"], "").await;
    k.ok(
        &[
            "create",
            "role",
            "r1",
            "--verb=get,list",
            "--resource=secrets",
            "--resource-name=s1",
        ],
        "",
    )
    .await;
    k.ok(
        &[
            "create",
            "rolebinding",
            "rb1",
            "--role=r1",
            "--serviceaccount=default:bot",
        ],
        "",
    )
    .await;
    let ns = k.json(&["get", "namespace", "team"]).await;
    assert_eq!(ns["status"]["phase"], "Active");
    assert!(ns["metadata"].get("generateName").is_none());
    let s = k.json(&["get", "secret", "s1", "-n", "team"]).await;
    assert_eq!(s["data"]["a"], "Yg==");
    assert_eq!(s["type"], "Opaque");
    let c = k.json(&["get", "configmap", "c1"]).await;
    assert_eq!(c["data"]["x"], "y");
    let r = k.json(&["get", "role", "r1"]).await;
    assert_eq!(
        r["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"], "verbs": ["get", "list"]}])
    );
    let rb = k.json(&["get", "rolebinding", "rb1"]).await;
    assert_eq!(
        rb["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "default"}])
    );
    assert_eq!(rb["roleRef"]["name"], "r1");
}
