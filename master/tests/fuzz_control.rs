//! Fuzzing the control messages a master reads with proptest (docs/security.md#fuzzing):
//! arbitrary bytes and mutated valid encodings decoded as every request of its
//! services (the public API, the admin API, the workers' API, the Raft transport),
//! then run through the pure conversions and checks the services apply to them,
//! without a network: spec and template text, base images, worker images and PE
//! reports, Raft payloads, and the status details and metadata a client reads back.
//! Nothing may panic; everything is accepted or refused.
//!
//! Cases per property: `PROPTEST_CASES` (default a few seconds' worth in a debug
//! build); `PROPTEST_CASES=200000 cargo test -p weir-master --test fuzz_control` runs
//! long.

use proptest::prelude::*;
use prost::Message;
use weir_common::catalog::{
    parse_app_with, parse_base_image, parse_template, BaseImageFields, Resolve,
};
use weir_common::image::{bound, ImageInfo};
use weir_common::spec::SpecFormat;
use weir_master::convert::final_pe;
use weir_master::raft::{NodeId, TypeConfig};
use weir_proto::status::{
    leader_hint, outcome_unknown_at, validation_problems, LEADER_METADATA_KEY,
    OUTCOME_UNKNOWN_METADATA_KEY,
};
use weir_proto::v1 as pb;

#[path = "../../common/tests/support/fuzz.rs"]
mod fuzz;
use fuzz::{cases, mutate};

/// The spec format a request names, as the API reads it (an unknown value is refused
/// there; any known one is tried here).
fn format(f: i32) -> Option<SpecFormat> {
    match pb::SpecFormat::try_from(f) {
        Ok(pb::SpecFormat::Json) => Some(SpecFormat::Json),
        Ok(_) => Some(SpecFormat::Yaml),
        Err(_) => None,
    }
}

fn spec_text(text: &str, f: i32) {
    if let Some(f) = format(f) {
        let _ = parse_app_with(text, f, Resolve::Offline);
    }
}

/// A message decoded once must encode and decode to itself.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(&again, m);
}

/// What the workers' API does with a worker's resources and reports.
fn worker_reports(worker: &str, resources: Option<&pb::WorkerResources>, pes: &[pb::PeReport]) {
    if let Some(r) = resources {
        let _ = bound(r.images.iter().map(ImageInfo::from).collect());
    }
    for p in pes {
        let _ = final_pe(worker, p);
    }
}

/// Decodes `bytes` as every request a master serves and runs what decodes through
/// the services' pure checks.
fn master_requests(bytes: &[u8]) {
    macro_rules! each {
        ($($t:ty),* $(,)?) => {$(
            if let Ok(m) = <$t>::decode(bytes) {
                round_trip(&m);
            }
        )*};
    }
    each!(
        pb::GetAppRequest,
        pb::ListAppsRequest,
        pb::CancelAppRequest,
        pb::WatchAppRequest,
        pb::ListWorkersRequest,
        pb::ListPoolsRequest,
        pb::ClusterStatusRequest,
        pb::GetAppHistoryRequest,
        pb::ListCheckpointsRequest,
        pb::ListBaseImagesRequest,
        pb::RemoveBaseImageRequest,
        pb::ListTemplatesRequest,
        pb::GetTemplateRequest,
        pb::RemoveTemplateRequest,
        pb::AddMasterRequest,
        pb::RemoveMasterRequest,
        pb::AppendEntriesRequest,
        pb::VoteRequest,
        pb::InstallSnapshotRequest,
    );
    if let Ok(m) = pb::SubmitAppRequest::decode(bytes) {
        round_trip(&m);
        spec_text(&m.spec, m.format);
    }
    if let Ok(m) = pb::UpgradeAppRequest::decode(bytes) {
        round_trip(&m);
        spec_text(&m.spec, m.format);
    }
    if let Ok(m) = pb::AddTemplateRequest::decode(bytes) {
        round_trip(&m);
        if let Some(f) = format(m.format) {
            let _ = parse_template(&m.text, f);
        }
    }
    if let Ok(m) = pb::RegisterBaseImageRequest::decode(bytes) {
        round_trip(&m);
        if let Some(b) = &m.image {
            let _ = parse_base_image(&BaseImageFields {
                name: &b.name,
                image: &b.image,
                scenario: &b.scenario,
                vendor: &b.vendor,
                framework: &b.framework,
                description: &b.description,
            });
        }
    }
    if let Ok(m) = pb::RegisterWorkerRequest::decode(bytes) {
        round_trip(&m);
        worker_reports(&m.worker_id, m.resources.as_ref(), &m.pes);
    }
    if let Ok(m) = pb::HeartbeatRequest::decode(bytes) {
        round_trip(&m);
        worker_reports(&m.worker_id, m.resources.as_ref(), &m.pes);
    }
    raft_payload(bytes);
}

