//! Protocol conventions carried outside the messages: the validation problems of a
//! refused spec in the status details, and the metadata keys for leader hints, calls
//! of unknown outcome and tenancy. Servers and clients both use these, so the wire format lives in one place.

use crate::v1::{Problem, ValidationFailure};
use prost::bytes::Bytes;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Response metadata key naming the leader's address (`host:port`) on a
/// FAILED_PRECONDITION from a master that is not the leader.
pub const LEADER_METADATA_KEY: &str = "x-weir-leader";

/// Response metadata key naming the leader (`host:port`) that failed before answering
/// a call a follower forwarded to it: the call may or may not have been applied.
pub const OUTCOME_UNKNOWN_METADATA_KEY: &str = "x-weir-outcome-unknown";

/// Request metadata key naming the caller's tenant (client API).
pub const TENANT_METADATA_KEY: &str = "x-weir-tenant";

/// Type URL of [`ValidationFailure`] inside the `google.rpc.Status` details.
pub const VALIDATION_FAILURE_TYPE_URL: &str = "type.googleapis.com/weir.v1.ValidationFailure";

/// Wire-compatible copy of `google.rpc.Status`: the standard payload of the
/// `grpc-status-details-bin` trailer, which tonic exposes as [`Status::details`].
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    code: i32,
    /// The status message.
    #[prost(string, tag = "2")]
    message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// INVALID_ARGUMENT for a refused spec: the message lists every problem (for humans and
/// for tools that ignore details), and the details carry them as a
/// [`ValidationFailure`] (for programs).
pub fn validation_failure(problems: Vec<Problem>) -> Status {
    let mut message = format!("{} problem(s) in spec", problems.len());
    for p in &problems {
        message.push_str(&format!("\n  {}: {}", p.path, p.rule));
    }
    let detail = prost_types::Any {
        type_url: VALIDATION_FAILURE_TYPE_URL.to_string(),
        value: ValidationFailure { problems }.encode_to_vec(),
    };
    let rpc = RpcStatus {
        code: Code::InvalidArgument as i32,
        message: message.clone(),
        details: vec![detail],
    };
    Status::with_details(
        Code::InvalidArgument,
        message,
        Bytes::from(rpc.encode_to_vec()),
    )
}

/// The validation problems attached to a status by [`validation_failure`], if any.
pub fn validation_problems(status: &Status) -> Option<Vec<Problem>> {
    if status.details().is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|d| d.type_url == VALIDATION_FAILURE_TYPE_URL)
        .and_then(|d| ValidationFailure::decode(d.value.as_slice()).ok())
        .map(|v| v.problems)
}

/// The answer of a master that is not the leader: FAILED_PRECONDITION with the
/// leader's address in [`LEADER_METADATA_KEY`] when it is known, UNAVAILABLE when no
/// leader is known (an election is in progress; the caller retries after a backoff).
pub fn not_leader(leader_address: Option<&str>) -> Status {
    match leader_address.and_then(|a| MetadataValue::try_from(a).ok().map(|v| (a, v))) {
        Some((address, value)) => {
            let mut status =
                Status::failed_precondition(format!("not the leader; the leader is at {address}"));
            status.metadata_mut().insert(LEADER_METADATA_KEY, value);
            status
        }
        None => Status::unavailable("no leader known; retry shortly"),
    }
}

/// The leader address a master put in a status (see [`not_leader`]), if any.
pub fn leader_hint(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// The answer of a master whose call forwarded to the leader at `leader_address` got no
/// answer back (the leader died, the connection broke): UNKNOWN, saying the call may
/// or may not have been applied, with the leader's address in
/// [`OUTCOME_UNKNOWN_METADATA_KEY`] so a client can tell it from a refusal and knows
/// whether repeating the call is safe.
pub fn outcome_unknown(leader_address: &str, cause: &str) -> Status {
    let mut status = Status::unknown(format!(
        "the leader at {leader_address} failed before answering ({cause}); \
         the call may or may not have been applied"
    ));
    if let Ok(v) = MetadataValue::try_from(leader_address) {
        status
            .metadata_mut()
            .insert(OUTCOME_UNKNOWN_METADATA_KEY, v);
    }
    status
}

/// The leader a status says failed before answering (see [`outcome_unknown`]), if any.
pub fn outcome_unknown_at(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(OUTCOME_UNKNOWN_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}
