//! TLS of the listeners: the server configuration built from a listener's `tls` section (certificate chain, key,
//! and for mutual TLS the CAs client certificates must chain to), reloaded when the files change so that a
//! rotated certificate (cert-manager renewing a Secret, say) is served to new connections without a restart.
//! Also the client side where ordertrail speaks TLS through rustls itself (to PostgreSQL): roots, and a client
//! certificate for mutual TLS.

use ordertrail_core::config::{ServerTlsConfig, TlsConfig, TlsVersion};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} `{path}`: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("{what} `{path}` holds no PEM {expected}")]
    Empty { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("the certificate `{cert}` and key `{key}` cannot serve TLS: {source}")]
    Config { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("the client CAs of `{path}` cannot verify clients: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("the {what} cannot verify servers: {reason}")]
    Roots { what: String, reason: String },
    #[error("the client certificate `{cert}` and key `{key}` cannot be used: {source}")]
    ClientIdentity { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// The protocols a listener speaks over TLS, offered by ALPN: gRPC needs HTTP/2 to be agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http2,
    Http1,
}

/// A listener's TLS: the configuration new connections get, replaced when the files change.
#[derive(Debug)]
pub struct ServerTls {
    config: ServerTlsConfig,
    alpn: Alpn,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// Digests of the files' contents, to notice a change whatever their modification times say (`cp -p` keeps
    /// them, and a file can be rewritten within one tick of a coarse clock).
    seen: RwLock<Vec<Option<[u8; 32]>>>,
}

impl ServerTls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(config: &ServerTlsConfig, alpn: Alpn) -> Result<Arc<ServerTls>, TlsError> {
        let server = build(config, alpn)?;
        Ok(Arc::new(ServerTls {
            seen: RwLock::new(modified(config)),
            config: config.clone(),
            alpn,
            current: RwLock::new(Arc::new(server)),
        }))
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.config.client_ca_file.is_some()
    }

    /// Looks at the files every `reload_interval` and loads them again when one changed. A change that does not
    /// load (a key written before its certificate, say) is logged and the configuration in force is kept; the
    /// next look tries again.
    pub fn watch(self: &Arc<Self>, listener: &'static str) {
        let Some(interval) = self.config.reload_interval else { return };
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = tls.upgrade() else { return };
                tls.reload_if_changed(listener);
            }
        });
    }

    /// Loads the files again if one changed since they were last loaded; returns whether it did.
    pub fn reload_if_changed(&self, listener: &str) -> bool {
        let now = modified(&self.config);
        if *self.seen.read().unwrap_or_else(|e| e.into_inner()) == now {
            return false;
        }
        match build(&self.config, self.alpn) {
            Ok(server) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(server);
                *self.seen.write().unwrap_or_else(|e| e.into_inner()) = now;
                tracing::info!(listener, cert_file = %self.config.cert_file.display(), "TLS files changed: reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(listener, error = %e, "TLS files changed but do not load; the previous ones stay in use");
                false
            }
        }
    }
}

/// The files' contents as digests; a file that cannot be read counts as a change once it can.
fn modified(config: &ServerTlsConfig) -> Vec<Option<[u8; 32]>> {
    use sha2::Digest;
    [Some(&config.cert_file), Some(&config.key_file), config.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::read(path).ok().map(|bytes| sha2::Sha256::digest(bytes).into()))
        .collect()
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |reason: String| TlsError::Read { what, path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_path_buf(), expected: "certificate" });
    }
    Ok(certs)
}

fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { what, path: path.to_path_buf(), expected: "private key" }
        }
        e => TlsError::Read { what, path: path.to_path_buf(), reason: e.to_string() },
    })
}

/// A client configuration from a `tls` section: the server's certificate must chain to `ca_file`, or to the
/// system's roots without one, and name the host (or `server_name_override`, which the caller applies); a
/// client certificate is presented when `cert_file` and `key_file` are given. `section` names the section in
/// errors, e.g. `storage.postgres.tls`.
pub fn client_config(tls: &TlsConfig, section: &'static str) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for ca in certificates("tls.ca_file", path)? {
                roots.add(ca).map_err(|e| TlsError::Roots {
                    what: format!("CAs of `{}`", path.display()),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                let errors: Vec<String> = native.errors.iter().map(ToString::to_string).collect();
                return Err(TlsError::Roots {
                    what: format!("system's roots (no {section}.ca_file given)"),
                    reason: if errors.is_empty() { "none were found".into() } else { errors.join("; ") },
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Roots { what: section.into(), reason: e.to_string() })?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("tls.cert_file", cert)?;
            let private = private_key("tls.key_file", key)?;
            builder.with_client_auth_cert(chain, private).map_err(|source| TlsError::ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
                source,
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn build(config: &ServerTlsConfig, alpn: Alpn) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates("tls.cert_file", &config.cert_file)?;
    let key = private_key("tls.key_file", &config.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Config { cert: config.cert_file.clone(), key: config.key_file.clone(), source })?;
    let builder = match &config.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls.client_ca_file", path)? {
                roots.add(ca).map_err(|e| TlsError::ClientCa { path: path.clone(), reason: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa { path: path.clone(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|source| TlsError::Config {
        cert: config.cert_file.clone(),
        key: config.key_file.clone(),
        source,
    })?;
    server.alpn_protocols = match alpn {
        Alpn::Http2 => vec![b"h2".to_vec()],
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(server)
}
