#![warn(missing_docs)]
//! The `weir.v1` gRPC protocol of Weir.
//!
//! Generated from `proto/weir/v1/*.proto` (whose comments document every message and
//! field) by `tonic-prost-build` with the vendored `protoc`. Everything lives in
//! [`v1`]:
//!
//! | service | direction | server trait / client |
//! | --- | --- | --- |
//! | `Weir` | clients -> any master | [`v1::weir_server::Weir`], [`v1::weir_client::WeirClient`] |
//! | `WeirAdmin` | operators -> any master | [`v1::weir_admin_server::WeirAdmin`], [`v1::weir_admin_client::WeirAdminClient`] |
//! | `WorkerControl` | master leader -> worker, worker -> worker (state) | [`v1::worker_control_server::WorkerControl`], [`v1::worker_control_client::WorkerControlClient`] |
//! | `MasterWorkers` | worker -> master leader | [`v1::master_workers_server::MasterWorkers`], [`v1::master_workers_client::MasterWorkersClient`] |
//! | `RaftTransport` | master -> master | [`v1::raft_transport_server::RaftTransport`], [`v1::raft_transport_client::RaftTransportClient`] |
//!
//! `bytes` fields are [`bytes::Bytes`](prost::bytes::Bytes). [`status`] attaches and
//! extracts the validation problems of a refused spec, and names the metadata keys
//! the services use. [`image`] converts reported images to and from
//! `weir_common::image::ImageInfo`.

/// The `weir.v1` package: messages, enums, and the tonic clients and servers.
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

pub mod image;
pub mod status;

/// The encoded `FileDescriptorSet` of every `weir.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/weir_descriptor.bin"));

#[cfg(test)]
mod tests;
