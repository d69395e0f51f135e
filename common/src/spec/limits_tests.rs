use super::*;
use crate::physical::PhysicalModel;
use crate::spec::{parse_app, SpecFormat};

#[test]
fn size_matches_the_expansion() {
    let app = parse_app(
        r#"
name: t
operators:
  - {name: gen, kind: source.generator, parallelism: 2, params: {count: 10}}
  - {name: up, kind: map, parallelism: 2, params: {set: {u: "upper(key)"}}}
  - {name: count, kind: window.count, parallelism: 3, params: {size_ms: 1000}}
  - {name: all, kind: sink.verify, parallelism: 4}
  - {name: out, kind: sink.verify}
streams:
  - {from: gen, to: up}
  - {from: up, to: count, partitioning: hash}
  - {from: count, to: out, partitioning: round_robin}
  - {from: up, to: all, partitioning: broadcast}
"#,
        SpecFormat::Yaml,
    )
    .unwrap();
    let m = PhysicalModel::expand(&app);
    let size = PhysicalSize::of(&app);
    assert_eq!(size.pes, m.pes.len() as u64);
    assert_eq!(size.channels, m.channels.len() as u64);
    assert_eq!(
        size,
        PhysicalSize {
            pes: 12,
            channels: 2 + 6 + 3 + 8
        }
    );
}

#[test]
fn dense_spec_refused_without_expanding() {
    let text = dense_spec_yaml("dense", 45, 256);
    assert!(text.len() < 64 << 10, "{} bytes", text.len());
    let app = parse_app(&text, SpecFormat::Yaml).unwrap();
    assert_eq!(app.streams.len(), 990);
    let started = std::time::Instant::now();
    let err = AppLimits::default().check(&app).unwrap_err();
    assert_eq!(
        err.0,
        vec![
            Problem::new(
                "operators",
                "the app would have 11520 PEs; at most 4096 per app"
            ),
            Problem::new(
                "streams",
                "the app would have 64880640 channels; at most 262144 per app"
            ),
        ]
    );
    // Arithmetic only: microseconds (expanding it took the better part of a minute
    // and gigabytes).
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn limits_are_inclusive_and_configurable() {
    let app = parse_app(&dense_spec_yaml("small", 3, 4), SpecFormat::Yaml).unwrap();
    // 3 operators x 4 PEs; 3 hash streams of 4 x 4.
    let exact = AppLimits {
        max_pes: 12,
        max_channels: 48,
    };
    assert_eq!(
        exact.check(&app),
        Ok(PhysicalSize {
            pes: 12,
            channels: 48
        })
    );
    let tight = AppLimits {
        max_pes: 11,
        max_channels: 47,
    };
    let err = tight.check(&app).unwrap_err();
    assert_eq!(err.0.len(), 2);
    assert_eq!(err.0[0].path, "operators");
    assert_eq!(err.0[1].path, "streams");
}

#[test]
fn saturates_instead_of_overflowing() {
    let mut app = parse_app(&dense_spec_yaml("big", 2, 256), SpecFormat::Yaml).unwrap();
    // Not reachable through the parser (parallelism <= 256), but the arithmetic
    // must not wrap whatever the model holds.
    for o in &mut app.operators {
        o.parallelism = u32::MAX;
    }
    let s = PhysicalSize::of(&app);
    assert_eq!(s.pes, 2 * u64::from(u32::MAX));
    assert_eq!(s.channels, u64::from(u32::MAX) * u64::from(u32::MAX));
    let many = app.streams[0].clone();
    app.streams.extend(std::iter::repeat_n(many, 4));
    assert_eq!(PhysicalSize::of(&app).channels, u64::MAX);
}
