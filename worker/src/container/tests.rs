use super::*;
use bollard::models::{DeviceMapping, DeviceRequest, HostConfig, HostConfigLogConfig};
use std::collections::{BTreeMap, HashMap};
use weir_common::spec::{
    ContainerNetwork, ContainerParams, GpuRequest, PeProtocol, Resources, Scenario, Vendor,
};

fn identity() -> PeIdentity {
    PeIdentity {
        cluster: "weir-test".into(),
        worker: "w1".into(),
        tenant: "acme".into(),
        app: "gpu-square".into(),
        pe: "square@ff0ee89c#0".into(),
        attempt: 3,
    }
}

fn params() -> ContainerParams {
    ContainerParams {
        image: "weir/square:1".into(),
        command: Vec::new(),
        env: BTreeMap::new(),
        protocol: PeProtocol::Framed,
        writable_rootfs: false,
        network: ContainerNetwork::None,
    }
}

fn with_gpus(count: u32, vendor: Vendor) -> Resources {
    Resources {
        cpu: 2.0,
        memory_mb: 4096,
        gpu: Some(GpuRequest {
            count,
            memory_mb: 8000,
            vendor,
            scenario: Scenario::Inference,
        }),
    }
}

fn gpu(uuid: &str, vendor: &str) -> AllocatedGpu {
    AllocatedGpu {
        uuid: uuid.into(),
        vendor: vendor.into(),
    }
}

fn build(p: &ContainerParams, r: &Resources, gpus: &[AllocatedGpu]) -> ContainerConfig {
    container_config(&identity(), p, r, gpus, &AcceleratorNodes::new()).unwrap()
}

fn host(c: &ContainerConfig) -> &HostConfig {
    c.body.host_config.as_ref().unwrap()
}

/// The body's environment as a map (Docker takes `NAME=value` strings).
fn env(c: &ContainerConfig) -> BTreeMap<&str, &str> {
    c.body
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|kv| kv.split_once('=').unwrap())
        .collect()
}

#[test]
fn a_cpu_only_pe_gets_its_limits_no_network_and_nothing_to_escalate_with() {
    let c = build(&params(), &Resources::default(), &[]);
    let b = &c.body;
    assert_eq!(b.image.as_deref(), Some("weir/square:1"));
    assert_eq!(b.cmd, None, "an empty command keeps the image's");
    assert_eq!(b.entrypoint, None);
    assert_eq!(
        (b.attach_stdin, b.attach_stdout, b.attach_stderr),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(
        (b.open_stdin, b.stdin_once, b.tty),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(b.user, None, "the image's user");
    assert_eq!(b.exposed_ports, None);
    assert_eq!(b.networking_config, None);

    let h = host(&c);
    // Resources::default(): 0.25 cores, 256 MiB.
    assert_eq!(h.nano_cpus, Some(250_000_000));
    assert_eq!(h.memory, Some(256 << 20));
    assert_eq!(h.memory_swap, Some(256 << 20));
    assert_eq!(h.cpu_quota, None);
    assert_eq!(h.cpu_shares, None);
    assert_eq!(h.privileged, Some(false));
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(h.cap_add, None);
    assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(h.readonly_rootfs, Some(true));
    assert_eq!(
        h.tmpfs,
        Some(HashMap::from([(
            "/tmp".to_string(),
            "rw,nosuid,nodev".to_string()
        )]))
    );
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_eq!(
        (h.port_bindings.as_ref(), h.publish_all_ports),
        (None, Some(false))
    );
    assert_eq!((h.pid_mode.as_ref(), h.ipc_mode.as_ref()), (None, None));
    assert_eq!((h.binds.as_ref(), h.mounts.as_ref()), (None, None));
    assert_eq!(h.device_requests, None);
    assert_eq!(h.devices, None);
    assert_eq!(h.auto_remove, Some(false));
    assert_eq!(
        h.restart_policy, None,
        "the worker restarts PEs, not Docker"
    );
    assert_eq!(h.init, Some(true));
    assert_eq!(
        h.log_config,
        Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None
        })
    );

    assert_eq!(
        env(&c),
        BTreeMap::from([
            ("CUDA_VISIBLE_DEVICES", ""),
            ("NVIDIA_VISIBLE_DEVICES", "void"),
            ("WEIR_APP", "gpu-square"),
            ("WEIR_ATTEMPT", "3"),
            ("WEIR_GPUS", ""),
            ("WEIR_PE_ID", "square@ff0ee89c#0"),
            ("WEIR_TENANT", "acme"),
        ])
    );
}

