//! The ops console at `/ui`: one HTML page, its script and its style sheet, compiled into the binary so that the
//! console works without internet access and needs nothing besides ordertrail. The page holds no data: it asks
//! the order API (`/v1/...`) with the caller's token, so it is served without one.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");
const FAVICON_SVG: &str = include_str!("console/favicon.svg");

/// Only the page's own files may run or style it, and it may only talk to this API: whatever a span carries
/// (order ids, reasons, actors) is shown as text, and should some of it ever reach the page as markup, the
/// browser refuses to run it. Links to Jaeger or Tempo are plain navigations, which this does not restrict.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The paths the console serves; the API's token check lets them through, since they carry no data.
pub(crate) fn is_console_path(path: &str) -> bool {
    matches!(path, "/" | "/ui" | "/ui/" | "/ui/console.js" | "/ui/console.css" | "/ui/favicon.svg")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on each load, so that an upgraded ordertrail serves its own page, never a cached older one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn script() -> Response {
    asset(CONSOLE_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(CONSOLE_CSS, "text/css; charset=utf-8")
}

async fn icon() -> Response {
    asset(FAVICON_SVG, "image/svg+xml")
}

/// The console's routes, merged into the HTTP API's router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/console.js", get(script))
        .route("/ui/console.css", get(style))
        .route("/ui/favicon.svg", get(icon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        // Every script and style sheet the page names is one this module serves, from this origin.
        for needed in ["/ui/console.js", "/ui/console.css", "/ui/favicon.svg"] {
            assert!(INDEX_HTML.contains(needed), "{needed}");
            assert!(is_console_path(needed));
        }
        for outside in ["http://", "https://", "//cdn", "<style", "onclick=", "style=\""] {
            assert!(!INDEX_HTML.contains(outside), "the page must not use {outside}");
        }
        // No inline script: the policy would refuse it.
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(INDEX_HTML.contains("<script src=\"/ui/console.js\""));
        // The script asks this API only.
        assert!(!CONSOLE_JS.contains("http://") && !CONSOLE_JS.contains("https://"));
    }
}
