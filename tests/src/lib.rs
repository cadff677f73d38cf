//! End-to-end test support: repository checks, and a local control plane made of the real
//! upstream components (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, Flux's
//! source-controller), a smart-HTTP git server, and real nodes (containerd, the kubelet,
//! kube-proxy) that run pods as containers from a loopback registry of our images.
//! `tests/README.md` says how to use it.

pub mod cluster;
pub mod control_plane;
pub mod git_server;
pub mod github;
pub mod images;
pub mod in_cluster;
pub mod node;
pub mod pki;
pub mod process;
pub mod redirect;
pub mod registry;
pub mod schema_check;
pub mod schema_sample;
pub mod source_controller;
pub mod sshd;
pub mod tools;

pub use control_plane::ControlPlane;