#[test]
fn the_body_is_written_with_the_names_the_engine_reads() {
    // Guards against a bollard upgrade renaming a field on the wire.
    let c = build(&params(), &Resources::default(), &[]);
    let v = serde_json::to_value(&c.body).unwrap();
    let h = &v["HostConfig"];
    assert_eq!(h["NanoCpus"], 250_000_000);
    assert_eq!(h["Memory"], 256 << 20);
    assert_eq!(h["Privileged"], false);
    assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(h["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["NetworkMode"], "none");
    assert_eq!(h["AutoRemove"], false);
    assert_eq!(h["LogConfig"]["Type"], "none");
    assert_eq!(v["OpenStdin"], true);
    assert_eq!(v["Labels"]["weir.pe"], "square@ff0ee89c#0");
    assert!(h.get("CapAdd").is_none() && h.get("DeviceRequests").is_none());
}

#[test]
fn command_and_spec_env_are_kept_but_identity_and_devices_win() {
    let mut p = params();
    p.command = vec!["--model".into(), "/models/m".into()];
    p.env = BTreeMap::from([
        ("MODEL_PRECISION".to_string(), "fp16".to_string()),
        ("WEIR_PE_ID".to_string(), "spoofed".to_string()),
        ("NVIDIA_VISIBLE_DEVICES".to_string(), "all".to_string()),
        ("CUDA_VISIBLE_DEVICES".to_string(), "0,1".to_string()),
    ]);
    let c = build(&p, &Resources::default(), &[]);
    assert_eq!(
        c.body.cmd,
        Some(vec!["--model".to_string(), "/models/m".to_string()])
    );
    let e = env(&c);
    assert_eq!(e["MODEL_PRECISION"], "fp16");
    assert_eq!(e["WEIR_PE_ID"], "square@ff0ee89c#0");
    assert_eq!(e["NVIDIA_VISIBLE_DEVICES"], "void");
    assert_eq!(e["CUDA_VISIBLE_DEVICES"], "");
    assert_eq!(e.len(), 8, "{e:?}");
}

#[test]
fn a_writable_rootfs_only_when_the_spec_asks() {
    let mut p = params();
    p.writable_rootfs = true;
    let c = build(&p, &Resources::default(), &[]);
    let h = host(&c);
    assert_eq!(h.readonly_rootfs, Some(false));
    assert_eq!(h.tmpfs, None, "the root itself is writable");
    // Nothing else loosens.
    assert_eq!(h.privileged, Some(false));
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(h.network_mode.as_deref(), Some("none"));
}

#[test]
fn the_tenant_network_when_the_spec_asks() {
    let mut p = params();
    p.network = ContainerNetwork::Tenant;
    let c = build(&p, &Resources::default(), &[]);
    assert_eq!(host(&c).network_mode.as_deref(), Some("weir-tenant-acme"));
    assert_eq!(host(&c).publish_all_ports, Some(false));

    let n = tenant_network("weir-test", "square@ff0ee89c#0", "acme").unwrap();
    assert_eq!(n.name, "weir-tenant-acme");
    assert_eq!(n.driver.as_deref(), Some("bridge"));
    assert_eq!(n.internal, Some(true));
    assert_eq!(n.attachable, Some(false));
    assert_eq!(
        n.labels,
        Some(HashMap::from([
            ("weir.cluster".to_string(), "weir-test".to_string()),
            ("weir.tenant".to_string(), "acme".to_string()),
        ]))
    );

    // A tenant that did not come through the spec parser cannot pick a network.
    let with_tenant = |tenant: &str| {
        let mut id = identity();
        id.tenant = tenant.into();
        container_config(
            &id,
            &p,
            &Resources::default(),
            &[],
            &AcceleratorNodes::new(),
        )
    };
    for bad in ["", "Acme", "a b", "x/../y", &"a".repeat(64)] {
        let e = with_tenant(bad).unwrap_err();
        assert!(
            matches!(e, ConfigError::Tenant { ref tenant, .. } if tenant == bad),
            "{bad:?}: {e:?}"
        );
    }
    // A tenant named `host` gets its own network, not the host's.
    let c = with_tenant("host").unwrap();
    assert_eq!(host(&c).network_mode.as_deref(), Some("weir-tenant-host"));
}

#[test]
fn nvidia_gpus_are_a_device_request_pinned_to_their_uuids() {
    // Two slices on GPU-A (they share it), one on GPU-B.
    let gpus = [
        gpu("GPU-A", "nvidia"),
        gpu("GPU-A", "nvidia"),
        gpu("GPU-B", "nvidia"),
    ];
    let c = build(&params(), &with_gpus(3, Vendor::Nvidia), &gpus);
    let h = host(&c);
    assert_eq!(
        h.device_requests,
        Some(vec![DeviceRequest {
            driver: Some("nvidia".into()),
            count: None,
            device_ids: Some(vec!["GPU-A".into(), "GPU-B".into()]),
            capabilities: Some(vec![vec!["gpu".into()]]),
            options: None,
        }])
    );
    assert_eq!(h.devices, None);
    assert_eq!(h.privileged, Some(false), "GPUs need no privileges");
    assert_eq!(h.nano_cpus, Some(2_000_000_000));
    assert_eq!(h.memory, Some(4096 << 20));
    let e = env(&c);
    assert_eq!(e["NVIDIA_VISIBLE_DEVICES"], "GPU-A,GPU-B");
    assert_eq!(e["CUDA_VISIBLE_DEVICES"], "GPU-A,GPU-B");
    assert_eq!(
        e["WEIR_GPUS"], "GPU-A,GPU-A,GPU-B",
        "one per slice, as exec"
    );
}

#[test]
fn other_vendors_get_their_declared_device_nodes() {
    let nodes = AcceleratorNodes::from([
        (
            "amd-0".to_string(),
            vec!["/dev/kfd".to_string(), "/dev/dri/renderD128".to_string()],
        ),
        (
            "amd-1".to_string(),
            vec!["/dev/kfd".to_string(), "/dev/dri/renderD129".to_string()],
        ),
        ("amd-2".to_string(), vec!["/dev/dri/renderD130".to_string()]),
    ]);
    let gpus = [gpu("amd-0", "amd"), gpu("amd-1", "amd")];
    let c = container_config(
        &identity(),
        &params(),
        &with_gpus(2, Vendor::Amd),
        &gpus,
        &nodes,
    )
    .unwrap();
    let h = host(&c);
    let node = |p: &str| DeviceMapping {
        path_on_host: Some(p.into()),
        path_in_container: Some(p.into()),
        cgroup_permissions: Some("rwm".into()),
    };
    // /dev/kfd once; amd-2's node, not allocated, not at all.
    assert_eq!(
        h.devices,
        Some(vec![
            node("/dev/kfd"),
            node("/dev/dri/renderD128"),
            node("/dev/dri/renderD129"),
        ])
    );
    assert_eq!(h.device_requests, None);
    assert_eq!(h.privileged, Some(false));
    let e = env(&c);
    assert_eq!(e["WEIR_GPUS"], "amd-0,amd-1");
    assert_eq!(e["NVIDIA_VISIBLE_DEVICES"], "void");
    assert_eq!(e["CUDA_VISIBLE_DEVICES"], "");
}

#[test]
fn a_device_that_cannot_be_reached_is_refused() {
    let amd = [gpu("amd-0", "amd")];
    let r = with_gpus(1, Vendor::Amd);
    let refused = |nodes: &AcceleratorNodes, gpus: &[AllocatedGpu], r: &Resources| {
        container_config(&identity(), &params(), r, gpus, nodes).unwrap_err()
    };
    // No nodes declared for it, or an empty list.
    for nodes in [
        AcceleratorNodes::new(),
        AcceleratorNodes::from([("amd-0".to_string(), Vec::new())]),
    ] {
        let e = refused(&nodes, &amd, &r);
        assert_eq!(
            e,
            ConfigError::NoDeviceNodes {
                pe: "square@ff0ee89c#0".into(),
                uuid: "amd-0".into(),
                vendor: "amd".into(),
            }
        );
        assert!(e.to_string().contains("no device nodes declared"), "{e}");
    }
    // A declared node that is not a device.
    let e = refused(
        &AcceleratorNodes::from([("amd-0".to_string(), vec!["/etc/shadow".to_string()])]),
        &amd,
        &r,
    );
    assert!(
        matches!(e, ConfigError::DeviceNode { ref path, .. } if path == "/etc/shadow"),
        "{e:?}"
    );
    // Devices the spec did not ask for, or fewer than it asked for.
    let none = AcceleratorNodes::new();
    assert!(matches!(
        refused(&none, &[gpu("GPU-A", "nvidia")], &Resources::default()),
        ConfigError::GpuCount {
            requested: 0,
            allocated: 1,
            ..
        }
    ));
    assert!(matches!(
        refused(&none, &[], &with_gpus(1, Vendor::Nvidia)),
        ConfigError::GpuCount {
            requested: 1,
            allocated: 0,
            ..
        }
    ));
}

#[test]
fn limits_are_refused_when_meaningless_and_raised_to_dockers_minimum() {
    let refused = |cpu: f64, memory_mb: u64| {
        container_config(
            &identity(),
            &params(),
            &Resources {
                cpu,
                memory_mb,
                gpu: None,
            },
            &[],
            &AcceleratorNodes::new(),
        )
    };
    for cpu in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(refused(cpu, 256), Err(ConfigError::Cpu { .. })),
            "{cpu}"
        );
    }
    for memory_mb in [0, u64::MAX, (i64::MAX as u64 >> 20) + 1] {
        assert!(
            matches!(refused(1.0, memory_mb), Err(ConfigError::Memory { .. })),
            "{memory_mb}"
        );
    }
    let tiny = refused(0.001, 1).unwrap();
    assert_eq!(host(&tiny).nano_cpus, Some(MIN_NANO_CPUS));
    assert_eq!(host(&tiny).memory, Some(MIN_MEMORY_BYTES));
    assert_eq!(host(&tiny).memory_swap, Some(MIN_MEMORY_BYTES));
    let fraction = refused(1.5, 100).unwrap();
    assert_eq!(host(&fraction).nano_cpus, Some(1_500_000_000));
    assert_eq!(host(&fraction).memory, Some(100 << 20));
}

