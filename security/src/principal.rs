//! The identity a certificate names.
//!
//! Every certificate the cluster CA issues carries exactly one URI subject alternative
//! name `spiffe://weir/<role>/<name>` (the SPIFFE ID form: a standard way to name a
//! workload in a certificate, which service meshes already read). Servers also carry
//! the DNS name of their role (`master.weir`, `worker.weir`), which is what a client
//! checks the server against: any master of this CA will do, but a worker's
//! certificate can never pass for a master's.

use std::fmt;

/// The trust domain in every identity URI.
pub const TRUST_DOMAIN: &str = "weir";

/// Longest name in an identity (worker ids, tenants, admins).
pub const MAX_NAME: usize = 128;

/// What a principal may do, coarsely (the services refine it per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A master: Raft, worker control, forwarding clients' calls.
    Master,
    /// A worker: registration, heartbeats, data-plane links, snapshot replicas.
    Worker,
    /// A tenant: its own apps only.
    Tenant,
    /// A cluster admin: every app, membership, workers, templates.
    Admin,
    /// A monitoring system (e.g. Prometheus): the masters' metrics endpoint only.
    Monitor,
}

impl Role {
    /// The path segment in the identity URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Tenant => "tenant",
            Role::Admin => "admin",
            Role::Monitor => "monitor",
        }
    }
}

/// Who a certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// Master `id`.
    Master(u64),
    /// The worker registered under this id.
    Worker(String),
    /// A tenant.
    Tenant(String),
    /// A cluster administrator (the name is for audit only).
    Admin(String),
    /// A monitoring system scraping metrics (the name is for audit only).
    Monitor(String),
}

/// Why a certificate or identity string names nobody.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrincipalError {
    /// Not `spiffe://weir/<role>/<name>`.
    #[error(
        "{0:?} is not an identity of the form spiffe://weir/<master|worker|tenant|admin|monitor>/<name>"
    )]
    Malformed(String),
    /// The name has characters or a length an identity may not have.
    #[error("{0:?}: a name is 1 to 128 of [A-Za-z0-9._-]")]
    BadName(String),
    /// The certificate could not be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    /// The certificate names no identity, or more than one.
    #[error("the certificate must carry exactly one spiffe://weir/ URI name; it carries {0}")]
    Count(usize),
}

/// Whether `name` may be used in an identity.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Principal {
    /// The principal's role.
    pub fn role(&self) -> Role {
        match self {
            Principal::Master(_) => Role::Master,
            Principal::Worker(_) => Role::Worker,
            Principal::Tenant(_) => Role::Tenant,
            Principal::Admin(_) => Role::Admin,
            Principal::Monitor(_) => Role::Monitor,
        }
    }

    /// The name part (a master's id in decimal).
    pub fn name(&self) -> String {
        match self {
            Principal::Master(id) => id.to_string(),
            Principal::Worker(n)
            | Principal::Tenant(n)
            | Principal::Admin(n)
            | Principal::Monitor(n) => n.clone(),
        }
    }

    /// `spiffe://weir/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{TRUST_DOMAIN}/{}/{}",
            self.role().as_str(),
            self.name()
        )
    }

    /// Parses [`Principal::uri`]'s form.
    pub fn parse(uri: &str) -> Result<Self, PrincipalError> {
        let malformed = || PrincipalError::Malformed(uri.chars().take(200).collect());
        let rest = uri
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_prefix(TRUST_DOMAIN))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(malformed)?;
        let (role, name) = rest.split_once('/').ok_or_else(malformed)?;
        if !valid_name(name) {
            return Err(PrincipalError::BadName(name.chars().take(200).collect()));
        }
        Ok(match role {
            "master" => match name.parse::<u64>() {
                Ok(id) if id > 0 => Principal::Master(id),
                _ => return Err(malformed()),
            },
            "worker" => Principal::Worker(name.to_string()),
            "tenant" => Principal::Tenant(name.to_string()),
            "admin" => Principal::Admin(name.to_string()),
            "monitor" => Principal::Monitor(name.to_string()),
            _ => return Err(malformed()),
        })
    }

    /// The identity a DER certificate names (its one `spiffe://weir/` URI name). The
    /// certificate's chain to the CA is the TLS layer's job; this only reads it.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, PrincipalError> {
        let der = tokio_rustls::rustls::pki_types::CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| PrincipalError::Certificate(e.to_string()))?;
        let ours: Vec<&str> = cert
            .valid_uri_names()
            .filter(|u| u.starts_with("spiffe://"))
            .collect();
        match ours.as_slice() {
            [one] => Self::parse(one),
            other => Err(PrincipalError::Count(other.len())),
        }
    }

    /// The DNS name a server of this role presents and its clients check
    /// (`master.weir`, `worker.weir`); none for clients.
    pub fn server_name(&self) -> Option<&'static str> {
        match self.role() {
            Role::Master => Some(crate::tls::ServerRole::Master.dns_name()),
            Role::Worker => Some(crate::tls::ServerRole::Worker.dns_name()),
            Role::Tenant | Role::Admin | Role::Monitor => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role().as_str(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for p in [
            Principal::Master(3),
            Principal::Worker("w-1.rack_2".into()),
            Principal::Tenant("acme".into()),
            Principal::Admin("ops".into()),
            Principal::Monitor("prometheus".into()),
        ] {
            assert_eq!(Principal::parse(&p.uri()).unwrap(), p);
        }
    }

    #[test]
    fn malformed_identities_are_refused() {
        for bad in [
            "spiffe://other/tenant/acme",
            "spiffe://weir/tenant",
            "spiffe://weir/root/x",
            "spiffe://weir/master/0",
            "spiffe://weir/master/one",
            "https://weir/tenant/acme",
        ] {
            assert!(
                matches!(Principal::parse(bad), Err(PrincipalError::Malformed(_))),
                "{bad}"
            );
        }
        for bad in [
            "spiffe://weir/tenant/a/b",
            "spiffe://weir/tenant/",
            "spiffe://weir/tenant/a b",
        ] {
            assert!(
                matches!(Principal::parse(bad), Err(PrincipalError::BadName(_))),
                "{bad}"
            );
        }
        let long = format!("spiffe://weir/tenant/{}", "a".repeat(129));
        assert!(Principal::parse(&long).is_err());
    }
}
