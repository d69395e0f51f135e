//! Who sent a gRPC request.
//!
//! The caller is the principal its client certificate names. One exception: a master
//! forwarding a client's call to the leader says on whose behalf it calls
//! ([`ON_BEHALF_OF`]); that claim is believed only from a master's certificate, and is
//! refused from anyone else (a tenant claiming to act for another is an attack, not a
//! mistake).
//!
//! Services admit callers with [`admit`], an interceptor that resolves the caller,
//! checks its role and leaves the [`Caller`] in the request's extensions, where the
//! handlers read it with [`Caller::of`] for their finer checks (tenant scoping).

use crate::principal::{Principal, Role};
use tonic::{Request, Status};

/// Metadata key: the identity URI a master forwards a call for.
pub const ON_BEHALF_OF: &str = "x-weir-on-behalf-of";

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Security is off: nobody is authenticated and everything is allowed (the
    /// `--insecure` mode, for local experiments).
    Anyone,
    /// The authenticated principal (for a forwarded call, the one it was forwarded for).
    Principal(Principal),
}

impl Caller {
    /// The caller [`admit`] left in the request (a request that did not pass through
    /// it has no caller: refused, so a service wired without the interceptor fails
    /// closed).
    pub fn of<T>(req: &Request<T>) -> Result<&Caller, Status> {
        req.extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
    }

    /// The principal, if authenticated.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Anyone => None,
            Caller::Principal(p) => Some(p),
        }
    }

    /// The tenant the caller is confined to (`None`: not confined to one).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Principal(Principal::Tenant(t)) => Some(t),
            _ => None,
        }
    }

    /// Refuses unless the caller may touch what belongs to `tenant`.
    pub fn check_tenant(&self, tenant: &str, what: &str) -> Result<(), Status> {
        match self {
            Caller::Principal(Principal::Tenant(t)) if t != tenant => {
                Err(Status::permission_denied(format!(
                    "{what} belongs to tenant {tenant:?}; the caller is tenant {t:?}"
                )))
            }
            Caller::Principal(Principal::Worker(w)) => Err(Status::permission_denied(format!(
                "{what}: worker {w:?} may not act on apps"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses unless the caller has one of `roles` (always allowed with security off).
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), Status> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Principal(p) if roles.contains(&p.role()) => Ok(()),
            Caller::Principal(p) => Err(Status::permission_denied(format!(
                "{what} needs the {} role; the caller is {p}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
        }
    }
}

/// The direct peer of a request: the principal its TLS client certificate names.
pub fn peer<T>(req: &Request<T>) -> Result<Principal, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    crate::tls::peer_principal(Some(&certs))
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

/// Resolves the caller of `req` (`secure`: whether the server runs mutual TLS).
pub fn resolve<T>(secure: bool, req: &Request<T>) -> Result<Caller, Status> {
    if !secure {
        return Ok(Caller::Anyone);
    }
    let direct = peer(req)?;
    let claimed = req
        .metadata()
        .get(ON_BEHALF_OF)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match (claimed, &direct) {
        (None, _) => Ok(Caller::Principal(direct)),
        (Some(uri), Principal::Master(_)) => Principal::parse(uri)
            .map(Caller::Principal)
            .map_err(|e| Status::unauthenticated(format!("{ON_BEHALF_OF}: {e}"))),
        (Some(_), other) => Err(Status::permission_denied(format!(
            "{ON_BEHALF_OF}: only a master forwards calls; the caller is {other}"
        ))),
    }
}

/// An interceptor admitting callers with one of `roles` (with security on) and
/// recording the [`Caller`] for the handlers.
pub fn admit(
    secure: bool,
    roles: &'static [Role],
    service: &'static str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |mut req: Request<()>| {
        let caller = resolve(secure, &req)?;
        caller.require(roles, service)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_confined_to_their_own() {
        let acme = Caller::Principal(Principal::Tenant("acme".into()));
        assert!(acme.check_tenant("acme", "app a").is_ok());
        let e = acme.check_tenant("globex", "app g").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("globex") && e.message().contains("acme"));
        assert!(Caller::Principal(Principal::Admin("ops".into()))
            .check_tenant("globex", "app g")
            .is_ok());
        assert!(Caller::Anyone.check_tenant("globex", "app g").is_ok());
        assert!(Caller::Principal(Principal::Worker("w1".into()))
            .check_tenant("globex", "app g")
            .is_err());
    }

    #[test]
    fn roles_are_required_only_with_security_on() {
        let t = Caller::Principal(Principal::Tenant("acme".into()));
        let e = t.require(&[Role::Admin], "AddMaster").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("admin") && e.message().contains("tenant acme"));
        assert!(Caller::Anyone.require(&[Role::Admin], "AddMaster").is_ok());
    }

    #[test]
    fn without_the_interceptor_a_request_has_no_caller() {
        let req = Request::new(());
        assert_eq!(
            Caller::of(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
