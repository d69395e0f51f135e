//! The scheduler simulator: replays a synthetic trace (arrivals and departures of apps
//! of several tenants, with GPU slices of several sizes, on a heterogeneous cluster)
//! through the real scheduler: the replicated state applies every command
//! (`SubmitApp`, `SetPlacement`, `Preempt`, `CancelApp`) and the reconciler's pure
//! decision (`reconcile_with`) places apps, tick after tick, exactly as a leader does.
//! The same trace runs under each policy in the same run:
//!
//! - `weir`: the queue (class, then the tenant with the lowest recent share, then
//!   arrival) and the GPU-memory objective (binpack weights, solved exactly for small
//!   instances);
//! - `first-fit`: FIFO queue, each slice on the first device with room;
//! - `best-fit`: FIFO queue, each slice on the device with the least free memory that
//!   fits, as gpushare places GPU memory;
//! - `binpack` / `spread`: FIFO queue, each slice on the most / least used device, as
//!   HAMi scores devices.
//!
//! Reported per policy: GPU-memory utilisation (mean of allocated / total over the
//! run), fragmentation (free GPU memory on devices no pending slice fits, as a share of
//! free memory, while slices wait), Jain's fairness index across tenants (each tenant's
//! GPU memory received over its max-min fair share of what it asked, integrated over
//! time; 1.0 is perfectly fair), and app wait times p50/p99 (submit to placement;
//! apps never placed count their wait until the end).
//!
//! Run: `cargo bench -p weir-tests --bench scheduler_sim` (a few minutes on 2 cores).

use std::collections::{BTreeMap, HashMap};
use weir_common::spec::{parse_app, SpecFormat};
use weir_master::executor::reconcile::{capacities, reconcile_with, PlacementMemo};
use weir_master::scheduler::{DevicePolicy, Policy, QueueOrder};
use weir_master::state::{ClusterState, Command, GpuRecord, WorkerRecord, WorkerState};

/// A tiny deterministic PRNG (xorshift64*), so every policy sees the same trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// Exponential with this mean.
    fn exp(&mut self, mean: f64) -> f64 {
        let u = (self.below(1 << 53) as f64 + 1.0) / (1u64 << 53) as f64;
        -mean * u.ln()
    }
}

/// One app of the trace.
#[derive(Clone, Debug)]
struct Job {
    name: String,
    tenant: &'static str,
    priority: &'static str,
    /// Arrival, s.
    at: u64,
    /// Run time once placed, s.
    run: u64,
    /// GPU PEs, each asking `slices` of `slice_mb` of `vendor`.
    pes: u32,
    slices: u32,
    slice_mb: u64,
    vendor: &'static str,
}

/// Workers: (count, scenario label, vendor, model, devices, MiB per device).
const NODES: &[(usize, &str, &str, &str, usize, u64)] = &[
    (4, "training", "nvidia", "h100-80g", 8, 81_920),
    (4, "inference", "nvidia", "a100-40g", 4, 40_960),
    (4, "general", "nvidia", "l4-24g", 4, 24_576),
    (2, "general", "amd", "mi210-64g", 4, 65_536),
];

/// Tenants and their share of arrivals (one heavy, three light).
const TENANTS: &[(&str, u64)] = &[("alpha", 50), ("beta", 20), ("gamma", 20), ("delta", 10)];

/// Classes, one in five low and one in five high.
const PRIORITIES: [&str; 5] = ["low", "normal", "normal", "normal", "high"];

const SLICES_MB: &[u64] = &[4_096, 8_192, 10_240, 16_384, 20_480, 40_960];

