//! The two `google.rpc` messages OTLP uses for errors: `Status`, the body of an OTLP/HTTP failure and the
//! `grpc-status-details-bin` of a gRPC one, and `RetryInfo`, the wait a server asks for before a retry.

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details such as `RetryInfo`; left out of the JSON rendering, which OTLP/HTTP bodies never need.
    #[prost(message, repeated, tag = "3")]
    #[serde(skip)]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

/// The type URL of `RetryInfo` inside `Status.details`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";
