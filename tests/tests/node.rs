//! One real node (tests/src/node.rs): containerd, the kubelet and kube-proxy in a network
//! namespace of their own, pulling images from a registry on the node network. A pod with an
//! init container runs as real containers; `kubectl logs` and `kubectl exec` reach them through
//! the apiserver and the kubelet; a Service VIP works from inside a pod (kube-proxy), and so
//! does the `kubernetes` Service; the host reaches the pod's IP. A pod whose image is missing
//! fails the wait at once, with the reason and the node's logs. Stopping the node while a pod
//! runs leaves no process, mount, network namespace, route, bridge or iptables rule.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::cluster::Cluster;
use e2e::images::{self, Buildah};
use e2e::node::{Leftovers, NodeError};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams};

/// The root namespace's iptables rules, without counters and comments.
fn iptables_rules() -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    assert!(out.status.success(), "iptables-save failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            // ":CHAIN POLICY [packets:bytes]"
            Some((head, _)) if l.starts_with(':') => head.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn web_pod(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  securityContext: {{runAsUser: 1000, runAsNonRoot: true}}
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: prepare
    image: {image}
    command: [sh, -c, 'echo "served by $(hostname)" > /www/index.html && echo prepared']
    volumeMounts: [{{name: www, mountPath: /www}}]
    securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
  containers:
  - name: main
    image: {image}
    command: [httpd, -f, -p, "8080", -h, /www]
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
    volumeMounts: [{{name: www, mountPath: /www}}]
    securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
  volumes:
  - name: www
    emptyDir: {{}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

// busybox 1.35's static wget crashes (SIGSEGV) when given `-T`: `timeout` bounds it instead.

/// Retries `f` for up to 30 s (kube-proxy programs a new Service within a second or two).
/// `f`'s errors carry the node's logs ([`Cluster::kubectl`]).
fn eventually(what: &str, mut f: impl FnMut() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(out) => return out,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_runs_pods_and_leaves_nothing_behind() {
    let rules_before = iptables_rules();
    let mut rc = Cluster::start()
        .await
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    let bridge = rc.network.bridge().to_string();
    let buildah = Buildah::new(rc.cp.dir()).expect("buildah");
    let busybox = images::busybox_image(&buildah, &rc.registry).expect("busybox image");
    let client = rc.cp.client();

    // A pod with an init container, as real containers.
    rc.cp
        .apply_yaml(&web_pod(&busybox), "web pod", "default")
        .await
        .expect("apply the web pod");
    let pod = rc
        .node
        .wait_pod_ready(&client, "default", "web", Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(rc.node.name()));
    let pod_ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
    let subnet_prefix = rc.node.pod_subnet().trim_end_matches("0/24");
    assert!(
        pod_ip.starts_with(subnet_prefix),
        "pod IP {pod_ip} is not in the node's pod subnet {}",
        rc.node.pod_subnet()
    );

    // Logs and exec, through the apiserver to the kubelet.
    let logs = rc
        .kubectl(&["logs", "web", "-c", "prepare"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logs.trim(), "prepared");
    let served = rc
        .kubectl(&["exec", "web", "-c", "main", "--", "cat", "/www/index.html"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(served.trim(), "served by web");
    let id = rc
        .kubectl(&["exec", "web", "-c", "main", "--", "id", "-u"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(id.trim(), "1000", "the pod's runAsUser");

    // The host reaches the pod's IP (the operator reaches workspace pods this way).
    let body = reqwest::get(format!("http://{pod_ip}:8080/"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET the pod from the host")
        .text()
        .await
        .expect("body");
    assert_eq!(body.trim(), "served by web");

    // A Service VIP from inside a pod, back to the same pod (kube-proxy, hairpin).
    let vip = Api::<Service>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("cluster IP");
    let url = format!("http://{vip}:80/");
    let via_vip = eventually("the web Service VIP from the pod", || {
        rc.kubectl(&[
            "exec", "web", "-c", "main", "--", "timeout", "5", "wget", "-qO-", &url,
        ])
    });
    assert_eq!(via_vip.trim(), "served by web");
    // The `kubernetes` Service: pods on the node reach the apiserver at its ClusterIP.
    let version = eventually("the kubernetes Service from the pod", || {
        rc.kubectl(&[
            "exec",
            "web",
            "-c",
            "main",
            "--",
            "timeout",
            "5",
            "wget",
            "-qO-",
            "--no-check-certificate",
            "https://10.0.0.1:443/version",
        ])
    });
    assert!(
        version.contains("\"gitVersion\""),
        "unexpected /version answer: {version}"
    );

    // An image the registry lacks: the wait fails at once, saying why.
    let missing = rc.registry.image("missing", "e2e");
    rc.cp
        .apply_yaml(
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing}}\nspec:\n  \
             containers: [{{name: main, image: \"{missing}\"}}]\n"
            ),
            "missing pod",
            "default",
        )
        .await
        .expect("apply the missing pod");
    let started = Instant::now();
    let err = rc
        .node
        .wait_pod_ready(&client, "default", "missing", Duration::from_secs(120))
        .await
        .expect_err("a pod whose image is missing cannot become Ready");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the pull failure was reported only at the time-out"
    );
    let text = err.to_string();
    assert!(
        matches!(err, NodeError::PodFailed { .. }),
        "not a pull failure: {text}"
    );
    assert!(
        text.contains("ErrImagePull") || text.contains("ImagePullBackOff"),
        "{text}"
    );
    assert!(
        text.contains(&missing),
        "the message names the image: {text}"
    );
    assert!(
        text.contains("last lines of kubelet log") && text.contains("last lines of containerd log"),
        "the failure shows the node's logs: {text}"
    );

    // A pod deleted through the API goes away on the node.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    pods.delete("missing", &DeleteParams::default().grace_period(1))
        .await
        .expect("delete pod");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt("missing").await.ok().flatten().is_some() {
        assert!(
            Instant::now() < deadline,
            "pod not gone{}",
            rc.node.diagnose()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Stopping, with the web pod still running, leaves nothing behind.
    rc.node.stop();
    assert_eq!(Leftovers::of(&rc.node), Leftovers::default());
    drop(rc);
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&format!(" {bridge}:")),
        "bridge {bridge} left behind"
    );
    assert_eq!(
        iptables_rules(),
        rules_before,
        "the host's iptables rules changed"
    );
}
