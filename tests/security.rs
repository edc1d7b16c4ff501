//! TLS, mutual TLS and bearer tokens on the real server, with certificates made at test time (rcgen): the OTel
//! SDK over TLS with a token gets through; a client without the right certificate or token is refused with the
//! right gRPC and HTTP codes, and nothing it sent is processed; a rotated certificate is served without a
//! restart; the exporter speaks TLS to a TLS backend.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_sdk::trace::SdkTracerProvider;
use ordertrail_core::config::{AuthConfig, ServerTlsConfig, TlsVersion, TokenSource};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "s3nd3r-t0ken-for-tests";
/// A token bound to a team, whose console shows that team's queue.
const TEAM_TOKEN: &str = "integr4tion-t0ken";

/// A CA and what it signed, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Pki { dir, ca_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), written as `<file>.pem` and `<file>.key`;
    /// returns (certificate PEM, key PEM).
    fn leaf(&self, file: &str, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server_tls(&self, file: &str, client_ca: Option<PathBuf>) -> ServerTlsConfig {
        ServerTlsConfig {
            cert_file: self.dir.join(format!("{file}.pem")),
            key_file: self.dir.join(format!("{file}.key")),
            client_ca_file: client_ca,
            min_version: TlsVersion::Tls12,
            reload_interval: Some(Duration::from_millis(200)),
        }
    }
}

fn token_file(dir: &Path) -> AuthConfig {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# senders\n{TOKEN}\n{TEAM_TOKEN} team=integration-team\n")).unwrap();
    AuthConfig { tokens: TokenSource::File(path), key: "test.auth".into() }
}

/// The real SDK exporting over TLS (trusting `ca`) with `Authorization: Bearer <token>`.
fn tls_sdk_provider(addr: std::net::SocketAddr, ca: &str, token: &str) -> SdkTracerProvider {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://localhost:{}", addr.port()))
        .with_tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost"))
        .with_metadata(metadata)
        .build()
        .unwrap();
    SdkTracerProvider::builder().with_batch_exporter(exporter).build()
}

