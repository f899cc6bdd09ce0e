//! The gameshard chart installed by real Helm (Helm's Go library through helm-sdkpy, as
//! the chart's own tests use it) into a [`ControlPlane`].

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::controlplane::ControlPlane;
use super::{tools, watchdog};

/// How the harness gets helm-sdkpy.
pub const HELM_INSTALL: &str = "scripts/setup (pip install helm-sdkpy==0.1.32 PyYAML==6.0.3)";

/// The objects Helm installed for a release.
pub struct Release {
    /// Every object of the release's manifest (not the CRDs of crds/).
    pub objects: Vec<Value>,
}

impl Release {
    /// The objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The operator Deployment's container.
    pub fn operator_container(&self) -> anyhow::Result<&Value> {
        let deployment = self.of_kind("Deployment");
        let [deployment] = deployment.as_slice() else { bail!("expected one Deployment") };
        Ok(&deployment["spec"]["template"]["spec"]["containers"][0])
    }

    /// The operator container's arguments.
    pub fn operator_args(&self) -> anyhow::Result<Vec<String>> {
        let args = self.operator_container()?["args"].as_array().context("args")?;
        Ok(args.iter().filter_map(Value::as_str).map(str::to_owned).collect())
    }
}

/// Installs the chart as `release` into `namespace` with `values`; `None` (after saying
/// why) when helm-sdkpy is not installed. Panics instead under [`tools::REQUIRE_TOOLS`].
pub fn install(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    values: &Value,
) -> anyhow::Result<Option<Release>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("src/harness/helm_install.py");
    let chart = root.join("../charts/gameshard");
    let home = watchdog::scratch_dir("helm")?;
    let out = Command::new("python3")
        .arg(&script)
        .arg(cp.kubeconfig())
        .args([release, namespace])
        .arg(&chart)
        .arg(values.to_string())
        // Helm's library reads its folders from the environment at start.
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .context("running python3 helm_install.py")?;
    match out.status.code() {
        Some(0) => {}
        Some(2) => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            assert!(std::env::var_os(tools::REQUIRE_TOOLS).is_none(), "{why}; {HELM_INSTALL}");
            tools::skip(&format!("{why}; {HELM_INSTALL}"));
            return Ok(None);
        }
        _ => bail!("{}", String::from_utf8_lossy(&out.stderr)),
    }
    let objects = serde_json::from_slice(&out.stdout).context("helm_install.py's output")?;
    Ok(Some(Release { objects }))
}
