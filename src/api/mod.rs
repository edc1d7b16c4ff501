//! The order API, served over gRPC (`ordertrail.v1.OrderService`, defined in `proto/ordertrail/v1/`) and over
//! HTTP/JSON (described by the OpenAPI document it serves), plus health, readiness and `/metrics`.
//!
//! Both transports call the same three functions here, which ask the engine thread through the pipeline and
//! build their answers with the pure `query` module; only `grpc.rs` knows tonic and only `http.rs` knows axum.

mod console;
pub mod grpc;
mod grpc_insight;
pub mod http;

use crate::clock::unix_nanos_now;
use crate::metrics::OrderMetrics;
use crate::pipeline::PipelineHandle;
use ordertrail_core::config::Config;
use ordertrail_core::order::UnknownStatus;
use ordertrail_core::query::{
    self, ExceptionFilter, ExceptionSummary, FlowView, OrderFilter, OrderPage, OrderView, QueryError, SearchResult,
    StalledOrders,
};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The generated gRPC code of `proto/ordertrail/v1/orders.proto` and `insight.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("ordertrail.v1");
    /// The compiled descriptors, served by gRPC reflection so that grpcurl needs no proto files.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ordertrail_v1_descriptor.bin"));
}

/// How long an API call waits for the engine thread before answering UNAVAILABLE.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the engine thread may go without coming round its loop before readiness reports it stuck.
const ENGINE_STUCK_AFTER: Duration = Duration::from_secs(10);
/// Affected orders listed per exception group.
const EXCEPTION_SAMPLE_SIZE: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("order `{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the engine did not answer in time")]
    Unavailable,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        ApiError::InvalidArgument(e.to_string())
    }
}

/// What the API listeners share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub pipeline: PipelineHandle,
    pub config: Arc<Config>,
    pub metrics: Arc<OrderMetrics>,
    /// False before startup completes and once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// False while the last state commit failed (a full disk, say).
    pub store_healthy: Arc<AtomicBool>,
    /// The bearer tokens callers must present, when `api.auth` is configured.
    pub auth: Option<Arc<crate::auth::BearerTokens>>,
}

