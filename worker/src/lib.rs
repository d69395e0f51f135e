//! The Weir worker. The PE runtime and data plane land with the worker issue;
//! this crate currently holds only the binary entry point.
