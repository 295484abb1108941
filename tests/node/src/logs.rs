//! The kubelet's log endpoint, reduced to what `kubectl logs` needs (`--tail`, `-f`,
//! `--limit-bytes`), over HTTPS with client certificates of the cluster CA.

use std::{
    convert::Infallible,
    fs,
    io::{Read, Seek, SeekFrom},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Request, Response, StatusCode, body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Files the log server needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .context("reading the serving certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).context("reading the serving key")?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.client_ca).context("reading the client CA")? {
        roots
            .add(ca.context("parsing the client CA")?)
            .context("adding the client CA")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client verifier")?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("loading the serving certificate")?;
    Ok(config)
}

/// Binds `addr`; when its port is taken (another node on this host), any free port.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
            warn!(%addr, "Log port taken; using a free port");
            let any = SocketAddr::new(addr.ip(), 0);
            TcpListener::bind(any)
                .await
                .with_context(|| format!("binding {any}"))
        }
        Err(error) => Err(error).with_context(|| format!("binding {addr}")),
    }
}

/// Serves `/containerLogs/{namespace}/{pod}/{container}` until the process ends.
pub async fn serve(
    listener: TcpListener,
    files: TlsFiles,
    pods_dir: PathBuf,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&files)?));
    let addr = listener.local_addr().context("reading the bound address")?;
    info!(%addr, "Serving container logs");
    let pods_dir = Arc::new(pods_dir);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "Accepting a log connection");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let pods_dir = pods_dir.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(error) => return debug!(%peer, %error, "TLS handshake"),
            };
            let service = service_fn(move |req| handle(req, pods_dir.clone()));
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%peer, %error, "Log connection");
            }
        });
    }
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(message.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// The query of a log request, as kubectl sends it.
#[derive(Debug, Default, PartialEq)]
struct LogQuery {
    follow: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

impl LogQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut out = LogQuery::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "follow" => out.follow = value == "true" || value == "1",
                "tailLines" => out.tail_lines = value.parse().ok(),
                "limitBytes" => out.limit_bytes = value.parse().ok(),
                _ => {}
            }
        }
        out
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    pods_dir: Arc<PathBuf>,
) -> Result<Response<Body>, Infallible> {
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts.as_slice() else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "only /containerLogs/{namespace}/{pod}/{container} is served",
        ));
    };
    let Some(pod_dir) = find_pod_dir(&pods_dir, namespace, pod) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            &format!("pod {namespace}/{pod} is not on this node"),
        ));
    };
    let log = pod_dir.join("logs").join(format!("{container}.log"));
    let query = LogQuery::parse(req.uri().query());
    let (mut head, offset) = read_tail(&log, query.tail_lines).unwrap_or_default();
    if let Some(limit) = query.limit_bytes {
        head.truncate(limit);
    }
    if !query.follow {
        return Ok(text(StatusCode::OK, &String::from_utf8_lossy(&head)));
    }

    let pid_file = pod_dir.join("pids").join(container);
    let state = (Some(head), offset, log, pid_file, pod_dir);
    let stream = futures::stream::unfold(
        state,
        |(first, offset, log, pid_file, pod_dir)| async move {
            if let Some(first) = first {
                return Some((
                    Ok(Frame::data(Bytes::from(first))),
                    (None, offset, log, pid_file, pod_dir),
                ));
            }
            let mut offset = offset;
            loop {
                let running = pid_file.exists();
                let chunk = read_from(&log, &mut offset);
                if !chunk.is_empty() {
                    return Some((
                        Ok(Frame::data(Bytes::from(chunk))),
                        (None, offset, log, pid_file, pod_dir),
                    ));
                }
                if !running || !pod_dir.exists() {
                    return None;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        },
    );
    let body = BodyExt::boxed_unsync(StreamBody::new(stream.boxed()));
    Ok(Response::new(body))
}

/// The directory of the newest pod called `namespace/name` (names hold no `_`).
fn find_pod_dir(pods_dir: &Path, namespace: &str, name: &str) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{name}_");
    fs::read_dir(pods_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The file's last `lines` lines (all without a limit) and its length.
fn read_tail(path: &Path, lines: Option<usize>) -> std::io::Result<(Vec<u8>, u64)> {
    let bytes = fs::read(path)?;
    let len = bytes.len() as u64;
    let Some(lines) = lines else {
        return Ok((bytes, len));
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let start = if lines == 0 {
        bytes.len()
    } else {
        body.iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .nth(lines - 1)
            .map(|(i, _)| i + 1)
            .unwrap_or(0)
    };
    Ok((bytes[start..].to_vec(), len))
}

fn read_from(path: &Path, offset: &mut u64) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut file) = fs::File::open(path)
        && file.seek(SeekFrom::Start(*offset)).is_ok()
        && let Ok(n) = file.read_to_end(&mut out)
    {
        *offset += n as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_should_carry_follow_tail_and_limit() {
        let query = LogQuery::parse(Some(
            "follow=true&tailLines=5&limitBytes=100&timestamps=false",
        ));
        assert_eq!(
            query,
            LogQuery {
                follow: true,
                tail_lines: Some(5),
                limit_bytes: Some(100)
            }
        );
    }

    #[test]
    fn tail_should_return_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("vigil-node-logs-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("c.log");
        fs::write(&log, "a\nb\nc\n").expect("write log");
        assert_eq!(read_tail(&log, Some(2)).expect("read").0, b"b\nc\n");
        assert_eq!(read_tail(&log, Some(10)).expect("read").0, b"a\nb\nc\n");
        assert_eq!(read_tail(&log, None).expect("read").0, b"a\nb\nc\n");
        let _ = fs::remove_dir_all(dir);
    }
}
