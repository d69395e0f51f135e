//! The replicated scheduling policy: `SetSchedulingPolicy` (admin; parsed, so a bad
//! policy is refused naming its field, before anything is proposed) and
//! `GetSchedulingPolicy` (the policy in effect: the replicated one, else the leader's
//! flags).

use super::*;
use crate::scheduler::policy;
use crate::state::scheduling::SchedulingPolicyRecord;

impl WeirService {
    pub(super) async fn scheduling_set(
        &self,
        req: Request<pb::SetSchedulingPolicyRequest>,
    ) -> Result<Reply<pb::SetSchedulingPolicyResponse>, Status> {
        at_leader!(self, req, set_scheduling_policy);
        authorize(&req, Action::Admin("SetSchedulingPolicy"))?;
        let record = req.into_inner().policy.map(|p| SchedulingPolicyRecord {
            gpu_policy: p.gpu_policy,
            gpu_weights: p.gpu_weights,
            fifo_queue: p.fifo_queue,
            set_at_ms: crate::shared::now_ms(),
        });
        if let Some(r) = &record {
            // Bounds first (the state's check), so a huge request is not parsed.
            if let Err(e) = self
                .read(|s| {
                    s.check(&Command::SetSchedulingPolicy {
                        policy: record.clone(),
                    })
                })
                .await
            {
                return Err(command_status(&e));
            }
            policy::of_record(r).map_err(Status::invalid_argument)?;
        }
        self.propose_once(Command::SetSchedulingPolicy {
            policy: record.clone(),
        })
        .await?;
        tracing::info!(policy = ?record, "scheduling policy set");
        Ok(Reply::new(pb::SetSchedulingPolicyResponse {}))
    }

    pub(super) async fn scheduling_get(
        &self,
        req: Request<pb::GetSchedulingPolicyRequest>,
    ) -> Result<Reply<pb::GetSchedulingPolicyResponse>, Status> {
        at_leader!(self, req, get_scheduling_policy);
        authorize(&req, Action::ReadCluster)?;
        self.shared.linearizable().await?;
        let replicated = self.read(|s| s.scheduling.clone()).await;
        let (policy, set_at_ms) = match replicated {
            Some(r) => (
                pb::SchedulingPolicy {
                    gpu_policy: r.gpu_policy,
                    gpu_weights: r.gpu_weights,
                    fifo_queue: r.fifo_queue,
                },
                Some(r.set_at_ms),
            ),
            None => {
                let (gpu_policy, gpu_weights, fifo_queue) = policy::describe(&self.flags_policy);
                let p = pb::SchedulingPolicy {
                    gpu_policy,
                    gpu_weights,
                    fifo_queue,
                };
                (p, None)
            }
        };
        Ok(Reply::new(pb::GetSchedulingPolicyResponse {
            policy: Some(policy),
            replicated: set_at_ms.is_some(),
            set_at_ms: set_at_ms.unwrap_or(0),
        }))
    }
}
