//! Faults the tests inject into a running cluster: the operator's pod, the path between it and
//! a workspace's agent, source-controller.

use k8s_openapi::api::core::v1::Pod;

use super::real_node::RealCluster;

/// The operator's pod IP.
pub async fn operator_ip(rc: &RealCluster) -> String {
    let pods: kube::Api<Pod> =
        kube::Api::namespaced(rc.cp.client(), e2e::in_cluster::OPERATOR_NAMESPACE);
    let list = pods
        .list(&kube::api::ListParams::default().labels("control-plane=controller-manager"))
        .await
        .expect("operator pods");
    list.items
        .into_iter()
        .find_map(|p| p.status?.pod_ip)
        .expect("the operator's pod IP")
}

/// Drops (`on`) or lets through again every packet between the operator's pod (`operator`,
/// its IP) and the agent's port, both ways, in the network namespace of the workspace pod
/// that runs `container`; the kubelet and everything else still reach the pod. Fails when
/// the container no longer runs (its network namespace, and the rules, went with it).
pub fn cut_agent_path(
    rc: &RealCluster,
    container: &str,
    operator: &str,
    on: bool,
) -> Result<(), String> {
    let op = if on { "-I" } else { "-D" };
    let rules = [
        ["INPUT", "-s", operator, "-p", "tcp", "--dport", "50051"],
        ["OUTPUT", "-d", operator, "-p", "tcp", "--sport", "50051"],
    ];
    for rule in rules {
        let mut args = vec![op];
        args.extend(rule);
        args.extend(["-j", "DROP"]);
        rc.node
            .pod_iptables(container, &args)
            .map_err(|e| format!("iptables {op}: {e}"))?;
    }
    Ok(())
}

/// Scales Flux's source-controller to `n` replicas.
pub fn source_controller_replicas(rc: &RealCluster, n: u32) {
    rc.kubectl(&[
        "scale",
        "-n",
        "flux-system",
        "deploy/source-controller",
        &format!("--replicas={n}"),
    ])
    .unwrap_or_else(|e| panic!("scale source-controller to {n}: {e}"));
}

/// Kills every process of a container at once (SIGKILL), as the OOM killer or a crashed node
/// would: nothing in it gets to clean up. `container` as the pod's status gives it
/// (`containerd://<id>`); its processes are those whose cgroup path names the id. Returns how
/// many were killed.
pub fn kill_container(container: &str) -> usize {
    let id = container.rsplit("://").next().unwrap_or(container);
    let mut killed = 0;
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        let mine = std::fs::read_to_string(p.path().join("cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.ends_with(id)));
        // SAFETY: a plain kill(2) of a process found just now.
        if mine && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}
