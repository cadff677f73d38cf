//! The `helm` CLI (tool `helm`, built from its Go module), with its caches and settings kept
//! in a directory of the test's own.

use std::path::Path;
use std::process::Command;

use super::real_node::RealCluster;

/// `helm <args>` with its homes under `home` (and `--kubeconfig` when given): stdout and
/// stderr, or the failure with them.
pub fn run(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let dirs = e2e::tools::dirs(&["helm"]).map_err(|e| e.to_string())?;
    let bin = e2e::tools::find(&dirs, "helm").map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        // Helm keeps its caches and registry logins under these.
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let out = cmd.output().map_err(|e| format!("helm: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("helm {args:?} failed ({}):\n{text}", out.status))
    }
}

/// `helm <args>` against the cluster.
pub fn on(rc: &RealCluster, args: &[&str]) -> Result<String, String> {
    run(&rc.cp.dir().join("helm"), Some(rc.cp.kubeconfig()), args)
}

/// `helm install <release> <chart> -n <namespace> --create-namespace` with the chart's image
/// values (`image.registry`, `image.repository`, `image.tag`: PKO's keys, and ours) naming the
/// cluster's operator image, then `values` (`key=value`).
pub fn install(
    rc: &RealCluster,
    release: &str,
    chart: &Path,
    namespace: &str,
    values: &[&str],
) -> Result<String, String> {
    let image = &rc.images.operator;
    let (registry, rest) = image
        .split_once('/')
        .ok_or_else(|| format!("{image}: no registry"))?;
    let (repository, tag) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{image}: no tag"))?;
    let image_values = [
        format!("image.registry={registry}"),
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
    ];
    let chart = chart.display().to_string();
    let mut args = vec![
        "install",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
        "--create-namespace",
    ];
    for v in image_values
        .iter()
        .map(String::as_str)
        .chain(values.iter().copied())
    {
        args.extend(["--set", v]);
    }
    on(rc, &args)
}
