use super::*;
use proptest::prelude::*;

const GIB: u64 = 1024;

/// A small deterministic PRNG (xorshift64*), so that random instances, and the figures
/// measured on them, are the same on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // SplitMix64 once: nearby seeds give unrelated streams, and the state is never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The size of random instances.
struct Shape {
    hosts: u64,
    devices_per_host: u64,
    tasks: u64,
    max_slices: u64,
    /// Whether tasks without slices occur.
    cpu_only: bool,
}

/// The instances of the brief: 1–4 hosts of 1–4 devices, 1–8 tasks of 1–2 slices.
const SMALL: Shape = Shape {
    hosts: 4,
    devices_per_host: 4,
    tasks: 8,
    max_slices: 2,
    cpu_only: false,
};

/// Small enough for brute force.
const TINY: Shape = Shape {
    hosts: 2,
    devices_per_host: 3,
    tasks: 3,
    max_slices: 2,
    cpu_only: true,
};

/// Too large for the exact solver.
const MEDIUM: Shape = Shape {
    hosts: 12,
    devices_per_host: 8,
    tasks: 40,
    max_slices: 4,
    cpu_only: true,
};

fn random_problem(rng: &mut Rng, shape: &Shape) -> Problem {
    let hosts: Vec<Host> = (0..rng.range(1, shape.hosts))
        .map(|_| Host {
            cpu_free: rng.range(2, 24) as f64 * 0.5,
            memory_free_mb: rng.range(4, 48) * GIB / 2,
        })
        .collect();
    let mut devices = Vec::new();
    for h in 0..hosts.len() {
        for _ in 0..rng.range(1, shape.devices_per_host) {
            devices.push(Device {
                host: h,
                free_mb: rng.range(1, 16) * GIB / 2,
                weight: 0.5 + 1.5 * rng.unit(),
            });
        }
    }
    let min_slices = if shape.cpu_only { 0 } else { 1 };
    let tasks = (0..rng.range(1, shape.tasks))
        .map(|_| Task {
            slices: rng.range(min_slices, shape.max_slices) as u32,
            slice_mb: rng.range(1, 8) * GIB / 2,
            cpu: rng.range(0, 6) as f64 * 0.5,
            memory_mb: rng.range(0, 8) * GIB / 2,
            eligible: (0..devices.len()).filter(|_| rng.chance(0.8)).collect(),
        })
        .collect();
    Problem {
        hosts,
        devices,
        tasks,
    }
}

/// Every placement of one task that names eligible devices (possibly on several
/// hosts: `check` rejects those).
fn options_of(p: &Problem, t: &Task) -> Vec<Placement> {
    if t.slices == 0 {
        return (0..p.hosts.len())
            .map(|host| Placement {
                host,
                devices: vec![],
            })
            .collect();
    }
    let mut eligible: Vec<usize> = t
        .eligible
        .iter()
        .copied()
        .filter(|&d| d < p.devices.len())
        .collect();
    eligible.sort_unstable();
    eligible.dedup();
    let mut out = Vec::new();
    subsets(&eligible, t.slices as usize, 0, &mut vec![], &mut out);
    out.into_iter()
        .map(|devices| Placement {
            host: p.devices[devices[0]].host,
            devices,
        })
        .collect()
}

fn subsets(
    from: &[usize],
    k: usize,
    start: usize,
    cur: &mut Vec<usize>,
    out: &mut Vec<Vec<usize>>,
) {
    if cur.len() == k {
        out.push(cur.clone());
        return;
    }
    for i in start..from.len() {
        cur.push(from[i]);
        subsets(from, k, i + 1, cur, out);
        cur.pop();
    }
}

/// The optimum by trying every combination, judged by `check` alone.
fn brute_force(p: &Problem) -> Option<f64> {
    let options: Vec<Vec<Placement>> = p.tasks.iter().map(|t| options_of(p, t)).collect();
    let mut best: Option<f64> = None;
    let mut cur = Vec::new();
    enumerate(p, &options, &mut cur, &mut best);
    best
}

