//! `receivers.otlp.protocols`: where OTLP spans come in, named as in the OpenTelemetry Collector.

use super::check::{Checker, ConfigError};
use super::security::{self, AuthConfig, RawAuth, RawServerTls, ServerTlsConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

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
    /// Connections, their timeouts and how many at once.
    pub connections: RawConnections,
    /// TLS (and mutual TLS with `client_ca_file`); plain text when absent.
    pub tls: Option<RawServerTls>,
    /// Bearer tokens senders must present; anyone who reaches the port may send when absent.
    pub auth: Option<RawAuth>,
}

impl Default for RawGrpcServer {
    fn default() -> RawGrpcServer {
        RawGrpcServer {
            enabled: true,
            endpoint: "0.0.0.0:4317".into(),
            max_recv_msg_size_mib: 4,
            connections: RawConnections::default(),
            tls: None,
            auth: None,
        }
    }
}

/// Limits on a listener's connections, so that slow, idle or half-sent connections cannot take every file
/// descriptor and starve the senders that work.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawConnections {
    /// Connections open at once; further ones are closed on accept and counted. At startup it is also kept below
    /// the process's open-file limit.
    pub max_connections: usize,
    /// Longest wait for a request's headers (for gRPC, for the connection's HTTP/2 handshake and first bytes).
    #[serde(with = "humantime_serde")]
    pub read_header_timeout: Duration,
    /// Longest wait for a request's whole body once its headers arrived.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// A connection on which nothing is read or written for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for RawConnections {
    fn default() -> RawConnections {
        RawConnections {
            max_connections: 1000,
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Checked connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub read_header_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults of [`RawConnections`], for listeners without settings of their own (the API's).
    fn default() -> ConnectionLimits {
        let raw = RawConnections::default();
        ConnectionLimits {
            max_connections: raw.max_connections,
            read_header_timeout: raw.read_header_timeout,
            read_timeout: raw.read_timeout,
            idle_timeout: raw.idle_timeout,
        }
    }
}

impl RawConnections {
    fn check(&self, check: &Checker<'_>, key: &str) -> Result<ConnectionLimits, ConfigError> {
        let max_connections = check.positive(&format!("{key}.connections.max_connections"), self.max_connections)?;
        for (field, value) in [
            ("read_header_timeout", self.read_header_timeout),
            ("read_timeout", self.read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(check.err(format!("{key}.connections.{field}"), "must be greater than zero"));
            }
        }
        Ok(ConnectionLimits {
            max_connections,
            read_header_timeout: self.read_header_timeout,
            read_timeout: self.read_timeout,
            idle_timeout: self.idle_timeout,
        })
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
    /// Connections, their timeouts and how many at once.
    pub connections: RawConnections,
    /// TLS (and mutual TLS with `client_ca_file`); plain text when absent.
    pub tls: Option<RawServerTls>,
    /// Bearer tokens senders must present; anyone who reaches the port may send when absent.
    pub auth: Option<RawAuth>,
}

impl Default for RawHttpServer {
    fn default() -> RawHttpServer {
        RawHttpServer {
            enabled: true,
            endpoint: "0.0.0.0:4318".into(),
            max_request_body_size: 20 * 1024 * 1024,
            max_decompressed_body_size: 64 * 1024 * 1024,
            connections: RawConnections::default(),
            tls: None,
            auth: None,
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
    pub connections: ConnectionLimits,
    pub tls: Option<ServerTlsConfig>,
    pub auth: Option<AuthConfig>,
}

#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    pub endpoint: SocketAddr,
    pub max_request_body_size: usize,
    pub max_decompressed_body_size: usize,
    pub connections: ConnectionLimits,
    pub tls: Option<ServerTlsConfig>,
    pub auth: Option<AuthConfig>,
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
            connections: self.connections.check(check, GRPC)?,
            tls: security::server_tls(check, GRPC, &self.tls)?,
            auth: security::auth(check, GRPC, &self.auth)?,
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
            connections: self.connections.check(check, HTTP)?,
            tls: security::server_tls(check, HTTP, &self.tls)?,
            auth: security::auth(check, HTTP, &self.auth)?,
        })
    }
}
