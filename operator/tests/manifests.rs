//! The manifests the operator produces without a cluster: the CRD checked into the chart
//! is the one generated from the Rust type, and `render` of the example is valid against
//! the Kubernetes OpenAPI schemas (with the PyPI package `kubernetes-validate`).

use std::path::{Path, PathBuf};
use std::process::Command;

const CRD_IN_CHART: &str = "charts/gameshard/crds/gameshard.io_gameshards.yaml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn operator(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gameshard-operator"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "gameshard-operator {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_chart_holds_the_crd_generated_from_the_type() {
    let generated = operator(&["crd"]);
    let checked_in =
        std::fs::read_to_string(root().join(CRD_IN_CHART)).expect("the chart has the CRD");
    assert!(
        checked_in == generated,
        "{CRD_IN_CHART} is stale; regenerate it with: cargo run -p gameshard-operator -- crd > {CRD_IN_CHART}"
    );
    for must in [
        "x-kubernetes-validations",
        "self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
        "specReplicasPath: .spec.replicas",
        "shortNames:",
        "- gs",
        "subresources:",
        "additionalPrinterColumns",
    ] {
        assert!(generated.contains(must), "the CRD has {must}");
    }
}

/// `kubernetes-validate`, or why its checks are skipped. The test command sets
/// `GAMESHARD_REQUIRE_TOOLS`, which turns a missing tool into a failure.
fn kubernetes_validate() -> Option<Command> {
    if Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(Command::new("kubernetes-validate"));
    }
    assert!(
        std::env::var_os("GAMESHARD_REQUIRE_TOOLS").is_none(),
        "kubernetes-validate is required (pip install kubernetes-validate)"
    );
    eprintln!("skipped: kubernetes-validate is not installed (pip install kubernetes-validate)");
    None
}

#[test]
fn render_of_the_example_is_valid_against_the_kubernetes_schemas() {
    let Some(mut validate) = kubernetes_validate() else { return };
    let rendered = operator(&["render", "-f", "examples/gameshard.yaml"]);
    let dir = std::env::temp_dir().join(format!("gameshard-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let objects = dir.join("objects.yaml");
    std::fs::write(&objects, &rendered).expect("written");
    let crd = dir.join("crd.yaml");
    std::fs::write(&crd, operator(&["crd"])).expect("written");
    let out = validate
        .args(["--strict", "-k", "1.33.0"])
        .arg(&objects)
        .arg(&crd)
        .output()
        .expect("kubernetes-validate runs");
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{report}\n{rendered}");
    for object in [
        "statefulset/zone-eu-west-1",
        "service/zone-eu-west-1",
        "service/zone-eu-west-1-metrics",
        "poddisruptionbudget/zone-eu-west-1",
        "customresourcedefinition/gameshards.gameshard.io",
    ] {
        assert!(
            report.contains(&format!("passed for resource {object}")),
            "{object} validated:\n{report}"
        );
    }
}

#[test]
fn render_needs_the_partition_count_when_the_resource_omits_it() {
    let dir = std::env::temp_dir().join(format!("gameshard-render-np-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("gs.yaml");
    let example = std::fs::read_to_string(root().join("examples/gameshard.yaml")).expect("example");
    std::fs::write(&file, example.replace("  partitions: 64\n", "")).expect("written");
    let out = Command::new(env!("CARGO_BIN_EXE_gameshard-operator"))
        .arg("render")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--partitions"));
    let with = Command::new(env!("CARGO_BIN_EXE_gameshard-operator"))
        .arg("render")
        .arg("-f")
        .arg(&file)
        .args(["--partitions", "32"])
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(with.status.success());
    assert!(
        String::from_utf8_lossy(&with.stdout).contains("replicas: 4"),
        "32 partitions at 8 per pod"
    );
}
