//! What a tenant's apps may do, and the check of a spec against it.
//!
//! Built-in operators that only compute (generators, maps, filters, windows, verify
//! and null sinks) are always allowed. Everything that reaches outside the engine is
//! granted per tenant, never assumed: running programs (`exec`), running images
//! (`container`), files (paths under one root), and the network (addresses in listed
//! CIDR ranges). The master checks a spec against its tenant's grant before anything
//! is proposed (docs/security.md, "Capabilities").

use super::model::{AppSpec, OperatorKind};
use crate::problem::{Problem, Problems};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path};

/// What a tenant's apps may do beyond computing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `kind: exec` operators.
    #[serde(default)]
    pub exec: bool,
    /// `kind: container` operators (templates generate them).
    #[serde(default)]
    pub containers: bool,
    /// Absolute directory file operators' paths must lie under; `None`: no files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_root: Option<String>,
    /// CIDR ranges TCP operators' addresses must lie in; empty: no network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
}

/// An address range, `ip/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an address range like 10.0.0.0/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Self { net, prefix })
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
                IpAddr::V6(a) => (u128::from(a), 128),
            }
        }
        let ((net, width), (addr, w2)) = (bits(self.net), bits(ip));
        if width != w2 {
            return false;
        }
        let keep = u32::from(self.prefix);
        if keep == 0 {
            return true;
        }
        let shift = u32::from(width) - keep;
        (net >> shift) == (addr >> shift)
    }
}

impl Capabilities {
    /// Problems with the grant itself (a relative root, a range that does not parse),
    /// each at `path`.`field`.
    pub fn problems(&self, path: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(root) = &self.file_root {
            if !clean_absolute(Path::new(root)) {
                out.push(Problem::new(
                    format!("{path}.file_root"),
                    format!("{root:?} must be an absolute path without `..`"),
                ));
            }
        }
        if self.network.len() > 64 {
            out.push(Problem::new(
                format!("{path}.network"),
                format!("at most 64 ranges (got {})", self.network.len()),
            ));
        }
        for (i, n) in self.network.iter().enumerate().take(64) {
            if let Err(e) = Cidr::parse(n) {
                out.push(Problem::new(format!("{path}.network[{i}]"), e));
            }
        }
        out
    }
}

fn clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Every way `spec` goes beyond what `tenant`'s grant `caps` allows, each at the
/// operator's path.
pub fn check_capabilities(spec: &AppSpec, tenant: &str, caps: &Capabilities) -> Problems {
    let ranges: Vec<Cidr> = caps
        .network
        .iter()
        .filter_map(|n| Cidr::parse(n).ok())
        .collect();
    let mut out = Vec::new();
    let mut refuse = |i: usize, field: &str, rule: String| {
        out.push(Problem::new(
            format!("operators[{i}]{field}"),
            format!("{rule} (tenant {tenant:?})"),
        ));
    };
    for (i, op) in spec.operators.iter().enumerate() {
        match &op.kind {
            OperatorKind::Exec(_) if !caps.exec => {
                refuse(i, ".kind", "exec operators are not granted".into())
            }
            OperatorKind::Container(_) if !caps.containers => {
                refuse(i, ".kind", "container operators are not granted".into())
            }
            OperatorKind::SourceFile(p) => file(&mut refuse, i, &p.path, caps),
            OperatorKind::SinkFile(p) => file(&mut refuse, i, &p.path, caps),
            OperatorKind::SourceTcp(p) => net(&mut refuse, i, ".params.listen", &p.listen, &ranges),
            OperatorKind::SinkTcp(p) => net(&mut refuse, i, ".params.address", &p.address, &ranges),
            _ => {}
        }
    }
    Problems(out)
}

fn file(refuse: &mut impl FnMut(usize, &str, String), i: usize, path: &str, caps: &Capabilities) {
    let Some(root) = &caps.file_root else {
        return refuse(i, ".params.path", "file operators are not granted".into());
    };
    let p = Path::new(path);
    if !clean_absolute(p) || !p.starts_with(root) {
        refuse(
            i,
            ".params.path",
            format!("{path:?} must be an absolute path under {root:?} without `..`"),
        );
    }
}

fn net(
    refuse: &mut impl FnMut(usize, &str, String),
    i: usize,
    field: &str,
    addr: &str,
    ranges: &[Cidr],
) {
    if ranges.is_empty() {
        return refuse(i, field, "network operators are not granted".into());
    }
    match addr.parse::<SocketAddr>() {
        Ok(a) if ranges.iter().any(|r| r.contains(a.ip())) => {}
        Ok(a) => refuse(
            i,
            field,
            format!("{} is outside the granted ranges", a.ip()),
        ),
        Err(_) => refuse(
            i,
            field,
            format!(
                "{addr:?} must be IP:PORT (a granted range cannot be checked against a host name)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_app, SpecFormat};

    fn spec(ops: &str) -> AppSpec {
        let text = format!("name: a\ntenant: acme\noperators:\n{ops}");
        parse_app(&text, SpecFormat::Yaml).unwrap()
    }

    #[test]
    fn built_ins_that_only_compute_need_nothing() {
        let s = spec("  - {name: g, kind: source.generator, params: {count: 1}}\n  - {name: o, kind: sink.verify}\nstreams:\n  - {from: g, to: o}\n");
        assert!(check_capabilities(&s, "acme", &Capabilities::default())
            .0
            .is_empty());
    }

    #[test]
    fn exec_files_and_network_are_granted_not_assumed() {
        let s = spec("  - {name: i, kind: source.file, params: {path: /data/acme/in.txt}}\n  - {name: x, kind: exec, params: {command: [/bin/cat]}}\n  - {name: t, kind: sink.tcp, params: {address: \"10.1.2.3:9000\"}}\n  - {name: f, kind: sink.file, params: {path: /data/acme/../globex/out}}\nstreams:\n  - {from: i, to: x}\n  - {from: x, to: t}\n  - {from: x, to: f}\n");
        let none = check_capabilities(&s, "acme", &Capabilities::default());
        let paths: Vec<&str> = none.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "operators[0].params.path",
                "operators[1].kind",
                "operators[2].params.address",
                "operators[3].params.path"
            ]
        );
        let granted = Capabilities {
            exec: true,
            containers: false,
            file_root: Some("/data/acme".into()),
            network: vec!["10.0.0.0/8".into()],
        };
        let left = check_capabilities(&s, "acme", &granted);
        assert_eq!(left.0.len(), 1, "{left}");
        assert_eq!(
            left.0[0].path, "operators[3].params.path",
            "`..` never escapes the root"
        );
        let narrow = Capabilities {
            network: vec!["10.9.0.0/16".into()],
            ..granted
        };
        let p = check_capabilities(&s, "acme", &narrow);
        assert!(
            p.0.iter().any(|p| p.rule.contains("10.1.2.3 is outside")),
            "{p}"
        );
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let r = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.255.0.1".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com/8").is_err());
        let bad = Capabilities {
            file_root: Some("data".into()),
            network: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(bad.problems("policy.capabilities").len(), 2);
    }
}
