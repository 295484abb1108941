//! Readiness probes: `httpGet` (plain HTTP), `tcpSocket` and `grpc` (as a TCP connect).
//! An `exec` probe, and `httpGet` with `scheme: HTTPS`, only check that the port accepts
//! connections; liveness and startup probes are not run.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What one probe checks, resolved against the container's ports.
#[derive(Debug, Clone, PartialEq)]
enum Check {
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    /// An `exec` probe, or a port that could not be resolved: passes.
    Pass,
}

/// A readiness probe with its timings (Kubernetes defaults applied).
#[derive(Debug, Clone)]
pub struct Readiness {
    check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn count(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn port_of(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

impl Readiness {
    /// The container's readiness probe, `None` when it has none (ready once running).
    pub fn of(container: &Container) -> Option<Self> {
        let probe: &Probe = container.readiness_probe.as_ref()?;
        let host = |h: &Option<String>| {
            h.clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "127.0.0.1".into())
        };
        let check = if let Some(http) = &probe.http_get {
            match port_of(&http.port, container) {
                Some(port) if http.scheme.as_deref() == Some("HTTPS") => Check::Tcp {
                    host: host(&http.host),
                    port,
                },
                Some(port) => Check::Http {
                    host: host(&http.host),
                    port,
                    path: http
                        .path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/".into()),
                    headers: http
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                },
                None => Check::Pass,
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            port_of(&tcp.port, container).map_or(Check::Pass, |port| Check::Tcp {
                host: host(&tcp.host),
                port,
            })
        } else if let Some(grpc) = &probe.grpc {
            u16::try_from(grpc.port).map_or(Check::Pass, |port| Check::Tcp {
                host: "127.0.0.1".into(),
                port,
            })
        } else {
            Check::Pass
        };
        Some(Readiness {
            check,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10),
            timeout: seconds(probe.timeout_seconds, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        })
    }

    /// Runs the check once.
    pub async fn passes(&self) -> bool {
        tokio::time::timeout(self.timeout, check(&self.check))
            .await
            .unwrap_or(false)
    }
}

async fn check(check: &Check) -> bool {
    match check {
        Check::Pass => true,
        Check::Tcp { host, port } => TcpStream::connect((host.as_str(), *port)).await.is_ok(),
        Check::Http {
            host,
            port,
            path,
            headers,
        } => http_ok(host, *port, path, headers).await,
    }
}

/// A `GET` whose status is 200–399, as the kubelet's HTTP probe.
async fn http_ok(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> bool {
    let Ok(mut stream) = TcpStream::connect((host, port)).await else {
        return false;
    };
    let mut request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let Ok(n) = stream.read(&mut head).await else {
        return false;
    };
    status_is_ok(&head[..n])
}

fn status_is_ok(head: &[u8]) -> bool {
    let line = String::from_utf8_lossy(head);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    matches!(code, Some(200..=399))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};

    #[test]
    fn a_named_http_port_should_resolve_to_the_container_port() {
        let container = Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    port: IntOrString::String("http".into()),
                    path: Some("/readyz".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let readiness = Readiness::of(&container).expect("has a probe");
        assert_eq!(
            readiness.check,
            Check::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/readyz".into(),
                headers: vec![]
            }
        );
        assert_eq!(readiness.period, Duration::from_secs(10));
    }

    #[test]
    fn only_2xx_and_3xx_statuses_should_pass() {
        assert!(status_is_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_is_ok(b"HTTP/1.0 302 Found\r\n"));
        assert!(!status_is_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_is_ok(b"garbage"));
    }
}
