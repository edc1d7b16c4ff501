//! Command-line overrides, applied after validation and validated themselves under the flag's name.

use super::check::{Checker, ConfigError};
use super::exporter::RawOtlpExporter;
use super::receivers::{GrpcServerConfig, HttpServerConfig, RawGrpcServer, RawHttpServer};
use super::{Config, ExporterConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings given on the command line; each replaces the configuration's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub grpc_listen: Option<String>,
    pub http_listen: Option<String>,
    pub export_endpoint: Option<String>,
    pub export_protocol: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub api_http_listen: Option<String>,
    pub api_grpc_listen: Option<String>,
}

const COMMAND_LINE: Checker<'static> = Checker { file: "command line" };

fn listen_address(flag: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse().map_err(|e| COMMAND_LINE.err(flag, format!("`{addr}`: {e}")))
}

impl Config {
    /// Applies command-line overrides; a bad value is reported under the flag's name.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        if let Some(addr) = &overrides.grpc_listen {
            let endpoint = listen_address("--grpc-listen", addr)?;
            // A receiver the file turned off comes back with its default limits.
            let limits = match &self.receivers.grpc {
                Some(grpc) => grpc.clone(),
                None => RawGrpcServer::default().check(&COMMAND_LINE)?,
            };
            self.receivers.grpc = Some(GrpcServerConfig { endpoint, ..limits });
        }
        if let Some(addr) = &overrides.http_listen {
            let endpoint = listen_address("--http-listen", addr)?;
            let limits = match &self.receivers.http {
                Some(http) => http.clone(),
                None => RawHttpServer::default().check(&COMMAND_LINE)?,
            };
            self.receivers.http = Some(HttpServerConfig { endpoint, ..limits });
        }
        if overrides.export_endpoint.is_some() || overrides.export_protocol.is_some() {
            let endpoint = overrides
                .export_endpoint
                .clone()
                .or_else(|| self.exporter.as_ref().map(|e| e.endpoint.clone()))
                .ok_or_else(|| {
                    COMMAND_LINE.err("--export-protocol", "needs --export-endpoint or an exporter in the config")
                })?;
            let defaults = RawOtlpExporter::default();
            let protocol = overrides
                .export_protocol
                .clone()
                .or_else(|| self.exporter.as_ref().map(|e| e.protocol.as_str().to_string()))
                .unwrap_or(defaults.protocol.clone());
            let raw = RawOtlpExporter { endpoint: Some(endpoint), protocol, ..defaults };
            let mut exporter = raw.check(&COMMAND_LINE, "exporters.otlp", "/v1/traces")?;
            // Settings from the file other than where to send stay as configured.
            if let Some(existing) = &self.exporter {
                let (endpoint, protocol, tls) = (exporter.endpoint, exporter.protocol, exporter.tls);
                exporter = ExporterConfig { endpoint, protocol, tls, ..existing.clone() };
            }
            self.exporter = Some(exporter);
        }
        if let Some(dir) = &overrides.data_dir {
            self.storage.directory = dir.clone();
        }
        if let Some(addr) = &overrides.api_http_listen {
            self.api.http = Some(listen_address("--api-http-listen", addr)?);
        }
        if let Some(addr) = &overrides.api_grpc_listen {
            self.api.grpc = Some(listen_address("--api-grpc-listen", addr)?);
        }
        Ok(())
    }
}
