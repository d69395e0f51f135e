use super::*;
use crate::scheduler::GpuSlot;
use std::sync::Arc;
use weir_common::spec::GpuRequest;

/// A worker whose devices have these (free, total) MiB.
fn worker(id: &str, devices: &[(u64, u64)]) -> WorkerCapacity {
    WorkerCapacity {
        id: id.into(),
        alive: true,
        cpu_free: 16.0,
        memory_free_mb: 65_536,
        scenario: Scenario::General,
        gpus: devices
            .iter()
            .enumerate()
            .map(|(i, (free, total))| GpuSlot {
                uuid: format!("{id}-{i}"),
                vendor: Vendor::Nvidia,
                memory_free_mb: *free,
                memory_total_mb: *total,
                model: "m".into(),
            })
            .collect(),
        images: Arc::default(),
        registries: Default::default(),
    }
}

fn req(i: u32, count: u32, mb: u64) -> PeRequest {
    PeRequest {
        pe: PeId::new("m", "00000000", i),
        operator: "m".into(),
        cpu: 1.0,
        memory_mb: 1024,
        gpu: Some(GpuRequest {
            count,
            memory_mb: mb,
            vendor: Vendor::Any,
            scenario: Scenario::General,
        }),
        forward_peers: vec![],
        peer_rates: vec![],
        image: None,
    }
}

fn devices_of(pins: &BTreeMap<PeId, Pin>, ws: &[WorkerCapacity]) -> Vec<String> {
    pins.values()
        .flat_map(|p| p.devices.iter().map(|d| ws[p.worker].gpus[*d].uuid.clone()))
        .collect()
}

#[test]
fn each_rule_picks_its_device() {
    // w1: a half-used device and an empty one; w2: a nearly full one (10 GB free).
    let ws = [
        worker("w1", &[(20_000, 40_000), (40_000, 40_000)]),
        worker("w2", &[(10_000, 40_000)]),
    ];
    let r = req(0, 1, 8_000);
    let pick = |p: DevicePolicy| devices_of(&pin(&p, &ws, &[&r]).unwrap(), &ws);
    assert_eq!(pick(DevicePolicy::FirstFit), ["w1-0"]);
    assert_eq!(
        pick(DevicePolicy::BestFit),
        ["w2-0"],
        "least free that fits"
    );
    assert_eq!(pick(DevicePolicy::Binpack), ["w2-0"], "most used");
    assert_eq!(pick(DevicePolicy::Spread), ["w1-1"], "least used");
    // The objective with binpack weights: the fullest device is the cheapest.
    assert_eq!(pick(DevicePolicy::default()), ["w2-0"]);
}

#[test]
fn the_objective_places_jointly_where_greedy_strands_a_pe() {
    // Devices of 30 and 20 GB free; PEs of 20 and 30 GB in that order. First-fit puts
    // the 20 on the 30 and strands the 30; the objective places both.
    let ws = [worker("w1", &[(30_000, 40_000), (20_000, 40_000)])];
    let (a, b) = (req(0, 1, 20_000), req(1, 1, 30_000));
    assert!(pin(&DevicePolicy::FirstFit, &ws, &[&a, &b]).is_none());
    let pins = pin(&DevicePolicy::default(), &ws, &[&a, &b]).unwrap();
    assert_eq!(pins[&a.pe].devices, [1]);
    assert_eq!(pins[&b.pe].devices, [0]);
}

#[test]
fn slices_of_one_pe_go_to_distinct_devices_of_one_worker() {
    let ws = [
        worker("w1", &[(16_000, 16_000)]),
        worker("w2", &[(16_000, 16_000), (16_000, 16_000)]),
    ];
    let r = req(0, 2, 10_000);
    for p in [
        DevicePolicy::default(),
        DevicePolicy::FirstFit,
        DevicePolicy::BestFit,
        DevicePolicy::Binpack,
        DevicePolicy::Spread,
    ] {
        let pins = pin(&p, &ws, &[&r]).unwrap();
        assert_eq!(pins[&r.pe].worker, 1, "{p:?}");
        assert_eq!(pins[&r.pe].devices, [0, 1], "{p:?}");
    }
}