#[test]
fn labels_and_name_identify_the_pe_on_a_shared_engine() {
    let c = build(&params(), &Resources::default(), &[]);
    assert_eq!(
        c.body.labels,
        Some(HashMap::from([
            ("weir.cluster".to_string(), "weir-test".to_string()),
            ("weir.app".to_string(), "gpu-square".to_string()),
            ("weir.pe".to_string(), "square@ff0ee89c#0".to_string()),
            ("weir.attempt".to_string(), "3".to_string()),
            ("weir.worker".to_string(), "w1".to_string()),
        ]))
    );
    let name = &c.name;
    assert_eq!(*name, identity().container_name());
    let (readable, hash) = name.rsplit_once('-').unwrap();
    assert_eq!(readable, "weir-gpu-square-square.ff0ee89c.0-a3");
    assert_eq!(hash.len(), 8);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    // Docker's rule for names: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
    assert!(name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));

    // Any other cluster, worker or attempt, or a PE id differing only in characters
    // Docker refuses, gives another name.
    let mut names = vec![name.clone()];
    for change in [
        |i: &mut PeIdentity| i.cluster = "other".into(),
        |i: &mut PeIdentity| i.worker = "w2".into(),
        |i: &mut PeIdentity| i.attempt = 4,
        |i: &mut PeIdentity| i.pe = "square.ff0ee89c.0".into(),
        |i: &mut PeIdentity| i.pe = "square@ff0ee89c#1".into(),
    ] {
        let mut id = identity();
        change(&mut id);
        names.push(id.container_name());
    }
    let distinct: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
}