fn trace(seed: u64, horizon: u64, mean_gap_s: f64) -> Vec<Job> {
    let mut r = Rng(seed);
    let mut t = 0.0;
    let mut out = Vec::new();
    while (t as u64) < horizon {
        t += r.exp(mean_gap_s);
        let w = r.below(100);
        let mut acc = 0;
        let tenant = TENANTS
            .iter()
            .find(|(_, p)| {
                acc += p;
                w < acc
            })
            .map_or("alpha", |(n, _)| n);
        let vendor = if r.below(10) < 2 { "amd" } else { "nvidia" };
        out.push(Job {
            name: format!("j{}", out.len()),
            tenant,
            priority: PRIORITIES[r.below(PRIORITIES.len() as u64) as usize],
            at: t as u64,
            run: 60 + r.exp(600.0) as u64,
            pes: *r.pick(&[1, 1, 2, 4]),
            slices: *r.pick(&[1, 1, 1, 2]),
            slice_mb: *r.pick(SLICES_MB),
            vendor,
        });
    }
    out
}

fn spec(j: &Job) -> String {
    format!(
        "name: {}\ntenant: {}\npriority: {}\ncheckpoint_interval_ms: 0\noperators:\n  - {{name: g, kind: source.generator, params: {{rate: 1}}}}\n  - {{name: m, kind: exec, parallelism: {}, params: {{command: [cat]}}, resources: {{cpu: 1, memory_mb: 1024, gpu: {{count: {}, memory_mb: {}, vendor: {}}}}}}}\n  - {{name: s, kind: sink.null}}\nstreams:\n  - {{from: g, to: m, partitioning: round_robin}}\n  - {{from: m, to: s, partitioning: round_robin}}\n",
        j.name, j.tenant, j.priority, j.pes, j.slices, j.slice_mb, j.vendor
    )
}

fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    let mut n = 0;
    for (count, scenario, vendor, model, devices, mb) in NODES {
        for _ in 0..*count {
            n += 1;
            let id = format!("w{n:02}");
            let worker = WorkerRecord {
                id: id.clone(),
                control_address: format!("{id}:1"),
                data_address: format!("{id}:2"),
                cpu_cores: 256.0,
                memory_mb: 2 << 20,
                gpus: (0..*devices)
                    .map(|d| GpuRecord {
                        uuid: format!("GPU-{id}-{d}"),
                        vendor: vendor.to_string(),
                        model: model.to_string(),
                        memory_total_mb: *mb,
                        declared: true,
                    })
                    .collect(),
                labels: [("scenario".to_string(), scenario.to_string())].into(),
                state: WorkerState::Alive,
                incarnation: 0,
                registered_at_ms: 0,
                state_since_ms: 0,
                images: Default::default(),
                registries: Default::default(),
            };
            s.apply(&Command::RegisterWorker { worker })
                .expect("register");
        }
    }
    s
}

/// Max-min fair division of `capacity` among `demands` (water-filling).
fn fair_shares(demands: &[f64], capacity: f64) -> Vec<f64> {
    let mut out = vec![0.0; demands.len()];
    let mut left = capacity;
    let mut open: Vec<usize> = (0..demands.len()).filter(|i| demands[*i] > 0.0).collect();
    while !open.is_empty() && left > 1e-9 {
        let each = left / open.len() as f64;
        let mut still = Vec::new();
        for i in open {
            let want = demands[i] - out[i];
            if want <= each {
                out[i] += want;
                left -= want;
            } else {
                still.push(i);
            }
        }
        if still.iter().all(|i| demands[*i] - out[*i] > each) {
            for i in &still {
                out[*i] += each;
            }
            left = 0.0;
        }
        open = still;
    }
    out
}

