//! Stable content fingerprints: the revision part of a PE id.
//!
//! A PE id names the operator, a fingerprint of everything that defines its PEs
//! (kind, params, resources, parallelism) and the parallel index. Identical operator
//! specs therefore give identical PE ids in every version, which is what lets an
//! upgrade leave untouched PEs alone, while any change yields fresh ids so the old
//! and new PEs of a replaced operator can run side by side during the switch.

use crate::spec::OperatorSpec;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a: tiny, dependency-free and stable across platforms and releases.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut w = FnvWriter(FNV_OFFSET);
    w.feed(bytes);
    w.0
}

/// Hashes whatever is written to it, so a serialisation can be fingerprinted without
/// building it in memory first. Also a [`std::hash::Hasher`] for the planner's maps,
/// whose keys are short names: SipHash's DoS resistance buys nothing there (a spec
/// can only slow down its own plan) and costs a third of the planning time.
#[derive(Clone, Copy)]
pub struct FnvWriter(u64);

impl Default for FnvWriter {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl std::hash::Hasher for FnvWriter {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }
}

/// Hash maps and sets keyed by names, hashed with FNV-1a.
pub type FnvBuild = std::hash::BuildHasherDefault<FnvWriter>;

impl FnvWriter {
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
}

impl std::io::Write for FnvWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The 8-hex-digit revision of an operator spec (name excluded: the name is part of
/// the id already).
pub fn operator_revision(op: &OperatorSpec) -> String {
    // Serialising a struct is deterministic: fields in declaration order, maps are
    // BTreeMaps, and floats print in shortest round-trip form.
    let mut w = FnvWriter(FNV_OFFSET);
    serde_json::to_writer(&mut w, &(&op.kind, &op.resources, op.parallelism))
        .expect("operator specs always serialise");
    format!("{:08x}", (w.0 >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