async fn tls_client(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(TraceServiceClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_over_tls_takes_the_sdk_with_its_token_and_refuses_senders_without_one() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    pki.leaf("server", &["localhost", "127.0.0.1"]);
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    let grpc = config.receivers.grpc.as_mut().unwrap();
    grpc.tls = Some(pki.server_tls("server", None));
    grpc.auth = Some(token_file(dir.path()));
    let server = start_server(config).await;
    let addr = server.grpc_addr.unwrap();

    // The SDK, over TLS, with the token: its span reaches the order trace.
    let provider = tls_sdk_provider(addr, &pki.ca_pem, TOKEN);
    record(&provider, &Context::new(), "order.create", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-TLS")]);
    flush(&provider).await;
    sink.wait_for(WAIT, "the TLS sender's span in its order trace", |spans| {
        spans.iter().any(|r| r.span.name == "order.create" && r.span.trace_id == trace_of("SO-TLS"))
    })
    .await;

    // Over TLS without a token, and with a wrong one: UNAUTHENTICATED, and nothing processed.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    let mut client = tls_client(addr, tls).await.unwrap();
    let status = client.export(keyed_span_request("SO-NO-TOKEN", 7)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut request = tonic::Request::new(keyed_span_request("SO-WRONG-TOKEN", 8));
    request.metadata_mut().insert("authorization", "Bearer not-the-token".parse().unwrap());
    assert_eq!(client.export(request).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    // In plain text, the handshake fails: nothing gets to the service at all.
    let plain = TraceServiceClient::connect(format!("http://{addr}")).await;
    if let Ok(mut plain) = plain {
        let mut request = tonic::Request::new(keyed_span_request("SO-PLAIN", 9));
        request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        assert!(plain.export(request).await.is_err(), "plain text on a TLS port is refused");
    }
    server.pipeline().flush().await;
    let stats = server.engine_stats().await;
    assert_eq!(stats.spans_in, 1, "only the authenticated span was processed");
    for refused in ["SO-NO-TOKEN", "SO-WRONG-TOKEN", "SO-PLAIN"] {
        assert!(server.pipeline().order(refused).await.is_none(), "{refused} was not processed");
    }
    let counters = server.counters();
    assert_eq!(ordertrail::telemetry::Counters::get(&counters.requests_unauthenticated), 2);
    assert!(ordertrail::telemetry::Counters::get(&counters.tls_handshakes_failed) >= 1);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_with_mutual_tls_refuses_clients_without_a_certificate_of_the_client_ca() {
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    pki.leaf("server", &["localhost"]);
    let (client_cert, client_key) = pki.leaf("client", &["erp.example"]);
    let stranger = Pki::new(dir.path(), "stranger");
    let (stranger_cert, stranger_key) = stranger.leaf("client", &["erp.example"]);
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    config.receivers.http.as_mut().unwrap().tls = Some(pki.server_tls("server", Some(pki.ca_file())));
    let server = start_server(config).await;
    let url = format!("https://localhost:{}/v1/traces", server.http_addr.unwrap().port());
    let body = prost::Message::encode_to_vec(&keyed_span_request("SO-MTLS", 3));
    let client = |identity: Option<(String, String)>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", server.http_addr.unwrap());
        if let Some((cert, key)) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let post = |client: reqwest::Client, body: Vec<u8>| {
        let url = url.clone();
        async move { client.post(url).header("content-type", "application/x-protobuf").body(body).send().await }
    };
    // With the client CA's certificate: accepted.
    let accepted = post(client(Some((client_cert, client_key))), body.clone()).await.unwrap();
    assert_eq!(accepted.status(), 200);
    // Without a certificate, and with one of another CA: the handshake fails, no HTTP answer at all.
    assert!(post(client(None), body.clone()).await.is_err(), "no client certificate");
    assert!(post(client(Some((stranger_cert, stranger_key))), body).await.is_err(), "a stranger's certificate");
    server.pipeline().flush().await;
    assert_eq!(server.engine_stats().await.spans_in, 1, "only the mutually authenticated request was processed");
    assert!(ordertrail::telemetry::Counters::get(&server.counters().tls_handshakes_failed) >= 2);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_a_team_that_owns_nothing_stops_startup() {
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "some-token team=warehouse\n").unwrap();
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    config.api.auth = Some(AuthConfig { tokens: TokenSource::File(path), key: "api.auth".into() });
    let err = ordertrail::server::Server::start(config).await.map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("`api.auth`") && err.contains("team `warehouse`") && !err.contains("some-token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_api_needs_a_token_but_probes_do_not() {
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    config.api.auth = Some(token_file(dir.path()));
    let server = start_server(config).await;
    let base = format!("http://{}", server.api_http_addr.unwrap());
    let http = reqwest::Client::new();
    let refused = http.get(format!("{base}/v1/orders")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let wrong = http.get(format!("{base}/v1/orders")).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let allowed = http.get(format!("{base}/v1/orders")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(allowed.status(), 200);
    // The console's page and files carry no data: a browser loads them before it has a token, and the page then
    // asks the API with the token it is given. The console's questions need the token like any other.
    for open in ["/healthz", "/readyz", "/ui", "/ui/console.js", "/ui/console.css", "/ui/favicon.svg"] {
        assert_eq!(http.get(format!("{base}{open}")).send().await.unwrap().status(), 200, "{open}");
    }
    for guarded in ["/v1/flow", "/v1/stalled", "/v1/search?q=SO-1", "/ui/../v1/flow", "/ui/%2e%2e/v1/flow"] {
        let status = http.get(format!("{base}{guarded}")).send().await.unwrap().status();
        assert!(status == 401 || status == 404, "{guarded} needs a token: {status}");
    }
    assert_eq!(http.get(format!("{base}/v1/flow")).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    // Who the console serves: the team a token is bound to, none for a plain token.
    let me = |token: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let answer = http.get(format!("{base}/v1/me")).bearer_auth(token).send().await.unwrap();
            serde_json::from_str::<serde_json::Value>(&answer.text().await.unwrap()).unwrap()
        }
    };
    assert_eq!(me(TEAM_TOKEN).await, serde_json::json!({"team": "integration-team"}));
    assert_eq!(me(TOKEN).await, serde_json::json!({"team": null}));
    assert_eq!(http.get(format!("{base}/metrics")).send().await.unwrap().status(), 401, "metrics need a token");
    assert_eq!(http.get(format!("{base}/metrics")).bearer_auth(TOKEN).send().await.unwrap().status(), 200);

    // The gRPC order service: UNAUTHENTICATED without the token; gRPC health answers anyone.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.api_grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(serving.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let mut orders = ordertrail::api::proto::order_service_client::OrderServiceClient::new(channel);
    let request = ordertrail::api::proto::GetOrderRequest { order_id: "SO-1".into() };
    let status = orders.get_order(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut authorised = tonic::Request::new(request);
    authorised.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert_eq!(orders.get_order(authorised).await.unwrap_err().code(), tonic::Code::NotFound, "through to the service");
    // Two HTTP refusals of /v1/orders, five of the console's questions, /metrics, and the gRPC call.
    assert_eq!(ordertrail::telemetry::Counters::get(&server.counters().requests_unauthenticated), 9);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let old = Pki::new(dir.path(), "old");
    old.leaf("server", &["localhost"]);
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    config.api.http_tls = Some(old.server_tls("server", None));
    let server = start_server(config).await;
    let addr = server.api_http_addr.unwrap();
    let trusting = |ca: &str| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve("localhost", addr)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/healthz", addr.port());
    assert_eq!(trusting(&old.ca_pem).get(&url).send().await.unwrap().status(), 200);
    // A new CA issues the next certificate, written over the old files as cert-manager would.
    let new = Pki::new(dir.path(), "new");
    let (cert, key) = new.leaf("server", &["localhost"]);
    std::fs::write(old.dir.join("server.pem"), cert).unwrap();
    std::fs::write(old.dir.join("server.key"), key).unwrap();
    let client = trusting(&new.ca_pem);
    eventually("the rotated certificate", WAIT, || {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(trusting(&old.ca_pem).get(&url).send().await.is_err(), "the old certificate is no longer served");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_speaks_tls_to_a_tls_backend_trusting_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "backend");
    let (cert, key) = pki.leaf("tempo", &["localhost"]);
    let (sink, sink_addr) = Sink::start_tls(Identity::from_pem(cert, key)).await;
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    let exporter = config.exporter.as_mut().unwrap();
    exporter.endpoint = format!("https://localhost:{}", sink_addr.port());
    exporter.tls = Some(ordertrail_core::config::TlsConfig {
        ca_file: Some(pki.ca_file()),
        cert_file: None,
        key_file: None,
        server_name_override: None,
    });
    let server = start_server(config).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&erp, &Context::new(), "order.create", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-TO-TEMPO")]);
    flush(&erp).await;
    sink.wait_for(WAIT, "the order trace at the TLS backend", |spans| {
        spans.iter().any(|r| r.span.trace_id == trace_of("SO-TO-TEMPO"))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_silent_after_its_handshake_is_closed_after_the_first_bytes_time() {
    use tokio::io::AsyncReadExt;
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    pki.leaf("server", &["localhost"]);
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    let grpc = config.receivers.grpc.as_mut().unwrap();
    grpc.tls = Some(pki.server_tls("server", None));
    grpc.connections.read_header_timeout = Duration::from_secs(1);
    grpc.connections.idle_timeout = Duration::from_secs(120);
    let server = start_server(config).await;
    // A client that completes the handshake and then says nothing: the server greets it (HTTP/2 SETTINGS), which
    // must not keep its place for the idle time.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.grpc_addr.unwrap()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)).connect(name, tcp).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the silent connection was still open after 10 s"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_without_a_token_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    config.receivers.http.as_mut().unwrap().auth = Some(token_file(dir.path()));
    let server = start_server(config).await;
    // Headers announcing a megabyte, and no body: the answer comes at once, without waiting for a byte of it.
    let mut stream = tokio::net::TcpStream::connect(server.http_addr.unwrap()).await.unwrap();
    let head = "POST /v1/traces HTTP/1.1\r\nHost: ordertrail\r\nContent-Type: application/x-protobuf\r\n\
                Content-Length: 1048576\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer)).await.expect("an answer").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
    let counters = server.counters();
    assert_eq!(ordertrail::telemetry::Counters::get(&counters.admitted_bytes), 0, "nothing was admitted");
    assert_eq!(ordertrail::telemetry::Counters::get(&counters.requests_unauthenticated), 1);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_without_a_token_while_the_rest_of_the_api_needs_one() {
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, &dir.path().join("data"), "");
    config.api.auth = Some(token_file(dir.path()));
    config.api.metrics_without_auth = true;
    let server = start_server(config).await;
    let base = format!("http://{}", server.api_http_addr.unwrap());
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/metrics")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/openapi.yaml")).send().await.unwrap().status(), 401);
    assert_eq!(http.get(format!("{base}/v1/exceptions")).send().await.unwrap().status(), 401);
    let body = http.get(format!("{base}/v1/exceptions")).send().await.unwrap().text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "UNAUTHENTICATED", "the Error schema of the OpenAPI document");
    server.shutdown(Duration::from_secs(5)).await;
}
