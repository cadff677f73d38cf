//! The pod network: a Linux bridge with a /24 on the host, and per pod a network namespace with
//! a veth whose host end is on the bridge. Pods get real IPs, reach the host's services bound on
//! the gateway address (source-controller's artifact server, the apiserver) and each other, and
//! nothing on the host's loopback, as in a cluster.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip` (package iproute2)")]
    Spawn(#[source] std::io::Error),
    #[error(
        "no free pod subnet among 10.244.1.0/24..10.244.250.0/24 (stale e2ebr* bridges? `ip link del` them)"
    )]
    NoSubnet,
    #[error("pod subnet {0}.0/24 is full")]
    Full(String),
}

pub struct PodNetwork {
    index: u8,
    bridge: String,
    used: Mutex<Vec<bool>>,
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

impl PodNetwork {
    /// Creates a bridge `e2ebr<N>` with 10.244.N.1/24, for the first N whose bridge does not
    /// exist yet (so parallel tests get separate networks).
    pub fn create() -> Result<PodNetwork, Error> {
        for index in 1..=250u8 {
            let bridge = format!("e2ebr{index}");
            // Creation is the lock: it fails if another test holds this N.
            if ip(&["link", "add", "name", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let net = PodNetwork {
                index,
                bridge,
                used: Mutex::new(vec![false; 256]),
            };
            let gw = format!("{}/24", net.gateway());
            ip(&["addr", "add", &gw, "dev", &net.bridge])?;
            ip(&["link", "set", &net.bridge, "up"])?;
            return Ok(net);
        }
        Err(Error::NoSubnet)
    }

    /// The host's address on the bridge: pods reach host services bound here.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 1)
    }

    /// Creates network namespace `ns` wired to the bridge, and returns the pod's IP.
    pub fn attach(&self, ns: &str) -> Result<Ipv4Addr, Error> {
        let host = {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            let free = (2..255)
                .find(|&i| !used[i])
                .ok_or_else(|| Error::Full(format!("10.244.{}", self.index)))?;
            used[free] = true;
            free as u8
        };
        let pod_ip = Ipv4Addr::new(10, 244, self.index, host);
        let veth = format!("e2ev{}x{}", self.index, host);
        let result = (|| {
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
            let addr = format!("{pod_ip}/24");
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let gw = self.gateway().to_string();
            ip(&["-n", ns, "route", "add", "default", "via", &gw])
        })();
        if let Err(e) = result {
            self.detach(ns, pod_ip);
            return Err(e);
        }
        Ok(pod_ip)
    }

    /// Removes the namespace (and with it the veth pair) and frees the IP.
    pub fn detach(&self, ns: &str, pod_ip: Ipv4Addr) {
        let _ = ip(&["netns", "del", ns]);
        let _ = ip(&[
            "link",
            "del",
            &format!("e2ev{}x{}", self.index, pod_ip.octets()[3]),
        ]);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used[pod_ip.octets()[3] as usize] = false;
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