/// The Raft transport decodes a request's payload as JSON of openraft's messages.
fn raft_payload(bytes: &[u8]) {
    let _ = serde_json::from_slice::<openraft::raft::AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = serde_json::from_slice::<openraft::raft::VoteRequest<NodeId>>(bytes);
    let _ = serde_json::from_slice::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(bytes);
}

/// What a client reads from a refusal: validation problems in the details, leader
/// hints in the metadata.
fn status_details(details: &[u8], metadata: &str) {
    let mut status = tonic::Status::with_details(
        tonic::Code::InvalidArgument,
        "x",
        prost::bytes::Bytes::copy_from_slice(details),
    );
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(metadata) {
        status.metadata_mut().insert(LEADER_METADATA_KEY, v.clone());
        status
            .metadata_mut()
            .insert(OUTCOME_UNKNOWN_METADATA_KEY, v);
    }
    let _ = validation_problems(&status);
    let _ = leader_hint(&status);
    let _ = outcome_unknown_at(&status);
}

/// Valid requests of each kind, encoded: the seeds that mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let spec = include_str!("../../examples/clickstream.yaml").to_string();
    let report = pb::PeReport {
        pe: "a/op/0".into(),
        app: "a".into(),
        state: 2,
        stats: Some(pb::PeStats {
            records_in: 5,
            ..Default::default()
        }),
        gpu_uuids: vec!["GPU-1".into()],
        verify: Some(pb::VerifySummary::default()),
        ..Default::default()
    };
    let resources = pb::WorkerResources {
        cpu_cores: 2.0,
        memory_mb: 1024,
        images: vec![pb::DockerImage {
            id: "sha256:1".into(),
            tags: vec!["weir-pe-score:v1".into()],
            digests: vec![],
            size_bytes: 1,
        }],
        ..Default::default()
    };
    let validation = pb::ValidationFailure {
        problems: vec![pb::Problem {
            path: "name".into(),
            rule: "required".into(),
        }],
    };
    vec![
        pb::SubmitAppRequest {
            spec: spec.clone(),
            format: pb::SpecFormat::Yaml as i32,
            request_id: "r-1".into(),
            signature: None,
        }
        .encode_to_vec(),
        pb::UpgradeAppRequest {
            app: "clickstream".into(),
            spec,
            format: pb::SpecFormat::Yaml as i32,
            dry_run: true,
            expected_version: 1,
            request_id: "r-2".into(),
            signature: None,
        }
        .encode_to_vec(),
        pb::AddTemplateRequest {
            text: include_str!("../../examples/templates/scorer.yaml").into(),
            format: pb::SpecFormat::Yaml as i32,
        }
        .encode_to_vec(),
        pb::HeartbeatRequest {
            worker_id: "w-1".into(),
            incarnation: 3,
            resources: Some(resources.clone()),
            pes: vec![report.clone()],
        }
        .encode_to_vec(),
        pb::RegisterWorkerRequest {
            worker_id: "w-1".into(),
            control_address: "127.0.0.1:1".into(),
            data_address: "127.0.0.1:2".into(),
            resources: Some(resources),
            pes: vec![report],
            ..Default::default()
        }
        .encode_to_vec(),
        validation.encode_to_vec(),
        br#"{"vote":{"leader_id":{"term":1,"node_id":1},"committed":false},"prev_log_id":null,"entries":[],"leader_commit":null}"#.to_vec(),
    ]
}

#[test]
fn every_seed_decodes_and_passes_through() {
    for s in seeds() {
        master_requests(&s);
        status_details(&s, "127.0.0.1:7000");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        master_requests(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let seeds = seeds();
        let mut bytes = which.get(&seeds).clone();
        mutate(&mut bytes, &edits);
        master_requests(&bytes);
    }

    #[test]
    fn arbitrary_status_details_never_panic(
        details in proptest::collection::vec(any::<u8>(), 0..256),
        metadata in "\\PC{0,40}",
    ) {
        status_details(&details, &metadata);
    }

    #[test]
    fn mutated_validation_details_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let status = weir_proto::status::validation_failure(vec![pb::Problem {
            path: "operators[1].name".into(),
            rule: "required".into(),
        }]);
        let mut details = status.details().to_vec();
        mutate(&mut details, &edits);
        status_details(&details, "x");
    }
}
