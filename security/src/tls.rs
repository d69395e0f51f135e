//! A node's certificate, key and the cluster CA, and the configs every link uses.
//!
//! One [`Security`] value is made at start-up (from files, or [`Security::Off`] for
//! `--insecure`) and handed to everything that dials or serves: tonic servers and
//! channels, and the data plane's raw TCP links (rustls through tokio-rustls). Every
//! link is mutual TLS: both ends present a certificate issued by the cluster CA, and
//! the server side reads the caller's [`Principal`] from it.

use crate::principal::{Principal, PrincipalError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Which kind of server a client dials (what it checks the server's certificate for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    /// A master's gRPC port.
    Master,
    /// A worker's control port or data port.
    Worker,
}

impl ServerRole {
    /// The DNS name every server of this role carries.
    pub fn dns_name(self) -> &'static str {
        match self {
            ServerRole::Master => "master.weir",
            ServerRole::Worker => "worker.weir",
        }
    }
}

/// Where a node's TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), issued by the CA.
    pub cert: PathBuf,
    /// This node's private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `<name>.pem` and `<name>.key` in `dir` (the layout `weirctl certs
    /// init` writes).
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The certificate names no Weir identity.
    #[error("{path}: {source}")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        source: PrincipalError,
    },
    /// Neither TLS material nor `--insecure` was given.
    #[error("no TLS material: pass --ca, --cert and --key (`weirctl certs init` makes them), or --insecure for a local experiment")]
    NoMaterial,
    /// The certificate names another node than this process is.
    #[error("{path}: names {found}, but this process is {expected}")]
    NotMe {
        /// The certificate file.
        path: PathBuf,
        /// What it names.
        found: Principal,
        /// Who this process is.
        expected: Principal,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A node's loaded TLS material.
#[derive(Debug)]
pub struct Tls {
    me: Principal,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads and checks the files: the CA parses, the certificate names a Weir
    /// identity, and rustls accepts the key with the certificate.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::from_pem(
            read(&files.ca)?,
            read(&files.cert)?,
            read(&files.key)?,
            &files.cert,
        )
    }

    /// The same from PEM bytes in memory (`origin` names them in errors).
    pub fn from_pem(
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        origin: &Path,
    ) -> Result<Self, TlsError> {
        let pem_err = |what: String| TlsError::Pem {
            path: origin.into(),
            what,
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca_pem) {
            let c = c.map_err(|e| pem_err(format!("CA: {e}")))?;
            roots
                .add(c)
                .map_err(|e| pem_err(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(pem_err("the CA file holds no certificate".into()));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(format!("certificate: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(pem_err("the certificate file holds no certificate".into()));
        };
        let me = Principal::from_cert_der(leaf).map_err(|source| TlsError::Identity {
            path: origin.into(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_err(format!("private key: {e}")))?;
        let tls = Self {
            me,
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            chain,
            key,
        };
        // Fails when the key does not belong to the certificate.
        tls.data_server_config()?;
        Ok(tls)
    }

    /// Who this node's certificate names.
    pub fn principal(&self) -> &Principal {
        &self.me
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The tonic server side: our certificate, client certificates required and
    /// checked against the CA.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The tonic client side towards a server of `to`.
    pub fn client_tls(&self, to: ServerRole) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(to.dns_name())
    }

    fn data_server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))
    }

    fn data_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))
    }
}

/// Whether links are mutual TLS, and with what.
#[derive(Clone, Debug, Default)]
pub enum Security {
    /// Plain TCP, nobody authenticated (`--insecure`: local experiments only).
    #[default]
    Off,
    /// Mutual TLS with this node's material.
    Mtls(Arc<Tls>),
}

/// What a process logs when it runs with `--insecure`.
pub const INSECURE_WARNING: &str = "--insecure: no TLS and nobody authenticated; anyone who \
     reaches a port of this cluster can run programs on its workers. For local experiments only.";

impl Security {
    /// What a server process's flags ask for: its TLS files, whose certificate must
    /// name `me`, or `--insecure`; neither is an error (security is never off by
    /// accident).
    pub fn from_flags(
        files: Option<TlsFiles>,
        insecure: bool,
        me: &Principal,
    ) -> Result<Self, TlsError> {
        match (files, insecure) {
            (Some(f), _) => {
                let tls = Tls::load(&f)?;
                if tls.principal() != me {
                    return Err(TlsError::NotMe {
                        path: f.cert,
                        found: tls.principal().clone(),
                        expected: me.clone(),
                    });
                }
                Ok(Security::Mtls(Arc::new(tls)))
            }
            (None, true) => Ok(Security::Off),
            (None, false) => Err(TlsError::NoMaterial),
        }
    }

    /// Loads `files`, or [`Security::Off`] when there are none.
    pub fn load(files: Option<&TlsFiles>) -> Result<Self, TlsError> {
        Ok(match files {
            Some(f) => Security::Mtls(Arc::new(Tls::load(f)?)),
            None => Security::Off,
        })
    }

    /// Whether links are authenticated.
    pub fn is_on(&self) -> bool {
        matches!(self, Security::Mtls(_))
    }

    /// An endpoint dialling `addr` (`host:port`), a server of `to`.
    pub fn endpoint(
        &self,
        addr: &str,
        to: ServerRole,
    ) -> Result<Endpoint, tonic::transport::Error> {
        match self {
            Security::Off => Endpoint::from_shared(format!("http://{addr}")),
            Security::Mtls(t) => {
                Endpoint::from_shared(format!("https://{addr}"))?.tls_config(t.client_tls(to))
            }
        }
    }

    /// A tonic server builder serving TLS when on.
    pub fn server(&self) -> Result<Server, tonic::transport::Error> {
        match self {
            Security::Off => Ok(Server::builder()),
            Security::Mtls(t) => Server::builder().tls_config(t.server_tls()),
        }
    }

    /// A raw TLS acceptor as this node, client certificates of the CA required
    /// (`None`: plain TCP): the data plane's port, and the masters' metrics endpoint.
    pub fn data_acceptor(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
        match self {
            Security::Off => Ok(None),
            Security::Mtls(t) => Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                t.data_server_config()?,
            )))),
        }
    }

    /// The data plane's connector and the server name it checks (`None`: plain TCP).
    pub fn data_connector(
        &self,
    ) -> Result<Option<(tokio_rustls::TlsConnector, ServerName<'static>)>, TlsError> {
        self.connector(ServerRole::Worker)
    }

    /// A raw TLS connector to a server of `to` as this node, and the server name it
    /// checks (`None`: plain TCP): the data plane's links to workers, or a scrape of a
    /// master's metrics endpoint.
    pub fn connector(
        &self,
        to: ServerRole,
    ) -> Result<Option<(tokio_rustls::TlsConnector, ServerName<'static>)>, TlsError> {
        match self {
            Security::Off => Ok(None),
            Security::Mtls(t) => {
                let name = ServerName::try_from(to.dns_name())
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                Ok(Some((
                    tokio_rustls::TlsConnector::from(Arc::new(t.data_client_config()?)),
                    name,
                )))
            }
        }
    }
}

/// The principal a rustls connection's peer certificate names.
pub fn peer_principal(certs: Option<&[CertificateDer<'_>]>) -> Result<Principal, PrincipalError> {
    match certs.and_then(|c| c.first()) {
        Some(leaf) => Principal::from_cert_der(leaf),
        None => Err(PrincipalError::Count(0)),
    }
}
