//! Serves a router over TLS (rustls with ring), reloading the certificate when its files change.

use anyhow::Context as _;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at for a change (cert-manager rotates them).
const RELOAD_CHECK: Duration = Duration::from_secs(10);
/// The longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `addr` over TLS with the PEM certificate chain and key in the two files.
/// Runs until the listener fails.
///
/// # Errors
///
/// When the files cannot be read or parsed at start, or the address cannot be bound.
pub async fn serve_tls(
    addr: SocketAddr,
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
    router: Router,
) -> anyhow::Result<()> {
    let resolver = Arc::new(ReloadingCert::load(cert_path.as_ref(), key_path.as_ref())?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(listen = %addr, "Serving admission webhooks over TLS");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "Accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "Connection ended with an error");
            }
        });
    }
}

/// The serving certificate, read again when either file's modification time changes.
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    state: Mutex<Loaded>,
}

struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").field("cert_path", &self.cert_path).finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        let key = Arc::new(read_pair(cert_path, key_path)?);
        let stamp = (modified(cert_path), modified(key_path));
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            state: Mutex::new(Loaded { stamp, checked: Instant::now(), key }),
        })
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().ok()?;
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamp = (modified(&self.cert_path), modified(&self.key_path));
            if stamp != state.stamp {
                match read_pair(&self.cert_path, &self.key_path) {
                    Ok(key) => {
                        state.key = Arc::new(key);
                        state.stamp = stamp;
                        tracing::info!(cert = %self.cert_path.display(), "Reloaded the serving certificate");
                    }
                    // A half-written pair during rotation: keep serving the old one, retry later.
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "Cannot reload the serving certificate"),
                }
            }
        }
        Some(state.key.clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_pair(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("malformed certificate in {}", cert_path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert_path.display());
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read a private key from {}", key_path.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("unsupported private key type")?;
    Ok(CertifiedKey::new(certs, signing))
}