fn enumerate(
    p: &Problem,
    options: &[Vec<Placement>],
    cur: &mut Vec<Placement>,
    best: &mut Option<f64>,
) {
    let Some(here) = options.get(cur.len()) else {
        let s = Solution {
            cost: cost(p, cur),
            placements: cur.clone(),
            exact: false,
        };
        if check(p, &s).is_ok() && best.is_none_or(|b| s.cost < b) {
            *best = Some(s.cost);
        }
        return;
    };
    for o in here {
        cur.push(o.clone());
        enumerate(p, options, cur, best);
        cur.pop();
    }
}

fn host(cpu: f64, mem: u64) -> Host {
    Host {
        cpu_free: cpu,
        memory_free_mb: mem,
    }
}

fn device(host: usize, free_mb: u64, weight: f64) -> Device {
    Device {
        host,
        free_mb,
        weight,
    }
}

fn task(slices: u32, slice_mb: u64, cpu: f64, eligible: &[usize]) -> Task {
    Task {
        slices,
        slice_mb,
        cpu,
        memory_mb: 0,
        eligible: eligible.to_vec(),
    }
}

/// Both solvers and every method, in that order ([`exact`], [`heuristic`], then
/// [`solve`] with `Exact`, `Heuristic`, `Auto`), each result checked.
fn solve_all(p: &Problem) -> Vec<Option<Solution>> {
    let all = vec![
        exact(p, 1_000_000).expect("within the limit"),
        heuristic(p),
        solve(p, Method::Exact),
        solve(p, Method::Heuristic),
        solve(p, Method::Auto),
    ];
    for s in all.iter().flatten() {
        check(p, s).unwrap();
    }
    all
}

