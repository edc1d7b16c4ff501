//! `receivers.otlp.protocols`: where OTLP spans come in, named as in the OpenTelemetry Collector.

use super::check::{Checker, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Receivers, named as in the OpenTelemetry Collector (`receivers.otlp.protocols`). Every section's defaults are
/// its `Default` implementation, and nowhere else.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawReceivers {
    /// The OTLP receiver.
    pub otlp: RawOtlpReceiver,
}

/// The OTLP receiver.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawOtlpReceiver {
    /// The protocols it listens on.
    pub protocols: RawProtocols,
}

/// OTLP/gRPC and OTLP/HTTP listeners; `enabled: false` turns one off.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawProtocols {
    /// OTLP/gRPC (TraceService/Export).
    pub grpc: RawGrpcServer,
    /// OTLP/HTTP (`POST /v1/traces`, protobuf or JSON).
    pub http: RawHttpServer,
}

/// OTLP/gRPC server settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawGrpcServer {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Listen address, `host:port`.
    pub endpoint: String,
    /// Largest accepted message after decompression, in MiB; the default is the collector's.
    pub max_recv_msg_size_mib: u64,
}

impl Default for RawGrpcServer {
    fn default() -> RawGrpcServer {
        RawGrpcServer { enabled: true, endpoint: "0.0.0.0:4317".into(), max_recv_msg_size_mib: 4 }
    }
}

/// OTLP/HTTP server settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttpServer {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Listen address, `host:port`.
    pub endpoint: String,
    /// Largest accepted request body as sent, in bytes; the default is the collector's.
    pub max_request_body_size: u64,
    /// Largest accepted body after gzip decompression, in bytes; guards against gzip bombs.
    pub max_decompressed_body_size: u64,
}

impl Default for RawHttpServer {
    fn default() -> RawHttpServer {
        RawHttpServer {
            enabled: true,
            endpoint: "0.0.0.0:4318".into(),
            max_request_body_size: 20 * 1024 * 1024,
            max_decompressed_body_size: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub grpc: Option<GrpcServerConfig>,
    pub http: Option<HttpServerConfig>,
}

#[derive(Debug, Clone)]
pub struct GrpcServerConfig {
    pub endpoint: SocketAddr,
    pub max_recv_msg_size: usize,
}

#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    pub endpoint: SocketAddr,
    pub max_request_body_size: usize,
    pub max_decompressed_body_size: usize,
}

const GRPC: &str = "receivers.otlp.protocols.grpc";
const HTTP: &str = "receivers.otlp.protocols.http";

impl RawReceivers {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<ReceiverConfig, ConfigError> {
        let protocols = &self.otlp.protocols;
        let grpc = if protocols.grpc.enabled { Some(protocols.grpc.check(check)?) } else { None };
        let http = if protocols.http.enabled { Some(protocols.http.check(check)?) } else { None };
        if grpc.is_none() && http.is_none() {
            return Err(check.err("receivers.otlp.protocols", "at least one of grpc, http must be enabled"));
        }
        Ok(ReceiverConfig { grpc, http })
    }
}

impl RawGrpcServer {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<GrpcServerConfig, ConfigError> {
        let key = format!("{GRPC}.max_recv_msg_size_mib");
        if self.max_recv_msg_size_mib == 0 || self.max_recv_msg_size_mib > 1024 {
            return Err(check.err(key, "must be between 1 and 1024"));
        }
        Ok(GrpcServerConfig {
            endpoint: check.socket_addr(&format!("{GRPC}.endpoint"), &self.endpoint)?,
            max_recv_msg_size: check.mib(&key, self.max_recv_msg_size_mib)?,
        })
    }
}

impl RawHttpServer {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<HttpServerConfig, ConfigError> {
        let body_key = format!("{HTTP}.max_request_body_size");
        let decompressed_key = format!("{HTTP}.max_decompressed_body_size");
        if self.max_request_body_size == 0 {
            return Err(check.err(body_key, "must be greater than zero"));
        }
        if self.max_decompressed_body_size < self.max_request_body_size {
            return Err(check.err(decompressed_key, "must be at least max_request_body_size"));
        }
        Ok(HttpServerConfig {
            endpoint: check.socket_addr(&format!("{HTTP}.endpoint"), &self.endpoint)?,
            max_request_body_size: check.bytes(&body_key, self.max_request_body_size)?,
            max_decompressed_body_size: check.bytes(&decompressed_key, self.max_decompressed_body_size)?,
        })
    }
}
