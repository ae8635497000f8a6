//! Tollgate's wire contracts: the generated protobuf types and gRPC services, the bus (NATS
//! JetStream or in-process) that carries policy and usage events between roles, and the
//! follower that keeps a role's copy of policy current from it.

pub mod bus;
pub mod convert;
pub mod egress;
pub mod envelope;
pub mod follow;
pub mod health;
pub mod http_serve;
pub mod json;
pub mod signing;
pub mod tls;

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

/// The connections `listener` accepts, with TCP_NODELAY set, for a gRPC server: without it a
/// response written in several parts (headers, a page of events, trailers) waits ~40 ms for
/// the client's delayed ACK.
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|tcp| {
        if let Ok(tcp) = &tcp {
            let _ = tcp.set_nodelay(true);
        }
        tcp
    })
}