#[derive(Default)]
struct Report {
    utilisation: f64,
    fragmentation: f64,
    jain: f64,
    wait_p50_s: u64,
    wait_p99_s: u64,
    placed: usize,
    preempted: usize,
    decide_ms_p99: f64,
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn run(policy: &Policy, jobs: &[Job], horizon: u64) -> Report {
    let by_name: HashMap<&str, &Job> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut s = cluster();
    let mut memo = PlacementMemo::default();
    let mut left: BTreeMap<String, u64> = BTreeMap::new();
    let mut waited: BTreeMap<String, u64> = BTreeMap::new();
    let (mut util, mut frag, mut frag_n) = (0.0, 0.0, 0u64);
    let tenants: Vec<&str> = TENANTS.iter().map(|(t, _)| *t).collect();
    let (mut got, mut fair) = (vec![0.0; tenants.len()], vec![0.0; tenants.len()]);
    let mut next = 0;
    let mut preempted = 0;
    let mut decide = Vec::new();
    let total_gpu: f64 = NODES
        .iter()
        .map(|(c, _, _, _, d, mb)| (*c * *d) as f64 * *mb as f64)
        .sum();
    for t in 0..horizon {
        let now = t * 1000 + 1;
        // Departures: apps that ran their time.
        let done: Vec<String> = left
            .iter()
            .filter(|(_, l)| **l == 0)
            .map(|(a, _)| a.clone())
            .collect();
        for app in done {
            left.remove(&app);
            s.apply(&Command::CancelApp {
                name: app,
                at_ms: now,
                request_id: String::new(),
            })
            .expect("cancel");
        }
        // Arrivals.
        while next < jobs.len() && jobs[next].at <= t {
            let j = &jobs[next];
            let text = spec(j);
            s.apply(&Command::SubmitApp {
                spec: parse_app(&text, SpecFormat::Yaml).expect("trace spec"),
                spec_text: text,
                at_ms: now,
                request_id: String::new(),
                generated: Default::default(),
                signature: None,
            })
            .expect("submit");
            next += 1;
        }
        let started = std::time::Instant::now();
        let a = reconcile_with(&s, &BTreeMap::new(), now, &mut memo, policy);
        decide.push(started.elapsed().as_secs_f64() * 1000.0);
        for (app, by) in &a.preemptions {
            if s.apply(&Command::Preempt {
                app: app.clone(),
                by: by.clone(),
                at_ms: now,
            })
            .is_ok()
            {
                preempted += 1;
            }
        }
        for (app, placement) in a.placements {
            let gpus = a.gpus.get(&app).cloned().unwrap_or_default();
            if s.apps[&app].placement.is_empty() {
                let rec = &s.apps[&app];
                waited
                    .entry(app.clone())
                    .or_insert(now.saturating_sub(rec.created_at_ms) / 1000);
                let run = by_name.get(app.as_str()).map_or(60, |j| j.run);
                left.entry(app.clone()).or_insert(run);
            }
            s.apply(&Command::SetPlacement {
                app,
                placement,
                gpus,
                at_ms: now,
            })
            .expect("placement");
        }
        // One second passes for every placed app.
        for (app, l) in left.iter_mut() {
            if s.apps.get(app).is_some_and(|a| !a.placement.is_empty()) {
                *l = l.saturating_sub(1);
            }
        }
        // Metrics of this second.
        let free = capacities(&s);
        let free_mb: Vec<(String, u64)> = free
            .iter()
            .flat_map(|w| w.gpus.iter().map(|g| (g.uuid.clone(), g.memory_free_mb)))
            .collect();
        let free_total: u64 = free_mb.iter().map(|(_, f)| f).sum();
        util += 1.0 - free_total as f64 / total_gpu;
        let waiting: Vec<&str> = s
            .apps
            .values()
            .filter(|a| a.state().is_live() && a.placement.is_empty())
            .map(|a| a.name.as_str())
            .collect();
        let min_slice = waiting
            .iter()
            .filter_map(|a| by_name.get(a))
            .map(|j| j.slice_mb)
            .min();
        if let Some(min) = min_slice {
            if free_total > 0 {
                let stranded: u64 = free_mb.iter().map(|(_, f)| *f).filter(|f| *f < min).sum();
                frag += stranded as f64 / free_total as f64;
                frag_n += 1;
            }
        }
        let mut demand = vec![0.0; tenants.len()];
        let mut held = vec![0.0; tenants.len()];
        for a in s.apps.values().filter(|a| a.state().is_live()) {
            let Some(i) = tenants.iter().position(|t| *t == a.tenant) else {
                continue;
            };
            let Some(j) = by_name.get(a.name.as_str()) else {
                continue;
            };
            let mb = (j.pes * j.slices) as f64 * j.slice_mb as f64;
            demand[i] += mb;
            if !a.placement.is_empty() {
                held[i] += mb;
            }
        }
        let f = fair_shares(&demand, total_gpu);
        for i in 0..tenants.len() {
            got[i] += held[i].min(f[i]);
            fair[i] += f[i];
        }
    }
    let x: Vec<f64> = (0..tenants.len())
        .filter(|i| fair[*i] > 0.0)
        .map(|i| got[i] / fair[i])
        .collect();
    let jain =
        x.iter().sum::<f64>().powi(2) / (x.len() as f64 * x.iter().map(|v| v * v).sum::<f64>());
    let mut waits: Vec<u64> = jobs
        .iter()
        .map(|j| {
            waited
                .get(&j.name)
                .copied()
                .unwrap_or(horizon.saturating_sub(j.at))
        })
        .collect();
    let mut decide_us: Vec<u64> = decide.iter().map(|d| (d * 1000.0) as u64).collect();
    Report {
        utilisation: util / horizon as f64,
        fragmentation: if frag_n == 0 {
            0.0
        } else {
            frag / frag_n as f64
        },
        jain,
        wait_p50_s: percentile(&mut waits, 0.5),
        wait_p99_s: percentile(&mut waits, 0.99),
        placed: waited.len(),
        preempted,
        decide_ms_p99: percentile(&mut decide_us, 0.99) as f64 / 1000.0,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scheduler_sim: a benchmark; run it with cargo bench");
        return;
    }
    let horizon = 3 * 3600 / 2;
    let policies: Vec<(&str, Policy)> = vec![
        ("weir", Policy::default()),
        (
            "first-fit",
            Policy {
                devices: DevicePolicy::FirstFit,
                queue: QueueOrder::Fifo,
            },
        ),
        (
            "best-fit",
            Policy {
                devices: DevicePolicy::BestFit,
                queue: QueueOrder::Fifo,
            },
        ),
        (
            "binpack",
            Policy {
                devices: DevicePolicy::Binpack,
                queue: QueueOrder::Fifo,
            },
        ),
        (
            "spread",
            Policy {
                devices: DevicePolicy::Spread,
                queue: QueueOrder::Fifo,
            },
        ),
    ];
    // Each app asks about 40 GiB of GPU memory for about 11 minutes on average: one
    // every 10 s keeps the cluster about 90 % busy, one every 6 s asks 1.5x what it has.
    for (load, gap) in [("busy", 10.0), ("overloaded", 6.0)] {
        let jobs = trace(7, horizon, gap);
        println!(
            "\ntrace: {} apps over {:.1} h ({load}: one every {gap} s on average), {} workers, {} GPUs",
            jobs.len(),
            horizon as f64 / 3600.0,
            NODES.iter().map(|n| n.0).sum::<usize>(),
            NODES.iter().map(|n| n.0 * n.4).sum::<usize>()
        );
        println!(
            "{:<10} {:>8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>9} {:>12}",
            "policy",
            "util %",
            "frag %",
            "Jain",
            "wait p50",
            "wait p99",
            "placed",
            "preempted",
            "decide p99"
        );
        let mut rows = Vec::new();
        for (name, p) in &policies {
            let r = run(p, &jobs, horizon);
            println!(
                "{:<10} {:>8.1} {:>8.1} {:>7.3} {:>8}s {:>8}s {:>7} {:>9} {:>10.2}ms",
                name,
                r.utilisation * 100.0,
                r.fragmentation * 100.0,
                r.jain,
                r.wait_p50_s,
                r.wait_p99_s,
                r.placed,
                r.preempted,
                r.decide_ms_p99
            );
            rows.push((name, r));
        }
        let weir = &rows[0].1;
        for (name, r) in &rows[1..] {
            println!(
                "weir vs {name:<9}: fragmentation {:+.1} points, Jain {:+.3}, utilisation {:+.1} points, wait p99 {:+} s",
                (weir.fragmentation - r.fragmentation) * 100.0,
                weir.jain - r.jain,
                (weir.utilisation - r.utilisation) * 100.0,
                weir.wait_p99_s as i64 - r.wait_p99_s as i64
            );
        }
    }
}
