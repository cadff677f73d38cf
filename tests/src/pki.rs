//! The control plane's own PKI, made fresh for every run: a CA, the apiserver's serving
//! certificate, an admin client certificate (`system:masters`), the apiserver's client
//! certificate for kubelets (logs, exec), and the service-account signing key, so TokenRequest
//! and TokenReview work as in a real cluster. Further client certificates (a real node's
//! kubelet and kube-proxy) are issued on demand.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Paths of the files written.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// What the apiserver presents to kubelets (`--kubelet-client-certificate`).
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// PEM contents, for the kubeconfig.
    pub ca_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// What signs further certificates ([`Pki::client`]).
    ca_params: CertificateParams,
    ca_key_pem: String,
}

/// A client certificate issued by [`Pki::client`]: its files.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write(dir: &Path, file: &str, body: &str) -> Result<PathBuf, PkiError> {
    let p = dir.join(file);
    fs::write(&p, body).map_err(|e| PkiError::Write(p.clone(), e))?;
    Ok(p)
}

fn make<T>(what: &'static str, r: Result<T, rcgen::Error>) -> Result<T, PkiError> {
    r.map_err(|source| PkiError::Generate { what, source })
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

impl Pki {
    /// Writes a fresh PKI into `dir`. `ips` and `dns` go into the serving certificate.
    pub fn create(dir: &Path, ips: &[std::net::IpAddr], dns: &[&str]) -> Result<Pki, PkiError> {
        let write = |file: &str, body: &str| write(dir, file, body);

        let ca_key = make("CA key", KeyPair::generate())?;
        let mut ca = make("CA", CertificateParams::new(Vec::<String>::new()))?;
        ca.distinguished_name = name("e2e-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = make("CA", ca.self_signed(&ca_key))?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca.clone(), ca_key);

        let serving_key = make("serving key", KeyPair::generate())?;
        let mut serving = make("serving cert", CertificateParams::new(Vec::<String>::new()))?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for d in dns {
            serving
                .subject_alt_names
                .push(SanType::DnsName(make("serving cert", (*d).try_into())?));
        }
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = make("serving cert", serving.signed_by(&serving_key, &issuer))?;

        let admin_key = make("admin key", KeyPair::generate())?;
        let mut admin = make("admin cert", CertificateParams::new(Vec::<String>::new()))?;
        admin.distinguished_name = name("e2e-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = make("admin cert", admin.signed_by(&admin_key, &issuer))?;

        // system:masters: the kubelets authorize it for logs, exec and port-forward.
        let (kc_cert, kc_key) = client_pair(
            &issuer,
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        )?;

        let sa = make("service-account key", KeyPair::generate())?;

        Ok(Pki {
            ca_cert: write("ca.crt", &ca_cert.pem())?,
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            admin_cert: write("admin.crt", &admin_cert.pem())?,
            admin_key: write("admin.key", &admin_key.serialize_pem())?,
            kubelet_client_cert: write("apiserver-kubelet-client.crt", &kc_cert)?,
            kubelet_client_key: write("apiserver-kubelet-client.key", &kc_key)?,
            sa_key: write("sa.key", &sa.serialize_pem())?,
            sa_pub: write("sa.pub", &sa.public_key_pem())?,
            ca_pem: ca_cert.pem(),
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            ca_params: ca,
            ca_key_pem,
        })
    }

    /// Issues a client certificate for user `cn` in group `org`, written as `<stem>.crt` and
    /// `<stem>.key` in `dir`.
    pub fn client(
        &self,
        dir: &Path,
        stem: &str,
        cn: &str,
        org: Option<&str>,
    ) -> Result<ClientCert, PkiError> {
        let ca_key = make("CA key", KeyPair::from_pem(&self.ca_key_pem))?;
        let issuer = Issuer::new(self.ca_params.clone(), ca_key);
        let (cert_pem, key_pem) = client_pair(&issuer, cn, org)?;
        Ok(ClientCert {
            cert: write(dir, &format!("{stem}.crt"), &cert_pem)?,
            key: write(dir, &format!("{stem}.key"), &key_pem)?,
        })
    }
}

/// A client certificate (PEM) and its key (PEM) for `cn` in `org`.
fn client_pair(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    org: Option<&str>,
) -> Result<(String, String), PkiError> {
    let key = make("client key", KeyPair::generate())?;
    let mut params = make("client cert", CertificateParams::new(Vec::<String>::new()))?;
    params.distinguished_name = name(cn, org);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = make("client cert", params.signed_by(&key, issuer))?;
    Ok((cert.pem(), key.serialize_pem()))
}