#[test]
fn an_identity_with_an_empty_part_is_refused() {
    for (field, change) in [
        (
            "cluster id",
            (|i: &mut PeIdentity| i.cluster.clear()) as fn(&mut PeIdentity),
        ),
        ("worker id", |i: &mut PeIdentity| i.worker.clear()),
        ("app", |i: &mut PeIdentity| i.app.clear()),
        ("PE id", |i: &mut PeIdentity| i.pe.clear()),
    ] {
        let mut id = identity();
        change(&mut id);
        let e = container_config(
            &id,
            &params(),
            &Resources::default(),
            &[],
            &AcceleratorNodes::new(),
        )
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::MissingIdentity { field: f, .. } if f == field),
            "{e:?}"
        );
    }
}

#[test]
fn the_orphan_filter_matches_this_worker_of_this_cluster_only() {
    let f = orphan_filters("weir-test", "w1");
    assert_eq!(
        f,
        HashMap::from([(
            "label".to_string(),
            vec![
                "weir.cluster=weir-test".to_string(),
                "weir.worker=w1".to_string()
            ]
        )])
    );
    let o = orphan_list_options("weir-test", "w1");
    assert!(o.all, "stopped containers are orphans too");
    assert_eq!(o.filters, Some(f));
    // The labels a container gets are what the filter looks for.
    let labels = identity().labels();
    for want in &o.filters.unwrap()["label"] {
        let (k, v) = want.split_once('=').unwrap();
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{want}");
    }
}
