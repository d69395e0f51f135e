//! Who may do what through the client API: every authorisation decision of the
//! `Weir` and `WeirAdmin` services, in one place.
//!
//! The caller comes from its client certificate ([`weir_security::caller`]); the
//! services' interceptors have already admitted only tenants and admins (and masters
//! forwarding for them). Here each call is checked against what it touches:
//! - a tenant reads and changes only its own apps (their versions, checkpoints,
//!   history and watch streams) and lists only its own;
//! - cluster reads that every user needs (status, pools, the template catalog) are
//!   open to any authenticated caller;
//! - everything else (workers, catalog changes, membership) needs the admin role.
//!
//! With security off (`--insecure`) everything is allowed, except that a caller
//! naming a tenant in `x-weir-tenant` is held to it (a courtesy check, not security).

use tonic::{Request, Status};
use weir_proto::status::TENANT_METADATA_KEY;
use weir_security::{Caller, Role};

/// What a call does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action<'a> {
    /// Reads an app of `tenant` (get, watch, checkpoints, history).
    ReadApp {
        /// The app's tenant.
        tenant: &'a str,
        /// The app.
        app: &'a str,
    },
    /// Creates or changes an app of `tenant` (submit, upgrade, cancel).
    WriteApp {
        /// The app's tenant.
        tenant: &'a str,
        /// The app.
        app: &'a str,
    },
    /// Reads cluster-wide facts every user needs.
    ReadCluster,
    /// An administrator's call, named for the refusal.
    Admin(&'static str),
}

/// Allows `action` for the caller of `req`, or answers why not.
pub(crate) fn authorize<T>(req: &Request<T>, action: Action<'_>) -> Result<(), Status> {
    let caller = Caller::of(req)?;
    if matches!(caller, Caller::Anyone) {
        return courtesy_tenant(req, action);
    }
    match action {
        Action::ReadApp { tenant, app } | Action::WriteApp { tenant, app } => {
            caller.check_tenant(tenant, &format!("app {app:?}"))
        }
        Action::ReadCluster => {
            caller.require(&[Role::Tenant, Role::Admin, Role::Master], "this call")
        }
        Action::Admin(what) => caller.require(&[Role::Admin], what),
    }
}

/// The tenant whose apps a listing may show: a tenant sees only its own (asking for
/// another's is refused); others see the tenant they ask for, or all.
pub(crate) fn list_scope<T>(req: &Request<T>, asked: &str) -> Result<String, Status> {
    match Caller::of(req)?.tenant() {
        Some(mine) if asked.is_empty() || asked == mine => Ok(mine.to_string()),
        Some(mine) => Err(Status::permission_denied(format!(
            "tenant: the caller is tenant {mine:?} and may not list tenant {asked:?}'s apps"
        ))),
        None => Ok(asked.to_string()),
    }
}

fn courtesy_tenant<T>(req: &Request<T>, action: Action<'_>) -> Result<(), Status> {
    let (Action::ReadApp { tenant, .. } | Action::WriteApp { tenant, .. }) = action else {
        return Ok(());
    };
    match req
        .metadata()
        .get(TENANT_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some(t) if t != tenant => Err(Status::permission_denied(format!(
            "tenant: the caller is tenant {t:?}; the app belongs to {tenant:?}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use weir_security::Principal;

    fn req(caller: Caller) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut().insert(caller);
        r
    }

    fn tenant(t: &str) -> Caller {
        Caller::Principal(Principal::Tenant(t.into()))
    }

    #[test]
    fn tenants_touch_only_their_own_apps() {
        let acme = req(tenant("acme"));
        let own = Action::WriteApp {
            tenant: "acme",
            app: "a",
        };
        let other = Action::ReadApp {
            tenant: "globex",
            app: "g",
        };
        assert!(authorize(&acme, own).is_ok());
        assert_eq!(
            authorize(&acme, other).unwrap_err().code(),
            Code::PermissionDenied
        );
        assert!(authorize(&acme, Action::ReadCluster).is_ok());
        let e = authorize(&acme, Action::Admin("ListWorkers")).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(
            e.message().contains("ListWorkers needs the admin role"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn admins_touch_everything() {
        let ops = req(Caller::Principal(Principal::Admin("ops".into())));
        assert!(authorize(
            &ops,
            Action::ReadApp {
                tenant: "globex",
                app: "g"
            }
        )
        .is_ok());
        assert!(authorize(&ops, Action::Admin("AddMaster")).is_ok());
        assert_eq!(list_scope(&ops, "").unwrap(), "");
        assert_eq!(list_scope(&ops, "globex").unwrap(), "globex");
    }

    #[test]
    fn a_tenant_lists_only_its_own() {
        let acme = req(tenant("acme"));
        assert_eq!(list_scope(&acme, "").unwrap(), "acme");
        assert_eq!(list_scope(&acme, "acme").unwrap(), "acme");
        assert_eq!(
            list_scope(&acme, "globex").unwrap_err().code(),
            Code::PermissionDenied
        );
    }

    #[test]
    fn a_worker_or_no_caller_is_refused() {
        let w = req(Caller::Principal(Principal::Worker("w1".into())));
        assert!(authorize(
            &w,
            Action::ReadApp {
                tenant: "acme",
                app: "a"
            }
        )
        .is_err());
        assert!(authorize(&w, Action::ReadCluster).is_err());
        let none = Request::new(());
        assert_eq!(
            authorize(&none, Action::ReadCluster).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn without_security_the_tenant_header_is_still_held_to() {
        let mut r = req(Caller::Anyone);
        r.metadata_mut()
            .insert(TENANT_METADATA_KEY, "acme".parse().unwrap());
        assert!(authorize(
            &r,
            Action::ReadApp {
                tenant: "acme",
                app: "a"
            }
        )
        .is_ok());
        assert!(authorize(
            &r,
            Action::ReadApp {
                tenant: "globex",
                app: "g"
            }
        )
        .is_err());
        assert!(authorize(&r, Action::Admin("AddMaster")).is_ok());
    }
}