fn devices_of(s: &Option<Solution>) -> Vec<Vec<usize>> {
    s.as_ref()
        .map(|s| s.placements.iter().map(|p| p.devices.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn binpack_prefers_the_fuller_device_and_spread_the_emptier() {
    // Device 0: 12 of 16 GiB used; device 1: empty.
    let state = [(16 * GIB, 12 * GIB), (16 * GIB, 0)];
    for (policy, want) in [(Policy::Binpack, 0), (Policy::Spread, 1)] {
        let w = Weights {
            policy,
            ..Weights::default()
        };
        let p = Problem {
            hosts: vec![host(4.0, 0)],
            devices: state
                .iter()
                .map(|&(total, used)| device(0, total - used, w.device("a100", "p", total, used)))
                .collect(),
            tasks: vec![task(1, 2 * GIB, 1.0, &[0, 1])],
        };
        for s in solve_all(&p) {
            assert_eq!(devices_of(&s), vec![vec![want]], "{policy:?}");
        }
    }
}

#[test]
fn policy_formulas() {
    assert_eq!(policy_weight(Policy::Binpack, 1.0, 16, 12), 0.75);
    assert_eq!(policy_weight(Policy::Binpack, 2.0, 16, 0), 3.0);
    assert_eq!(policy_weight(Policy::Spread, 1.0, 16, 12), 1.25);
    assert_eq!(policy_weight(Policy::Spread, 2.0, 16, 0), 1.0);
    // Used beyond total, and no memory at all, count as full.
    assert_eq!(policy_weight(Policy::Spread, 1.0, 16, 99), 1.5);
    assert_eq!(policy_weight(Policy::Binpack, 1.0, 0, 0), 0.5);
    for policy in [Policy::Binpack, Policy::Spread] {
        for base in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 1e300] {
            let w = policy_weight(policy, base, 10, 5);
            assert!(
                (MIN_WEIGHT..=MAX_WEIGHT).contains(&w),
                "{policy:?} {base} -> {w}"
            );
        }
    }
}

#[test]
fn multipliers_by_model_and_pool() {
    let w = Weights {
        policy: Policy::Spread,
        models: [("v100".to_string(), 2.0), ("bad".to_string(), f64::NAN)].into(),
        pools: [("batch".to_string(), 0.5)].into(),
    };
    assert_eq!(w.base("h100", "other"), 1.0);
    assert_eq!(w.base("v100", "other"), 2.0);
    assert_eq!(w.base("v100", "batch"), 1.0);
    assert_eq!(w.base("bad", "batch"), 0.5);
    assert_eq!(w.device("v100", "other", 8, 0), 1.0);
}

#[test]
fn clamp_weight_bounds() {
    assert_eq!(clamp_weight(f64::NAN), 1.0);
    assert_eq!(clamp_weight(0.0), MIN_WEIGHT);
    assert_eq!(clamp_weight(f64::INFINITY), MAX_WEIGHT);
    assert_eq!(clamp_weight(1.5), 1.5);
}

#[test]
fn slices_of_a_task_go_to_distinct_devices_of_one_host() {
    // Host 0 has one big cheap device: two slices cannot share it. Host 1's devices
    // are dear, but there are two; device 4 on host 2 is cheap yet alone there.
    let p = Problem {
        hosts: vec![host(8.0, 0), host(8.0, 0), host(8.0, 0)],
        devices: vec![
            device(0, 64 * GIB, 0.5),
            device(1, 8 * GIB, 2.0),
            device(1, 8 * GIB, 1.5),
            device(1, 8 * GIB, 1.9),
            device(2, 8 * GIB, 0.5),
        ],
        tasks: vec![task(2, 4 * GIB, 1.0, &[0, 1, 2, 3, 4])],
    };
    for s in solve_all(&p) {
        let s = s.expect("feasible");
        assert_eq!(
            s.placements,
            vec![Placement {
                host: 1,
                devices: vec![2, 3]
            }]
        );
        assert!((s.cost - 3.4).abs() < 1e-12);
    }
}

#[test]
fn host_cpu_is_shared_by_its_tasks() {
    // Host 0's devices are cheap but it has one core for two one-core tasks.
    let p = Problem {
        hosts: vec![host(1.0, 0), host(4.0, 0)],
        devices: vec![
            device(0, 16 * GIB, 0.5),
            device(0, 16 * GIB, 0.5),
            device(1, 16 * GIB, 1.0),
        ],
        tasks: vec![task(1, GIB, 1.0, &[0, 1, 2]), task(1, GIB, 1.0, &[0, 1, 2])],
    };
    for s in solve_all(&p) {
        let s = s.expect("feasible");
        let mut hosts: Vec<usize> = s.placements.iter().map(|p| p.host).collect();
        hosts.sort_unstable();
        assert_eq!(hosts, vec![0, 1]);
        assert!((s.cost - 1.5).abs() < 1e-12);
    }
}

#[test]
fn host_memory_is_shared_by_its_tasks() {
    let mut p = Problem {
        hosts: vec![host(8.0, 3 * GIB)],
        devices: vec![device(0, 16 * GIB, 1.0)],
        tasks: vec![task(0, 0, 0.0, &[]), task(0, 0, 0.0, &[])],
    };
    for t in &mut p.tasks {
        t.memory_mb = 2 * GIB;
    }
    assert!(solve_all(&p).iter().all(Option::is_none));
    p.hosts[0].memory_free_mb = 4 * GIB;
    assert!(solve_all(&p).iter().all(Option::is_some));
}

#[test]
fn fractional_cores_add_up_exactly() {
    // 0.1 + 0.2 > 0.3 in binary floating point; in micro-cores it is equal.
    let p = Problem {
        hosts: vec![host(0.3, 0)],
        devices: vec![],
        tasks: vec![task(0, 0, 0.1, &[]), task(0, 0, 0.2, &[])],
    };
    assert!(solve_all(&p).iter().all(Option::is_some));
}

#[test]
fn device_memory_is_shared_by_slices() {
    // Three 3 GiB slices, devices of 8 and 4 GiB: the cheap one takes two.
    let p = Problem {
        hosts: vec![host(8.0, 0)],
        devices: vec![device(0, 8 * GIB, 0.5), device(0, 4 * GIB, 1.0)],
        tasks: vec![
            task(1, 3 * GIB, 0.0, &[0, 1]),
            task(1, 3 * GIB, 0.0, &[0, 1]),
            task(1, 3 * GIB, 0.0, &[0, 1]),
        ],
    };
    for s in solve_all(&p) {
        let s = s.expect("feasible");
        assert!((s.cost - 2.0).abs() < 1e-12);
    }
}

#[test]
fn infeasible_instances_have_no_solution() {
    let cases = [
        // Not enough devices on any one host for two slices.
        Problem {
            hosts: vec![host(8.0, 0), host(8.0, 0)],
            devices: vec![device(0, 8 * GIB, 1.0), device(1, 8 * GIB, 1.0)],
            tasks: vec![task(2, GIB, 0.0, &[0, 1])],
        },
        // The only eligible device is too small.
        Problem {
            hosts: vec![host(8.0, 0)],
            devices: vec![device(0, GIB, 1.0), device(0, 8 * GIB, 1.0)],
            tasks: vec![task(1, 2 * GIB, 0.0, &[0])],
        },
        // Memory for one task only.
        Problem {
            hosts: vec![host(8.0, 0)],
            devices: vec![device(0, 3 * GIB, 1.0)],
            tasks: vec![task(1, 2 * GIB, 0.0, &[0]), task(1, 2 * GIB, 0.0, &[0])],
        },
        // Cores for one task only.
        Problem {
            hosts: vec![host(1.5, 0)],
            devices: vec![device(0, 8 * GIB, 1.0), device(0, 8 * GIB, 1.0)],
            tasks: vec![task(1, GIB, 1.0, &[0, 1]), task(1, GIB, 1.0, &[0, 1])],
        },
        // No host at all.
        Problem {
            hosts: vec![],
            devices: vec![],
            tasks: vec![task(0, 0, 0.0, &[])],
        },
    ];
    for p in &cases {
        assert_eq!(solve_all(p), vec![None; 5], "{p:?}");
    }
}

#[test]
fn no_tasks_is_the_empty_solution() {
    let p = Problem::default();
    for s in solve_all(&p) {
        let s = s.expect("nothing to place");
        assert!(s.placements.is_empty());
        assert_eq!(s.cost, 0.0);
    }
}

#[test]
fn bad_input_does_not_panic() {
    let p = Problem {
        hosts: vec![
            host(f64::NAN, 0),
            host(f64::INFINITY, u64::MAX),
            host(-3.0, 0),
        ],
        devices: vec![
            device(0, u64::MAX, f64::NAN),
            device(1, u64::MAX, f64::NEG_INFINITY),
            device(1, u64::MAX, f64::INFINITY),
            device(7, 16 * GIB, 1.0),
        ],
        tasks: vec![
            // Out-of-range and duplicate device indexes are ignored.
            task(2, u64::MAX, 1.0, &[1, 1, 2, 3, 99, usize::MAX]),
            task(u32::MAX, 1, 0.0, &[0, 1, 2]),
            task(1, 1, f64::NAN, &[1]),
            task(0, 0, f64::INFINITY, &[]),
            task(0, 0, -1.0, &[]),
        ],
    };
    assert!(solve_all(&p).iter().all(Option::is_none));
    // Without the tasks that fit nowhere (too many slices, NaN or infinite cores).
    let mut q = p.clone();
    q.tasks = vec![p.tasks[0].clone(), p.tasks[4].clone()];
    for s in solve_all(&q) {
        let s = s.expect("feasible");
        assert_eq!(
            s.placements[0],
            Placement {
                host: 1,
                devices: vec![1, 2]
            }
        );
        assert!((s.cost - (MIN_WEIGHT + MAX_WEIGHT)).abs() < 1e-9);
    }
}

#[test]
fn ties_go_to_the_lowest_index() {
    let p = Problem {
        hosts: vec![host(8.0, 0), host(8.0, 0)],
        devices: (0..4).map(|j| device(j / 2, 8 * GIB, 1.0)).collect(),
        tasks: vec![task(1, GIB, 0.0, &[3, 2, 1, 0])],
    };
    for s in solve_all(&p) {
        assert_eq!(devices_of(&s), vec![vec![0]]);
    }
}

#[test]
fn check_rejects_every_violation() {
    let p = Problem {
        hosts: vec![host(1.0, 4 * GIB), host(1.0, 4 * GIB)],
        devices: vec![
            device(0, 4 * GIB, 1.0),
            device(0, 4 * GIB, 1.0),
            device(1, 4 * GIB, 1.0),
            device(1, GIB, 1.0),
        ],
        tasks: vec![
            task(2, 2 * GIB, 1.0, &[0, 1, 2]),
            task(1, 2 * GIB, 0.5, &[0, 1, 2]),
        ],
    };
    let ok = |placements: Vec<Placement>| Solution {
        cost: cost(&p, &placements),
        placements,
        exact: false,
    };
    let pl = |host: usize, devices: &[usize]| Placement {
        host,
        devices: devices.to_vec(),
    };
    check(&p, &ok(vec![pl(0, &[0, 1]), pl(1, &[2])])).unwrap();
    let bad = [
        (ok(vec![pl(0, &[0, 1])]), "placements"),
        (ok(vec![pl(0, &[0, 1]), pl(2, &[2])]), "no host"),
        (ok(vec![pl(0, &[0]), pl(1, &[2])]), "slices"),
        (ok(vec![pl(0, &[0, 9]), pl(1, &[2])]), "no device"),
        (ok(vec![pl(0, &[0, 0]), pl(1, &[2])]), "twice"),
        (ok(vec![pl(0, &[0, 2]), pl(1, &[2])]), "not on host"),
        (ok(vec![pl(0, &[0, 1]), pl(1, &[3])]), "not eligible"),
        (ok(vec![pl(0, &[0, 1]), pl(0, &[0])]), "cores"),
        (ok(vec![pl(1, &[2, 2]), pl(1, &[2])]), "twice"),
        (
            Solution {
                cost: 1.0,
                ..ok(vec![pl(0, &[0, 1]), pl(1, &[2])])
            },
            "cost",
        ),
    ];
    for (s, why) in bad {
        let err = check(&p, &s).expect_err(why);
        assert!(err.contains(why), "{err} lacks {why:?}");
    }
    // Memory: a device's slices, then a host's tasks.
    let mut q = p.clone();
    q.hosts[0].cpu_free = 2.0;
    q.tasks[0].slice_mb = 3 * GIB;
    let both = ok(vec![pl(0, &[0, 1]), pl(0, &[0])]);
    assert!(check(&q, &both).expect_err("device").contains("device 0"));
    q.tasks[1].slice_mb = GIB;
    check(&q, &both).unwrap();
    q.tasks[0].memory_mb = 3 * GIB;
    q.tasks[1].memory_mb = 2 * GIB;
    assert!(check(&q, &both)
        .expect_err("host memory")
        .contains("host 0"));
    q.tasks[1].cpu = f64::NAN;
    assert!(check(&q, &both).expect_err("NaN").contains("fit nowhere"));
}

#[test]
fn auto_is_exact_when_small_and_heuristic_when_large() {
    let small = Problem {
        hosts: vec![host(8.0, 0)],
        devices: vec![device(0, 16 * GIB, 1.0), device(0, 16 * GIB, 0.7)],
        tasks: vec![task(1, GIB, 0.0, &[0, 1]); EXACT_LIMIT],
    };
    assert!(is_small(&small));
    let s = solve(&small, Method::Auto).expect("feasible");
    assert!(s.exact);
    check(&small, &s).unwrap();
    let mut large = small.clone();
    large.tasks.push(task(1, GIB, 0.0, &[0, 1]));
    assert!(!is_small(&large));
    let s = solve(&large, Method::Auto).expect("feasible");
    assert!(!s.exact);
    check(&large, &s).unwrap();
    // Tasks without slices count one each: they are levels of the search too.
    let mut cpu_only = small.clone();
    cpu_only.tasks = vec![task(0, 0, 0.1, &[]); EXACT_LIMIT + 1];
    assert!(!is_small(&cpu_only));
    cpu_only.tasks.pop();
    assert!(is_small(&cpu_only));
    // Too many devices counts as large too.
    let mut wide = small.clone();
    wide.devices = vec![device(0, 8 * GIB, 1.0); EXACT_MAX_DEVICES + 1];
    assert!(!is_small(&wide));
    assert!(!solve(&wide, Method::Auto).expect("feasible").exact);
    assert!(solve(&wide, Method::Exact).expect("feasible").exact);
}

#[test]
fn exact_reports_the_limit_with_its_best_so_far() {
    // The first seed giving a feasible instance of at least five tasks.
    let mut rng = Rng::new(7);
    let (p, opt) = loop {
        let p = random_problem(&mut rng, &SMALL);
        if p.tasks.len() >= 5 {
            if let Some(opt) = exact(&p, u64::MAX).expect("no limit") {
                break (p, opt);
            }
        }
    };
    let err = exact(&p, 1).expect_err("one node is not enough");
    assert_eq!(err.nodes, 2);
    assert!(err.best.is_none());
    // Somewhere between, the search has a placement but no proof.
    let mut partial = None;
    for limit in 1..100_000 {
        match exact(&p, limit) {
            Err(LimitReached { best: Some(b), .. }) => {
                partial = Some(b);
                break;
            }
            Err(_) => {}
            Ok(s) => {
                assert_eq!(s, Some(opt.clone()));
                break;
            }
        }
    }
    let b = partial.expect("the search meets a placement before proving it best");
    assert!(!b.exact);
    check(&p, &b).unwrap();
    assert!(b.cost >= opt.cost - 1e-9);
}

#[test]
fn replicas_do_not_multiply_the_search() {
    // Twelve identical tasks, one per device: 12! orders of the same placement
    // without symmetry breaking, and a weak bound without the replicas' slot bound
    // (every task's cheapest device is the same one until it is taken). Without
    // both the search runs past EXACT_NODE_LIMIT; with them it needs under 300.
    let p = Problem {
        hosts: vec![host(64.0, 0), host(64.0, 0)],
        devices: (0..12)
            .map(|j| device(j % 2, 4 * GIB, 0.5 + j as f64 / 8.0))
            .collect(),
        tasks: vec![task(1, 3 * GIB, 1.0, &(0..12).collect::<Vec<_>>()); 12],
    };
    let s = exact(&p, 300).expect("within the limit").expect("feasible");
    check(&p, &s).unwrap();
    assert!((s.cost - (0..12).map(|j| 0.5 + j as f64 / 8.0).sum::<f64>()).abs() < 1e-9);
}

#[test]
fn results_are_deterministic() {
    let mut rng = Rng::new(11);
    for _ in 0..50 {
        let p = random_problem(&mut rng, &SMALL);
        assert_eq!(exact(&p, u64::MAX), exact(&p, u64::MAX));
        assert_eq!(heuristic(&p), heuristic(&p));
    }
}

#[test]
fn heuristic_handles_a_large_instance() {
    // 250 hosts of 4 devices, 1,000 tasks of 1–4 slices, each eligible on the devices
    // of half the hosts (as a pool filter would make them): a size the exact search
    // could not touch.
    let mut rng = Rng::new(3);
    let hosts = 250;
    let p = Problem {
        hosts: (0..hosts).map(|_| host(32.0, 256 * GIB)).collect(),
        devices: (0..hosts * 4)
            .map(|j| device(j / 4, 80 * GIB, 0.5 + 1.5 * rng.unit()))
            .collect(),
        tasks: (0..1000)
            .map(|_| Task {
                slices: rng.range(1, 4) as u32,
                slice_mb: rng.range(1, 40) * GIB,
                cpu: rng.range(1, 8) as f64,
                memory_mb: rng.range(1, 32) * GIB,
                eligible: (0..hosts)
                    .filter(|_| rng.chance(0.5))
                    .flat_map(|h| h * 4..h * 4 + 4)
                    .collect(),
            })
            .collect(),
    };
    assert!(!is_small(&p));
    let s = solve(&p, Method::Auto).expect("plenty of room");
    check(&p, &s).unwrap();
    // Every task on its own cheapest eligible devices is a lower bound (a loose one
    // here: devices are contended).
    let bound: f64 = p
        .tasks
        .iter()
        .map(|t| {
            let mut w: Vec<f64> = t.eligible.iter().map(|&d| p.devices[d].weight).collect();
            w.sort_by(f64::total_cmp);
            w.iter().take(t.slices as usize).sum::<f64>()
        })
        .sum();
    assert!(s.cost >= bound - 1e-6);
}

#[test]
fn heuristic_is_valid_on_medium_instances() {
    let mut rng = Rng::new(5);
    let mut placed = 0;
    for _ in 0..200 {
        let p = random_problem(&mut rng, &MEDIUM);
        let s = heuristic(&p);
        assert_eq!(s, heuristic(&p), "deterministic");
        if let Some(s) = s {
            check(&p, &s).unwrap();
            placed += 1;
        }
        if let Some(s) = solve(&p, Method::Auto) {
            check(&p, &s).unwrap();
        }
    }
    // Enough of them feasible for the checks to mean something (76 of 200).
    assert!(placed >= 40, "{placed}");
}

#[test]
fn heuristic_falls_back_when_greedy_packs_badly() {
    // Cheapest first puts the 5 GiB slice on the cheap 8 GiB device, after which the
    // 4 GiB slice fits nowhere; best fit finds the only placement.
    let p = Problem {
        hosts: vec![host(8.0, 0)],
        devices: vec![device(0, 8 * GIB, 0.5), device(0, 6 * GIB, 2.0)],
        tasks: vec![task(1, 5 * GIB, 0.0, &[0, 1]), task(1, 4 * GIB, 0.0, &[0])],
    };
    for s in solve_all(&p) {
        assert_eq!(devices_of(&s), vec![vec![1], vec![0]]);
    }
    // Neither greedy pass finds it here; the feasibility search does. The largest
    // task (2×4) goes to the cheap host 0 in the greedy pass and best fit alike, but
    // the 2×3 task then needs host 0 (host 1 has one device for it).
    let p = Problem {
        hosts: vec![host(8.0, 0), host(8.0, 0)],
        devices: vec![
            device(0, 4 * GIB, 0.5),
            device(0, 4 * GIB, 0.5),
            device(1, 4 * GIB, 2.0),
            device(1, 4 * GIB, 2.0),
            device(1, 2 * GIB, 2.0),
        ],
        tasks: vec![
            task(2, 4 * GIB, 0.0, &[0, 1, 2, 3]),
            task(2, 3 * GIB, 0.0, &[0, 1, 2, 4]),
        ],
    };
    for s in solve_all(&p) {
        assert_eq!(devices_of(&s), vec![vec![2, 3], vec![0, 1]]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// On instances small enough to enumerate, the exact solver is feasible exactly
    /// when brute force finds a placement, at the same cost; the heuristic finds one
    /// whenever one exists, and every result passes `check`.
    #[test]
    fn exact_matches_brute_force(seed in any::<u64>()) {
        let p = random_problem(&mut Rng::new(seed), &TINY);
        let want = brute_force(&p);
        let got = exact(&p, u64::MAX).expect("no limit");
        prop_assert_eq!(got.is_some(), want.is_some(), "{:?}", p);
        let h = heuristic(&p);
        prop_assert_eq!(h.is_some(), want.is_some(), "{:?}", p);
        if let (Some(got), Some(want), Some(h)) = (got, want, h) {
            prop_assert!(got.exact);
            prop_assert!((got.cost - want).abs() < 1e-9, "{} vs {} in {:?}", got.cost, want, p);
            prop_assert!(check(&p, &got).is_ok(), "{:?}", check(&p, &got));
            prop_assert!(check(&p, &h).is_ok(), "{:?}", check(&p, &h));
            prop_assert!(h.cost >= want - 1e-9);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The same with a task repeated, for the exact search's symmetry breaking.
    #[test]
    fn exact_matches_brute_force_with_replicas(seed in any::<u64>()) {
        let mut p = random_problem(&mut Rng::new(seed), &TINY);
        while p.tasks.len() < 3 {
            p.tasks.push(p.tasks[0].clone());
        }
        let want = brute_force(&p);
        let got = exact(&p, u64::MAX).expect("no limit");
        prop_assert_eq!(got.is_some(), want.is_some(), "{:?}", p);
        if let (Some(got), Some(want)) = (got, want) {
            prop_assert!((got.cost - want).abs() < 1e-9, "{} vs {} in {:?}", got.cost, want, p);
            prop_assert!(check(&p, &got).is_ok(), "{:?}", check(&p, &got));
        }
    }
}

/// The heuristic's gap to the optimum over 5,000 seeded instances of the brief's
/// shape; run with `--nocapture` to see the figures quoted in the module doc.
#[test]
fn heuristic_gap() {
    let mut rng = Rng::new(2026);
    let (mut feasible, mut optimal, mut gap_sum, mut worst) = (0u32, 0u32, 0.0f64, 0.0f64);
    let mut worst_seed = 0;
    for i in 0..5000 {
        let p = random_problem(&mut rng, &SMALL);
        let opt = exact(&p, u64::MAX).expect("no limit");
        let h = heuristic(&p);
        let Some(opt) = opt else {
            assert!(h.is_none(), "instance {i}: heuristic placed the impossible");
            continue;
        };
        let h = h.unwrap_or_else(|| panic!("instance {i}: heuristic found nothing: {p:?}"));
        check(&p, &h).unwrap();
        feasible += 1;
        let gap = if opt.cost > 0.0 {
            (h.cost - opt.cost) / opt.cost
        } else {
            0.0
        };
        assert!(gap >= -1e-9, "instance {i}: heuristic beat the optimum");
        if gap <= 1e-9 {
            optimal += 1;
        }
        gap_sum += gap;
        if gap > worst {
            worst = gap;
            worst_seed = i;
        }
    }
    let mean = gap_sum / f64::from(feasible.max(1));
    println!(
        "heuristic gap over 5000 instances: {feasible} feasible, optimal on {optimal}, \
         mean {:.4}%, worst {:.2}% (instance {worst_seed})",
        mean * 100.0,
        worst * 100.0
    );
    assert!(feasible > 1000, "too few feasible instances to measure");
    assert!(mean <= 0.02, "mean gap {mean}");
}

#[test]
fn past_the_limit_the_cheaper_answer_wins() {
    let sol = |cost: f64| Solution {
        placements: vec![],
        cost,
        exact: false,
    };
    assert_eq!(cheaper(Some(sol(2.0)), Some(sol(1.0))), Some(sol(1.0)));
    assert_eq!(cheaper(Some(sol(1.0)), Some(sol(2.0))), Some(sol(1.0)));
    assert_eq!(cheaper(None, Some(sol(2.0))), Some(sol(2.0)));
    assert_eq!(cheaper(Some(sol(2.0)), None), Some(sol(2.0)));
    assert_eq!(cheaper(None, None), None);
}

#[test]
fn a_very_large_round_takes_the_quick_greedy_and_stays_valid() {
    // 300 one-slice tasks (past LARGE_LIMIT) on 4 hosts of 25 devices of 16 GB.
    let p = Problem {
        hosts: (0..4).map(|_| host(1000.0, 1 << 30)).collect(),
        devices: (0..100)
            .map(|d| device(d / 25, 16_000, 1.0 + (d % 7) as f64 / 10.0))
            .collect(),
        tasks: (0..300)
            .map(|i| {
                task(
                    1,
                    4_000 + (i % 3) as u64 * 1_000,
                    1.0,
                    &(0..100).collect::<Vec<_>>(),
                )
            })
            .collect(),
    };
    let s = solve(&p, Method::Auto).expect("room for all");
    assert!(!s.exact);
    check(&p, &s).unwrap();
    assert_eq!(s, quick(&p).unwrap(), "Auto above LARGE_LIMIT is quick");
}
