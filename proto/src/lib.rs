//! Tollgate's wire contracts: the generated protobuf types and gRPC services. They depend on
//! nothing else of Tollgate's; what carries them between roles is `tollgate-runtime`
//! (`proto/runtime`).

pub mod convert;
pub mod json;

/// The generated code, in modules that mirror the protobuf packages (it refers to its
/// siblings by relative paths); use the short aliases below.
pub mod generated {
    pub mod tollgate {
        pub mod policy {
            pub mod v1 {
                tonic::include_proto!("tollgate.policy.v1");
            }
        }
        pub mod admin {
            pub mod v1 {
                tonic::include_proto!("tollgate.admin.v1");
            }
        }
        pub mod usage {
            pub mod v1 {
                tonic::include_proto!("tollgate.usage.v1");
            }
        }
    }
}

/// `tollgate.policy.v1`: policy events and the snapshot edges load.
pub use generated::tollgate::policy::v1 as policy;

/// `tollgate.admin.v1`: the control plane's AdminService.
pub use generated::tollgate::admin::v1 as admin;

/// `tollgate.usage.v1`: usage events, budget status and the aggregator's UsageService.
pub use generated::tollgate::usage::v1 as usage;

/// The encoded `FileDescriptorSet` of every Tollgate proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tollgate_descriptor");
