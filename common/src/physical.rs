//! Physical expansion: operators x parallelism -> PEs; streams -> PE-to-PE channels.
//!
//! The expansion is a pure function of the logical model, so the master, the planner
//! and the tests all agree on which PEs and channels a version implies.

use crate::fingerprint::operator_revision;
use crate::keygroup::KeyGroupRange;
use crate::spec::{AppSpec, Partitioning, StreamKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// A PE's identity: `operator@revision#index`, e.g. `parse@3f9a1c2b#0`.
///
/// A shared string: ids are cloned into every channel, route and instruction, and
/// cloning must not allocate (planning 10,000 operators stays within milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeId(pub Arc<str>);

impl PeId {
    /// The id of PE `index` of an operator at `revision`.
    pub fn new(operator: &str, revision: &str, index: u32) -> Self {
        // Built by hand: `format!` is a measurable share of planning large apps.
        let mut s = String::with_capacity(operator.len() + revision.len() + 8);
        s.push_str(operator);
        s.push('@');
        s.push_str(revision);
        s.push('#');
        s.push_str(itoa(index, &mut [0u8; 10]));
        Self(s.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The operator part of the id.
    pub fn operator(&self) -> &str {
        Self::operator_of(&self.0)
    }

    /// The operator part of a PE id held as text (placements and reports key PEs by
    /// their text; wrapping one to read its operator would allocate).
    pub fn operator_of(id: &str) -> &str {
        id.split_once('@').map_or(id, |(op, _)| op)
    }

    /// The parallel index part of the id, if it has one.
    pub fn index(&self) -> Option<u32> {
        self.0.rsplit_once('#')?.1.parse().ok()
    }
}

/// The `source` ordinal records emitted by PE `index` of `operator` carry.
///
/// It depends on the operator's name and the index only, not on its revision, so a
/// source replaced by an upgrade keeps emitting under the same ordinal and downstream
/// de-duplication by `(source, seq)` still holds. The low 8 bits are the index
/// (parallelism is at most 256); the rest is a hash of the name.
pub fn source_ordinal(operator: &str, index: u32) -> u32 {
    ((crate::fingerprint::fnv1a64(operator.as_bytes()) as u32) & !0xFF) | (index & 0xFF)
}

/// Decimal digits of `n`, without the formatting machinery.
fn itoa(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Maps keyed by PE are looked up by the id's text (reports and requests carry it as
/// text) without building a `PeId`: ordering, equality and hashing are the text's.
impl std::borrow::Borrow<str> for PeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// An id reads as its text (reports, requests and logs carry it as text); building
/// one from text is explicit (`PeId::from`), so a bare string never stands for an id.
impl std::ops::Deref for PeId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for PeId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<PeId> for str {
    fn eq(&self, other: &PeId) -> bool {
        self == &*other.0
    }
}

impl PartialEq<String> for PeId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<PeId> for String {
    fn eq(&self, other: &PeId) -> bool {
        **self == *other.0
    }
}

impl From<&str> for PeId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for PeId {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

/// Where each PE runs: PE id -> worker id.
pub type Placement = BTreeMap<PeId, String>;

impl fmt::Display for PeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One PE of the physical model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeSpec {
    /// Stable identity.
    pub id: PeId,
    /// Operator it runs.
    pub operator: Arc<str>,
    /// Fingerprint of the operator spec it runs.
    pub revision: Arc<str>,
    /// Parallel index, `0..parallelism`.
    pub index: u32,
    /// Parallelism of its operator.
    pub parallelism: u32,
    /// Key groups whose keyed state it owns.
    pub key_groups: KeyGroupRange,
}

/// A directed PE-to-PE channel realising part of a stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Channel {
    /// The stream it belongs to.
    pub stream: StreamKey,
    /// Producing PE.
    pub from: PeId,
    /// Consuming PE.
    pub to: PeId,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// How one producer PE routes one of its output streams.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Output {
    /// The stream.
    pub stream: StreamKey,
    /// How records are spread over `targets`.
    pub partitioning: Partitioning,
    /// Consumer PEs, in index order (hash and round robin index into this list).
    pub targets: Vec<PeId>,
}

/// The PEs and channels one version of an app expands to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalModel {
    /// Every PE by id.
    pub pes: BTreeMap<PeId, PeSpec>,
    /// Every channel.
    pub channels: BTreeSet<Channel>,
    /// Per producer PE, its output routes sorted by stream.
    pub outputs: BTreeMap<PeId, Vec<Output>>,
}

impl PhysicalModel {
    /// Expands a (valid) app into its physical model.
    pub fn expand(app: &AppSpec) -> Self {
        let mut m = PhysicalModel::default();
        let mut ids: BTreeMap<&str, Vec<PeId>> = BTreeMap::new();
        for op in &app.operators {
            let rev: Arc<str> = operator_revision(op).into();
            let name: Arc<str> = op.name.as_str().into();
            let list = (0..op.parallelism)
                .map(|i| {
                    let id = PeId::new(&op.name, &rev, i);
                    m.pes.insert(
                        id.clone(),
                        PeSpec {
                            id: id.clone(),
                            operator: name.clone(),
                            revision: rev.clone(),
                            index: i,
                            parallelism: op.parallelism,
                            key_groups: KeyGroupRange::for_pe(i, op.parallelism),
                        },
                    );
                    id
                })
                .collect();
            ids.insert(&op.name, list);
        }
        let empty = Vec::new();
        for s in &app.streams {
            let key = s.key();
            let producers = ids.get(s.from.as_str()).unwrap_or(&empty);
            let consumers = ids.get(s.to.as_str()).unwrap_or(&empty);
            for (i, p) in producers.iter().enumerate() {
                let targets: Vec<PeId> = match s.partitioning {
                    Partitioning::Forward => consumers.get(i).cloned().into_iter().collect(),
                    _ => consumers.clone(),
                };
                for t in &targets {
                    m.channels.insert(Channel {
                        stream: key.clone(),
                        from: p.clone(),
                        to: t.clone(),
                    });
                }
                m.outputs.entry(p.clone()).or_default().push(Output {
                    stream: key.clone(),
                    partitioning: s.partitioning.clone(),
                    targets,
                });
            }
        }
        for outs in m.outputs.values_mut() {
            outs.sort();
        }
        m
    }

    /// The PEs of one operator, in index order (ids sort as text, so `#10` < `#2`).
    pub fn pes_of(&self, operator: &str) -> Vec<&PeSpec> {
        let mut v: Vec<&PeSpec> = self
            .pes
            .values()
            .filter(|p| &*p.operator == operator)
            .collect();
        v.sort_by_key(|p| (p.revision.clone(), p.index));
        v
    }

    /// The channels feeding `pe`.
    pub fn inputs_of<'a>(&'a self, pe: &'a PeId) -> impl Iterator<Item = &'a Channel> + 'a {
        self.channels.iter().filter(move |c| &c.to == pe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_app, SpecFormat};

    const APP: &str = r#"
name: t
operators:
  - {name: gen, kind: source.generator, parallelism: 2, params: {count: 10}}
  - {name: up, kind: map, parallelism: 2, params: {set: {u: "upper(key)"}}}
  - {name: count, kind: window.count, parallelism: 3, params: {size_ms: 1000}}
  - {name: out, kind: sink.verify}
streams:
  - {from: gen, to: up}
  - {from: up, to: count, partitioning: hash}
  - {from: count, to: out, partitioning: round_robin}
"#;

    #[test]
    fn expands_pes_and_channels_per_partitioning() {
        let app = parse_app(APP, SpecFormat::Yaml).unwrap();
        let m = PhysicalModel::expand(&app);
        assert_eq!(m.pes.len(), 2 + 2 + 3 + 1);
        // forward 2 + hash 2x3 + round robin 3x1
        assert_eq!(m.channels.len(), 2 + 6 + 3);
        let gen0 = m.pes_of("gen")[0].id.clone();
        let up: Vec<_> = m.pes_of("up").into_iter().map(|p| p.id.clone()).collect();
        assert_eq!(m.outputs[&gen0][0].targets, vec![up[0].clone()]);
        assert_eq!(m.outputs[&up[1]][0].targets.len(), 3);
        let count: Vec<_> = m
            .pes_of("count")
            .into_iter()
            .map(|p| p.key_groups)
            .collect();
        assert_eq!(count[0].start, 0);
        assert_eq!(count[2].end, crate::spec::KEY_GROUPS);
    }

    #[test]
    fn pe_ids_read_back() {
        for i in [0, 7, 10, 255, u32::MAX] {
            let id = PeId::new("op", "0badf00d", i);
            assert_eq!(id.as_str(), format!("op@0badf00d#{i}"));
            assert_eq!(id.operator(), "op");
        }
    }

    #[test]
    fn ids_are_stable_and_change_with_the_spec() {
        let a = parse_app(APP, SpecFormat::Yaml).unwrap();
        let mut b = a.clone();
        assert_eq!(PhysicalModel::expand(&a), PhysicalModel::expand(&b));
        b.operators[1].kind = crate::spec::OperatorKind::Map(crate::spec::MapParams {
            set: [("u".to_string(), "lower(key)".to_string())].into(),
            ..Default::default()
        });
        let (ma, mb) = (PhysicalModel::expand(&a), PhysicalModel::expand(&b));
        let gen_a: Vec<_> = ma.pes_of("gen").into_iter().map(|p| &p.id).collect();
        let gen_b: Vec<_> = mb.pes_of("gen").into_iter().map(|p| &p.id).collect();
        assert_eq!(gen_a, gen_b);
        let up_a: BTreeSet<_> = ma.pes_of("up").into_iter().map(|p| &p.id).collect();
        let up_b: BTreeSet<_> = mb.pes_of("up").into_iter().map(|p| &p.id).collect();
        assert!(up_a.is_disjoint(&up_b));
    }

    #[test]
    fn an_id_names_its_operator_and_index() {
        let id = PeId::new("win-2", "0badf00d", 13);
        assert_eq!((id.operator(), id.index()), ("win-2", Some(13)));
        assert_eq!(PeId("no-index".into()).index(), None);
        // The same read from the id as text.
        assert_eq!(PeId::operator_of(id.as_str()), "win-2");
        assert_eq!(PeId::operator_of("bare"), "bare");
    }
}
