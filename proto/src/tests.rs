use crate::status::{leader_hint, not_leader, validation_failure, validation_problems};
use crate::v1::*;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode_to_vec();
    let back = M::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(&back, m);
}

#[test]
fn submit_app_request_round_trips() {
    let req = SubmitAppRequest {
        spec: "name: demo\noperators: []\nstreams: []\n".to_string(),
        format: SpecFormat::Yaml as i32,
        request_id: "5b0f6a52-3a6e-4a0c-9a55-3c1c2d1e0f00".to_string(),
        signature: None,
    };
    round_trip(&req);
    let back = SubmitAppRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.format(), SpecFormat::Yaml);
}

fn header() -> CommandHeader {
    CommandHeader {
        command_id: "0d9c1f7e-1111-4222-8333-444455556666".to_string(),
        term: 7,
        leader_id: 2,
    }
}

#[test]
fn control_commands_with_oneofs_round_trip() {
    let switch = SwitchOutput {
        pe: "parse@3f9a1c2b#0".to_string(),
        stream: "parse->count".to_string(),
        partitioning: Some(Partitioning {
            kind: partitioning::Kind::Hash as i32,
            key_field: "user".to_string(),
        }),
        targets: vec![
            "count@0badf00d#0".to_string(),
            "count@0badf00d#1".to_string(),
        ],
    };
    let group = InstructionGroup {
        target: Some(instruction_group::Target::WorkerId("w1".to_string())),
        instructions: vec![
            Instruction {
                kind: Some(instruction::Kind::SwitchOutput(switch.clone())),
            },
            Instruction {
                kind: Some(instruction::Kind::Drain(Drain {
                    pe: "count@12345678#0".to_string(),
                    hand_off_to: vec!["count@0badf00d#0".to_string()],
                })),
            },
        ],
    };
    round_trip(&group);
    let back = InstructionGroup::decode(group.encode_to_vec().as_slice()).unwrap();
    match &back.instructions[0].kind {
        Some(instruction::Kind::SwitchOutput(s)) => {
            assert_eq!(
                s.partitioning.as_ref().unwrap().kind(),
                partitioning::Kind::Hash
            )
        }
        other => panic!("wrong variant: {other:?}"),
    }

    round_trip(&SwitchOutputRequest {
        header: Some(header()),
        app: "demo".to_string(),
        switch_output: Some(switch),
        barrier_id: 42,
        pe_addresses: [("count@0badf00d#1".to_string(), "10.0.0.2:7101".to_string())]
            .into_iter()
            .collect(),
        peer_attempts: [("count@0badf00d#1".to_string(), 3)].into_iter().collect(),
    });

    let event = AppEvent {
        app: "demo".to_string(),
        seq: 3,
        at_ms: 1_700_000_000_000,
        version: 2,
        event: Some(app_event::Event::UpgradePhaseChanged(UpgradePhaseChanged {
            operation_id: "op-1".to_string(),
            phase: UpgradePhase::Switch as i32,
            from_version: 1,
            to_version: 2,
            instructions_done: 3,
            instructions_total: 8,
            reason: String::new(),
        })),
    };
    round_trip(&event);
}

#[test]
fn state_chunks_and_raft_payloads_are_bytes() {
    let data = prost::bytes::Bytes::from_static(b"state");
    let chunk = StateChunk {
        app: "demo".to_string(),
        from_pe: "count@12345678#0".to_string(),
        to_pe: "count@0badf00d#0".to_string(),
        barrier_id: 42,
        offset: 0,
        data: data.clone(),
        last: true,
        crc32c: 0,
        key_groups: Some(KeyGroupRange { start: 0, end: 128 }),
        total_bytes: 5,
        snapshot_crc32c: 0,
    };
    round_trip(&chunk);
    round_trip(&AppendEntriesRequest {
        header: Some(RaftHeader {
            cluster_id: "c1".to_string(),
            from_id: 1,
            to_id: 2,
            encoding: PayloadEncoding::Json as i32,
        }),
        payload: data,
    });
}

#[test]
fn optional_fields_distinguish_absent_from_zero() {
    let added = OperatorChange {
        name: "enrich".to_string(),
        kind: OperatorChangeKind::Added as i32,
        reasons: vec![],
        old_parallelism: None,
        new_parallelism: Some(2),
    };
    round_trip(&added);
    let back = OperatorChange::decode(added.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.old_parallelism, None);
}

#[test]
fn validation_problems_travel_in_status_details() {
    let problems = vec![
        Problem {
            path: "operators[2].params.rate".to_string(),
            rule: "must be > 0".to_string(),
        },
        Problem {
            path: "streams[0].to".to_string(),
            rule: "no operator named `sink`".to_string(),
        },
    ];
    let status = validation_failure(problems.clone());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status
        .message()
        .contains("operators[2].params.rate: must be > 0"));
    assert_eq!(validation_problems(&status), Some(problems));
    assert_eq!(validation_problems(&tonic::Status::not_found("x")), None);
}

#[test]
fn leader_hints_travel_in_metadata() {
    let status = not_leader(Some("10.0.0.1:7000"));
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(leader_hint(&status), Some("10.0.0.1:7000"));
    let status = not_leader(None);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(leader_hint(&status), None);
}

#[test]
fn file_descriptor_set_names_every_service() {
    let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<&str> = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter().filter_map(|s| s.name.as_deref()))
        .collect();
    for s in [
        "Weir",
        "WeirAdmin",
        "WorkerControl",
        "MasterWorkers",
        "RaftTransport",
    ] {
        assert!(services.contains(&s), "{s} missing from {services:?}");
    }
    assert!(fds
        .file
        .iter()
        .all(|f| f.package.as_deref() == Some("weir.v1")));
}
