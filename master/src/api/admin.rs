//! `weir.v1.WeirAdmin`: adding and removing masters.

use super::*;
use std::collections::BTreeSet;
use tonic::Response as Reply;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_admin_client::WeirAdminClient;
use weir_proto::v1::weir_admin_server::WeirAdmin;

/// The membership admin service.
pub struct AdminService {
    shared: Shared,
}

impl AdminService {
    /// The service over shared master state.
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn members(&self) -> Vec<pb::Member> {
        super::weir::cluster_status(&self.shared).members
    }
}

fn membership_status(e: impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!("membership change refused: {e}"))
}

#[tonic::async_trait]
impl WeirAdmin for AdminService {
    async fn add_master(
        &self,
        req: Request<pb::AddMasterRequest>,
    ) -> Result<Reply<pb::AddMasterResponse>, Status> {
        self.shared
            .timed("AddMaster", async {
                super::authz::authorize(&req, super::authz::Action::Admin("AddMaster"))?;
                if let Route::Remote(addr) = self.shared.route(&req)? {
                    return WeirAdminClient::new(self.shared.channel(&addr)?)
                        .add_master(forwarded(req))
                        .await
                        .map_err(|s| forward_failed(&addr, s));
                }
                let r = req.into_inner();
                if r.id == 0 {
                    return Err(Status::invalid_argument("id: must be > 0"));
                }
                if r.address.parse::<std::net::SocketAddr>().is_err() && !r.address.contains(':') {
                    return Err(Status::invalid_argument(format!("address: {:?} is not host:port", r.address)));
                }
                let raft = &self.shared.node.raft;
                // As a learner first, so it catches up before it counts for a quorum.
                raft.add_learner(r.id, crate::raft::Node::new(&r.address), true).await.map_err(membership_status)?;
                if r.as_voter {
                    let m = raft.metrics().borrow().clone();
                    let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
                    voters.insert(r.id);
                    raft.change_membership(voters, false).await.map_err(membership_status)?;
                }
                tracing::info!(master = r.id, address = %r.address, voter = r.as_voter, "master added");
                Ok(Reply::new(pb::AddMasterResponse { members: self.members() }))
            })
            .await
    }

    async fn remove_master(
        &self,
        req: Request<pb::RemoveMasterRequest>,
    ) -> Result<Reply<pb::RemoveMasterResponse>, Status> {
        self.shared
            .timed("RemoveMaster", async {
                super::authz::authorize(&req, super::authz::Action::Admin("RemoveMaster"))?;
                if let Route::Remote(addr) = self.shared.route(&req)? {
                    return WeirAdminClient::new(self.shared.channel(&addr)?)
                        .remove_master(forwarded(req))
                        .await
                        .map_err(|s| forward_failed(&addr, s));
                }
                let id = req.into_inner().id;
                let raft = &self.shared.node.raft;
                let m = raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                if membership.get_node(&id).is_none() {
                    return Err(Status::not_found(format!(
                        "id: no master {id} in the cluster"
                    )));
                }
                let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                if voters.remove(&id) {
                    if voters.is_empty() {
                        return Err(Status::failed_precondition(
                            "id: cannot remove the last voter",
                        ));
                    }
                    raft.change_membership(voters, false)
                        .await
                        .map_err(membership_status)?;
                } else {
                    let nodes = openraft::ChangeMembers::RemoveNodes([id].into());
                    raft.change_membership(nodes, false)
                        .await
                        .map_err(membership_status)?;
                }
                tracing::info!(master = id, "master removed");
                Ok(Reply::new(pb::RemoveMasterResponse {
                    members: self.members(),
                }))
            })
            .await
    }
}
