//! `api`: the order API listeners (HTTP/JSON with health and `/metrics`, gRPC), page bounds and the link to an
//! order trace in Jaeger or Grafana.

use super::check::{Checker, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The order API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawApi {
    /// HTTP/JSON API, OpenAPI document, `/healthz`, `/readyz` and `/metrics`.
    pub http: RawApiListener,
    /// gRPC API (`ordertrail.v1.OrderService`) and gRPC health.
    pub grpc: RawApiListener,
    /// Largest page a list call returns (the default page is 100).
    pub max_page_size: usize,
    /// Link to an order trace in the tracing UI; `{trace_id}` is replaced, e.g.
    /// `http://jaeger:16686/trace/{trace_id}`; no link when absent or empty (`""` turns off a default's link).
    pub trace_url_template: Option<String>,
}

impl Default for RawApi {
    fn default() -> RawApi {
        RawApi {
            http: RawApiListener { enabled: true, endpoint: Some("0.0.0.0:8080".into()) },
            grpc: RawApiListener { enabled: true, endpoint: Some("0.0.0.0:8081".into()) },
            max_page_size: 1000,
            trace_url_template: None,
        }
    }
}

/// One API listener.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawApiListener {
    /// Whether the listener runs.
    pub enabled: bool,
    /// Listen address, `host:port`; the listener's default port when absent (HTTP 8080, gRPC 8081).
    pub endpoint: Option<String>,
}

impl Default for RawApiListener {
    /// Used only for a listener section that leaves `endpoint` out; [`RawApi::default`] names the endpoints.
    fn default() -> RawApiListener {
        RawApiListener { enabled: true, endpoint: None }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub max_page_size: usize,
    pub trace_url_template: Option<String>,
}

impl ApiConfig {
    /// The link to an order trace in the tracing UI, when a template is configured.
    pub fn trace_url(&self, trace_id: &str) -> Option<String> {
        self.trace_url_template.as_ref().map(|t| t.replace("{trace_id}", trace_id))
    }
}

impl RawApi {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<ApiConfig, ConfigError> {
        let defaults = RawApi::default();
        let listener = |key: &str, raw: &RawApiListener, default: &RawApiListener| {
            if !raw.enabled {
                return Ok(None);
            }
            let endpoint = raw.endpoint.as_deref().or(default.endpoint.as_deref()).unwrap_or_default();
            check.socket_addr(&format!("{key}.endpoint"), endpoint).map(Some)
        };
        let max_page_size = check.positive("api.max_page_size", self.max_page_size)?;
        let trace_url_template = self.trace_url_template.clone().filter(|t| !t.is_empty());
        if let Some(template) = &trace_url_template {
            if !template.contains("{trace_id}") {
                return Err(check.err("api.trace_url_template", "must contain `{trace_id}`"));
            }
        }
        Ok(ApiConfig {
            http: listener("api.http", &self.http, &defaults.http)?,
            grpc: listener("api.grpc", &self.grpc, &defaults.grpc)?,
            max_page_size,
            trace_url_template,
        })
    }
}
