//! A development certificate authority: one CA per cluster, and a certificate for each
//! master, worker, tenant and admin (`weirctl certs init`, the demo, the tests).
//!
//! Production clusters may use any CA that issues certificates of the same shape: one
//! URI name `spiffe://weir/<role>/<name>`, plus `master.weir` / `worker.weir` as a DNS
//! name on servers (docs/security.md, "Certificates and identities").

use crate::principal::{Principal, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a certificate cannot be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file cannot be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A CA able to issue certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

impl DevCa {
    /// A new CA named `cluster`, valid from the start of this year for ten years.
    pub fn generate(cluster: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Weir cluster CA {cluster}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let year = this_year();
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (what every node trusts).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues `who` a certificate valid from the start of this year for two years:
    /// servers (masters, workers) for both ends of a link, clients for the client end.
    pub fn issue(&self, who: &Principal) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, who.uri());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(who.uri().try_into()?)];
        if let Some(dns) = who.server_name() {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match who.role() {
            Role::Master | Role::Worker => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Tenant | Role::Admin | Role::Monitor => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let year = this_year();
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `ca.key` and, for each principal, `<stem>.pem` and `<stem>.key`
    /// (stem from [`file_stem`]) into `dir`; keys are readable by their owner only.
    pub fn write(&self, dir: &Path, who: &[Principal]) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.into(),
            source,
        })?;
        write_file(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write_file(&dir.join("ca.key"), &self.key_pem, true)?;
        for p in who {
            let issued = self.issue(p)?;
            let stem = file_stem(p);
            write_file(&dir.join(format!("{stem}.pem")), &issued.cert_pem, false)?;
            write_file(&dir.join(format!("{stem}.key")), &issued.key_pem, true)?;
        }
        Ok(())
    }
}

/// The file name (without extension) `write` gives a principal's files:
/// `master-1`, `worker-w1`, `tenant-acme`, `admin-ops`.
pub fn file_stem(p: &Principal) -> String {
    format!("{}-{}", p.role().as_str(), p.name())
}

/// Writes `text` to `path`; a `secret` is readable by its owner only.
pub fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.into(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    use std::io::Write;
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Tls, TlsFiles};

    #[test]
    fn issued_certificates_load_and_name_their_principal() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("test").unwrap();
        let who = [
            Principal::Master(1),
            Principal::Worker("w1".into()),
            Principal::Tenant("acme".into()),
            Principal::Admin("ops".into()),
        ];
        ca.write(dir.path(), &who).unwrap();
        for p in &who {
            let tls = Tls::load(&TlsFiles::in_dir(dir.path(), &file_stem(p))).unwrap();
            assert_eq!(tls.principal(), p);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tenant-acme.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "keys are private to their owner");
        }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("test").unwrap();
        ca.write(dir.path(), &[Principal::Master(1), Principal::Master(2)])
            .unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("master-1.pem"),
            key: dir.path().join("master-2.key"),
        };
        assert!(Tls::load(&files).is_err());
    }
}
