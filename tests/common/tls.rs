//! TLS for the tests: a CA, server and client certificates made per test
//! (rcgen), written as PEM files into a temp dir, and a private redis-server
//! that speaks TLS on a port of its own.
//!
//! The server keeps a plain port on 127.0.0.1 too, for the harness itself
//! (the start-up check and `redis-cli` as an operator would run it); the
//! code under test is pointed at the TLS port only.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

use super::server::{free_port, RedisServer};

/// A CA and what it signed, as PEM files in `dir`.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names; `127.0.0.1` is added as
    /// an IP address when `with_ip`).
    pub fn server(&self, file: &str, names: &[&str], with_ip: bool) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if with_ip {
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    /// A Redis Cluster node's certificate: 127.0.0.1, for serving clients
    /// and for the cluster bus (where nodes are clients of each other).
    pub fn node(&self, file: &str) -> CertFiles {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(file, params)
    }

    /// A client certificate.
    pub fn client(&self, file: &str) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "redq");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    fn sign(&self, file: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// A private redis-server with a TLS port.
pub struct TlsServer {
    pub redis: RedisServer,
    pub tls_port: u16,
    pub ca_file: PathBuf,
}

impl TlsServer {
    /// Serves TLS with `cert` (signed by the CA in `ca_file`); with
    /// `clients_need_certs`, clients must show a certificate that CA signed.
    pub fn start(cert: &CertFiles, ca_file: &Path, clients_need_certs: bool) -> TlsServer {
        let tls_port = free_port();
        let port = tls_port.to_string();
        let (cert_file, key_file, ca) = (
            cert.cert.display().to_string(),
            cert.key.display().to_string(),
            ca_file.display().to_string(),
        );
        let redis = RedisServer::start_with(&[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            if clients_need_certs { "yes" } else { "no" },
        ]);
        TlsServer {
            redis,
            tls_port,
            ca_file: ca_file.to_owned(),
        }
    }

    /// `rediss://<host>:<tls port>`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.tls_port)
    }

    /// `redis-cli` over TLS, trusting the CA (a producer in another language).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(super::server::server_tool("cli"))
            .args(["--tls", "--cacert"])
            .arg(&self.ca_file)
            .args(["-h", "127.0.0.1", "-p", &self.tls_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
