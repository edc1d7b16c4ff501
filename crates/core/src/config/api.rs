//! `api`: the order API listeners (HTTP/JSON with health and `/metrics`, gRPC), page bounds and the link to an
//! order trace in Jaeger or Grafana.

use super::check::{Checker, ConfigError};
use super::security::{self, AuthConfig, RawAuth, RawServerTls, ServerTlsConfig};
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
    /// Bearer tokens callers of both API transports must present (the order API shows approvers' e-mail
    /// addresses); `/healthz`, `/readyz` and gRPC health stay open, `/metrics` too with `metrics_without_auth`.
    pub auth: Option<RawApiAuth>,
}

/// The API's authentication: bearer tokens as for the receivers, and whether `/metrics` needs one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawApiAuth {
    pub bearer_token_file: Option<String>,
    pub bearer_token_env: Option<String>,
    /// Serve `/metrics` without a token, for a Prometheus that scrapes without one.
    pub metrics_without_auth: bool,
}

impl Default for RawApi {
    fn default() -> RawApi {
        RawApi {
            // Loopback unless configured: the API answers who approved what, so it is not offered to the network
            // by default (the Helm chart binds it to the pod's addresses and can require tokens).
            http: RawApiListener { enabled: true, endpoint: Some("127.0.0.1:8080".into()), tls: None },
            grpc: RawApiListener { enabled: true, endpoint: Some("127.0.0.1:8081".into()), tls: None },
            max_page_size: 1000,
            trace_url_template: None,
            auth: None,
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
    /// TLS (and mutual TLS with `client_ca_file`); plain text when absent.
    pub tls: Option<RawServerTls>,
}

impl Default for RawApiListener {
    /// Used only for a listener section that leaves `endpoint` out; [`RawApi::default`] names the endpoints.
    fn default() -> RawApiListener {
        RawApiListener { enabled: true, endpoint: None, tls: None }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub http_tls: Option<ServerTlsConfig>,
    pub grpc_tls: Option<ServerTlsConfig>,
    pub auth: Option<AuthConfig>,
    /// `/metrics` is served without a token although `auth` is on.
    pub metrics_without_auth: bool,
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
        let (auth, metrics_without_auth) = match &self.auth {
            Some(auth) => {
                let tokens = RawAuth {
                    bearer_token_file: auth.bearer_token_file.clone(),
                    bearer_token_env: auth.bearer_token_env.clone(),
                };
                (Some(tokens.check(check, "api")?), auth.metrics_without_auth)
            }
            None => (None, false),
        };
        Ok(ApiConfig {
            http: listener("api.http", &self.http, &defaults.http)?,
            grpc: listener("api.grpc", &self.grpc, &defaults.grpc)?,
            http_tls: security::server_tls(check, "api.http", &self.http.tls)?,
            grpc_tls: security::server_tls(check, "api.grpc", &self.grpc.tls)?,
            auth,
            metrics_without_auth,
            max_page_size,
            trace_url_template,
        })
    }
}
