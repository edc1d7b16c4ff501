//! Configuration: a YAML file read into serde structs (`raw`), then validated into compiled form (`validated`).
//!
//! Startup fails fast on any error, naming the file, the key path and the reason, like the collector's
//! `Validate()`: an operator should never discover a typo by watching spans go unlabelled.

pub mod operations;
pub mod raw;
pub mod validated;

pub use operations::*;

pub use validated::*;

use std::path::Path;

/// The embedded default configuration, used by `ordertrail demo` and when `run` gets no `--config`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default.yaml");
/// The name under which the embedded default appears in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid { file: String, key: String, reason: String },
}

/// Parses and validates YAML text that came from `file`.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let raw: raw::RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "(top level)".to_string() } else { key };
        ConfigError::Invalid { file: file.to_string(), key, reason: e.into_inner().to_string() }
    })?;
    Config::from_raw(raw, file)
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    parse(&text, &file)
}

/// The embedded default configuration, validated.
pub fn default_config() -> Config {
    // The embedded default is checked by a unit test, so failing here would be a build defect.
    parse(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME).expect("the embedded default config is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_has_the_distribution_taxonomy() {
        let config = parse(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_NAME).unwrap();
        let names: Vec<_> = config.taxonomy.milestones.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "order_capture",
                "credit_approval",
                "pricing_approval",
                "inventory_allocation",
                "pick_release",
                "pick_pack",
                "shipment_confirmation",
                "invoicing",
                "customer_notification",
                "order_cancellation"
            ]
        );
        assert!(config.taxonomy.milestones[8].off_path);
        assert_eq!(config.order_traces.close_on, vec![7]);
        assert!(config.correlation.order_keys.attributes.contains(&"app.order.id".to_string()));
    }

    #[test]
    fn unknown_key_names_file_key_and_reason() {
        let err = parse("correlation:\n  inherit_wiat: 2s\n", "x.yaml").unwrap_err().to_string();
        assert!(err.starts_with("x.yaml: key `correlation"), "{err}");
        assert!(err.contains("unknown field `inherit_wiat`"), "{err}");
    }

    #[test]
    fn bad_regex_in_rule_is_located() {
        let yaml = DEFAULT_CONFIG_YAML.replace("(?i)invoice", "(?i)invoice(");
        let err = parse(&yaml, "y.yaml").unwrap_err().to_string();
        assert!(err.contains("rules["), "{err}");
        assert!(err.contains("span_name.regex"), "{err}");
        assert!(err.contains("invalid regular expression"), "{err}");
    }
}

/// Command-line overrides, applied after validation and validated themselves.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub grpc_listen: Option<String>,
    pub http_listen: Option<String>,
    pub export_endpoint: Option<String>,
    pub export_protocol: Option<String>,
    pub data_dir: Option<std::path::PathBuf>,
    pub api_http_listen: Option<String>,
    pub api_grpc_listen: Option<String>,
}

impl Config {
    /// Applies command-line overrides; a bad value is reported under the flag's name.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, reason: String| ConfigError::Invalid { file: "command line".into(), key: key.into(), reason };
        if let Some(addr) = &overrides.grpc_listen {
            let endpoint = addr.parse().map_err(|e| invalid("--grpc-listen", format!("`{addr}`: {e}")))?;
            let size = self.receivers.grpc.as_ref().map_or(4 * 1024 * 1024, |g| g.max_recv_msg_size);
            self.receivers.grpc = Some(GrpcServerConfig { endpoint, max_recv_msg_size: size });
        }
        if let Some(addr) = &overrides.http_listen {
            let endpoint = addr.parse().map_err(|e| invalid("--http-listen", format!("`{addr}`: {e}")))?;
            let (body, decompressed) = self.receivers.http.as_ref().map_or((20 * 1024 * 1024, 64 * 1024 * 1024), |h| {
                (h.max_request_body_size, h.max_decompressed_body_size)
            });
            self.receivers.http = Some(HttpServerConfig {
                endpoint,
                max_request_body_size: body,
                max_decompressed_body_size: decompressed,
            });
        }
        if overrides.export_endpoint.is_some() || overrides.export_protocol.is_some() {
            let endpoint = overrides
                .export_endpoint
                .clone()
                .or_else(|| self.exporter.as_ref().map(|e| e.endpoint.clone()))
                .ok_or_else(|| {
                    invalid("--export-protocol", "needs --export-endpoint or an exporter in the config".into())
                })?;
            let protocol = overrides.export_protocol.clone().or_else(|| {
                self.exporter.as_ref().map(|e| match e.protocol {
                    ExportProtocol::Grpc => "grpc".to_string(),
                    ExportProtocol::HttpProtobuf => "http/protobuf".to_string(),
                })
            });
            let raw = raw::RawOtlpExporter { endpoint: Some(endpoint), protocol, ..Default::default() };
            let mut exporter = validated::exporter_from_raw("command line", &raw)?;
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
            self.api.http = Some(addr.parse().map_err(|e| invalid("--api-http-listen", format!("`{addr}`: {e}")))?);
        }
        if let Some(addr) = &overrides.api_grpc_listen {
            self.api.grpc = Some(addr.parse().map_err(|e| invalid("--api-grpc-listen", format!("`{addr}`: {e}")))?);
        }
        Ok(())
    }
}
