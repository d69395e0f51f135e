//! The Weir master. The Raft-replicated control plane lands with the master issue;
//! this crate currently holds only the binary entry point.
