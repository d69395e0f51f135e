//! `weirctl validate` and `weirctl plan`: no cluster needed.

use crate::Output;
use anyhow::Context;
use serde_json::json;
use weir_common::catalog::{describe, parse_app_with, Resolve, Resolved};
use weir_common::physical::PeId;
use weir_common::plan::{plan as make_plan, render_text, Placement};
use weir_common::spec::{AppLimits, PhysicalSize, SpecFormat};
use weir_common::Problems;

/// Reads and validates one spec file. Offline there is no catalog: an operator
/// written `template: NAME` is checked for form only and resolved by the master at
/// submit. The per-app bounds are the masters' defaults (a master started with other
/// `--max-app-pes` / `--max-app-channels` applies its own); they are checked from the
/// logical model, so an oversized spec is refused before anything is expanded.
fn load(path: &str) -> anyhow::Result<Result<Resolved, Problems>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    Ok(
        parse_app_with(&text, SpecFormat::from_path(path), Resolve::Offline)
            .and_then(|r| AppLimits::default().check(&r.spec).map(|_| r)),
    )
}

fn problems_json(p: &Problems) -> serde_json::Value {
    serde_json::to_value(&p.0).unwrap_or_default()
}

fn print_problems(path: &str, p: &Problems) {
    eprintln!("{path}: {} problem(s)", p.0.len());
    for problem in &p.0 {
        eprintln!("  {problem}");
    }
}

/// Validates every file; true when all are valid.
pub fn validate(files: &[String], output: Output) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let mut reports = Vec::new();
    for f in files {
        match load(f)? {
            Ok(Resolved {
                spec: app,
                generated,
            }) => {
                // Counted, not expanded: the sizes are all this report needs.
                let m = PhysicalSize::of(&app);
                let templates = describe(&app, &generated);
                if output == Output::Text {
                    println!(
                        "{f}: ok (app {:?}, {} operators, {} streams, {} PEs, {} channels)",
                        app.name,
                        app.operators.len(),
                        app.streams.len(),
                        m.pes,
                        m.channels
                    );
                    for t in &templates {
                        println!("  {t}");
                    }
                }
                reports.push(json!({
                    "file": f, "valid": true, "app": app.name,
                    "operators": app.operators.len(), "streams": app.streams.len(),
                    "pes": m.pes, "channels": m.channels,
                    "templates": templates,
                }));
            }
            Err(p) => {
                all_ok = false;
                if output == Output::Text {
                    print_problems(f, &p);
                }
                reports.push(json!({"file": f, "valid": false, "problems": problems_json(&p)}));
            }
        }
    }
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"valid": all_ok, "files": reports}))?
        );
    }
    Ok(all_ok)
}

/// Prints the plan from `old` to `new`; true when both are valid and upgradable.
pub fn plan(old: &str, new: &str, placement: Option<&str>, output: Output) -> anyhow::Result<bool> {
    let (a, b) = (load(old)?, load(new)?);
    let mut failed = json!({});
    for (path, r) in [(old, &a), (new, &b)] {
        if let Err(p) = r {
            if output == Output::Text {
                print_problems(path, p);
            }
            failed[path] = problems_json(p);
        }
    }
    let (
        Ok(Resolved { spec: a, .. }),
        Ok(Resolved {
            spec: b,
            generated: b_generated,
        }),
    ) = (a, b)
    else {
        if output == Output::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"valid": false, "problems": failed}))?
            );
        }
        return Ok(false);
    };
    if a.name != b.name {
        let msg = format!(
            "name: an upgrade keeps the app name (old {:?}, new {:?})",
            a.name, b.name
        );
        match output {
            Output::Text => eprintln!("{new}: {msg}"),
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"valid": false, "problems": {new: [{"path": "name", "rule": msg}]}})
                )?
            ),
        }
        return Ok(false);
    }
    let placement = placement.map(load_placement).transpose()?;
    let p = make_plan(&a, &b, placement.as_ref());
    match output {
        Output::Text => {
            print!("{}", render_text(&p));
            // Offline, a template operator is a container whose image is unknown: the
            // plan holds for its shape; `weirctl upgrade --dry-run` shows the real one.
            for t in describe(&b, &b_generated) {
                println!("template: {t}");
            }
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
    }
    Ok(true)
}

fn load_placement(path: &str) -> anyhow::Result<Placement> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let map: std::collections::BTreeMap<String, String> = match SpecFormat::from_path(path) {
        SpecFormat::Json => serde_json::from_str(&text)
            .with_context(|| format!("{path}: expected a JSON object of PE id to worker id"))?,
        SpecFormat::Yaml => serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{path}: expected a mapping of PE id to worker id"))?,
    };
    Ok(map.into_iter().map(|(k, v)| (PeId(k.into()), v)).collect())
}