impl ApiState {
    async fn engine<T: Send + 'static>(
        &self,
        question: impl FnOnce(&ordertrail_core::engine::Engine) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(ENGINE_TIMEOUT, self.pipeline.inspect(question))
            .await
            .ok()
            .flatten()
            .ok_or(ApiError::Unavailable)
    }

    pub async fn get_order(&self, order_id: &str) -> Result<OrderView, ApiError> {
        if order_id.is_empty() {
            return Err(ApiError::InvalidArgument("order_id must not be empty".into()));
        }
        let order = tokio::time::timeout(ENGINE_TIMEOUT, self.pipeline.order(order_id))
            .await
            .map_err(|_| ApiError::Unavailable)?
            .ok_or_else(|| ApiError::NotFound(order_id.to_string()))?;
        Ok(query::order_view(&self.config, &order, unix_nanos_now()))
    }

    pub async fn list_orders(
        &self,
        filter: OrderFilter,
        page_size: usize,
        token: String,
    ) -> Result<OrderPage, ApiError> {
        check_choice("stage", filter.stage.as_deref(), &self.stage_names())?;
        let size = query::page_size(&self.config, page_size)?;
        let now = unix_nanos_now();
        self.engine(move |engine| query::list_orders(engine.config(), engine.orders(), &filter, size, &token, now))
            .await?
            .map_err(ApiError::from)
    }

    pub async fn list_exceptions(
        &self,
        filter: ExceptionFilter,
        max_groups: usize,
    ) -> Result<ExceptionSummary, ApiError> {
        let groups = query::page_size(&self.config, max_groups)?;
        self.engine(move |engine| query::list_exceptions(engine.orders(), &filter, groups, EXCEPTION_SAMPLE_SIZE)).await
    }

    /// The object-centric event log (OCEL 2.0) of the orders in memory whose first span is within the range.
    pub async fn ocel(
        &self,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<ordertrail_core::ocel::OcelLog, ApiError> {
        self.engine(move |engine| {
            ordertrail_core::ocel::ocel(engine.config(), engine.orders(), &engine.alias_records(), since, until)
        })
        .await
    }

    /// How long each transition takes, overall and per dimension value, and whose breaches they are.
    pub async fn bottlenecks(&self, filter: query::BottleneckFilter) -> Result<query::Bottlenecks, ApiError> {
        check_choice("to", filter.to.as_deref(), &self.stage_names())?;
        let dimensions: Vec<&str> = self.config.dimensions.iter().map(|d| d.name.as_str()).collect();
        check_choice("dimension", filter.dimension.as_deref(), &dimensions)?;
        self.engine(move |engine| query::bottlenecks(engine.config(), engine.orders(), &filter)).await
    }

    /// The open orders whose running clocks were found at risk, the nearest deadline first.
    pub async fn at_risk(
        &self,
        owner: Option<String>,
        target: Option<String>,
        limit: usize,
    ) -> Result<query::AtRiskOrders, ApiError> {
        let targets: Vec<&str> = self.config.sla.targets.iter().map(|t| t.name.as_str()).collect();
        check_choice("target", target.as_deref(), &targets)?;
        let limit = query::page_size(&self.config, limit)?;
        let now = unix_nanos_now();
        let filter = query::RiskFilter { owner, target };
        self.engine(move |engine| query::at_risk_orders(engine.config(), engine.orders(), &filter, limit, now)).await
    }

    /// What the delay model has learned, per target and dimension value.
    pub async fn delay_model(&self) -> Result<query::DelayModelView, ApiError> {
        self.engine(move |engine| query::delay_model_view(engine.config(), engine.delay_model())).await
    }

    /// Recurring exception patterns, the busiest in the latest window first.
    pub async fn patterns(&self, filter: query::PatternFilter, limit: usize) -> Result<query::PatternList, ApiError> {
        let classes: Vec<&str> = self.config.taxonomy.classes.iter().map(|c| c.name.as_str()).collect();
        check_choice("class", filter.class.as_deref(), &classes)?;
        let limit = query::page_size(&self.config, limit)?;
        let now = unix_nanos_now();
        self.engine(move |engine| query::patterns(engine.config(), engine.pattern_book(), &filter, limit, now)).await
    }

    /// The flow of open orders over the stages, for the console's first page.
    pub async fn flow(&self) -> Result<FlowView, ApiError> {
        let now = unix_nanos_now();
        self.engine(move |engine| query::flow(engine.config(), engine.orders(), now)).await
    }

    /// The stalled and breached orders, most overdue first; `owner` keeps those whose next action a team owns.
    pub async fn stalled(&self, owner: Option<String>, limit: usize) -> Result<StalledOrders, ApiError> {
        let limit = query::page_size(&self.config, limit)?;
        let now = unix_nanos_now();
        self.engine(move |engine| query::stalled(engine.config(), engine.orders(), owner.as_deref(), limit, now)).await
    }

    /// The orders whose key is `text` or that an alias of that value names.
    pub async fn search(&self, text: &str) -> Result<SearchResult, ApiError> {
        let text = text.trim().to_string();
        if text.is_empty() {
            return Err(ApiError::InvalidArgument("q must not be empty".into()));
        }
        // The order itself is read through the store, so that an order no longer in memory is found too.
        let is_order = tokio::time::timeout(ENGINE_TIMEOUT, self.pipeline.order(&text))
            .await
            .map_err(|_| ApiError::Unavailable)?
            .is_some();
        self.engine(move |engine| query::search(&text, is_order, &engine.orders_by_alias(&text))).await
    }

    /// Ready when startup completed, shutdown has not begun, the last state commit succeeded, and the engine
    /// answers; otherwise the reason.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting or stopping");
        }
        if !self.store_healthy.load(Ordering::Relaxed) {
            return Err("the store cannot commit (is the disk full?)");
        }
        // The engine goes round its loop at least ten times a second, busy or idle; one group of work takes well
        // under a second. Readiness reads that from state rather than queueing a question behind the work, so a
        // busy pod stays ready and only a stuck engine thread is reported.
        if self.pipeline.heartbeat().age(unix_nanos_now()) > ENGINE_STUCK_AFTER {
            return Err("the engine thread has not gone round its loop for 10 s");
        }
        Ok(())
    }

    /// A stage filter: a milestone name, or `none` for orders before their first main-path milestone.
    pub(crate) fn stage(&self, stage: Option<String>) -> Result<Option<String>, ApiError> {
        check_choice("stage", stage.as_deref(), &self.stage_names())?;
        Ok(stage)
    }

    fn stage_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.config.taxonomy.milestones.iter().map(|m| m.name.as_str()).collect();
        names.push("none");
        names
    }
}

/// A status filter parsed into its type; an unknown name is an invalid argument that lists the known ones.
pub(crate) fn parse_status<T: FromStr<Err = UnknownStatus>>(
    field: &str,
    value: Option<String>,
) -> Result<Option<T>, ApiError> {
    value.map(|v| v.parse::<T>().map_err(|e| ApiError::InvalidArgument(format!("{field} {e}")))).transpose()
}

fn check_choice(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => {
            Err(ApiError::InvalidArgument(format!("{field} `{v}` is not one of {}", allowed.join(", "))))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
