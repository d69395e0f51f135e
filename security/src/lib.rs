//! Who is calling, and the TLS every link of a Weir cluster runs over.
//!
//! - [`principal`]: the identity a certificate names (`spiffe://weir/<role>/<name>`):
//!   a master, a worker, a tenant or a cluster admin.
//! - [`tls`]: a node's certificate, key and the cluster CA, turned into the tonic and
//!   rustls configs of every link (client-master, master-master, master-worker,
//!   worker-worker), and [`Security`], which is either that or plain TCP.
//! - [`caller`]: who sent a gRPC request, read from the client certificate.
//! - [`sign`]: Ed25519 signatures of submitted specs.
//! - [`ca`]: a development CA that issues every certificate a cluster needs
//!   (`weirctl certs init`, the demo and the tests).
//!
//! Design and threat model: docs/security.md.

pub mod ca;
pub mod caller;
pub mod principal;
pub mod sign;
pub mod tls;

pub use caller::Caller;
pub use principal::{Principal, Role};
pub use tls::{Security, ServerRole, TlsError, TlsFiles};
