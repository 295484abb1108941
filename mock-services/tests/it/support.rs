//! The fixture: a router built in-process and a small request builder around `oneshot`.

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;
use tower::ServiceExt;
use vigil_mock_services::{AppState, Config, router};

/// A mock with its own state.
pub struct Mock {
    app: Router,
}

impl Mock {
    pub fn new() -> Self {
        Self::with(Config::dev())
    }

    pub fn with(config: Config) -> Self {
        Self {
            app: router(AppState::new(config)),
        }
    }

    pub fn get(&self, path: &str) -> Req {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Req {
        self.request(Method::POST, path)
    }

    pub fn request(&self, method: Method, path: &str) -> Req {
        let builder = Request::builder().method(method).uri(path);
        Req {
            app: self.app.clone(),
            builder,
            body: Body::empty(),
        }
    }
}

/// One request being built.
pub struct Req {
    app: Router,
    builder: axum::http::request::Builder,
    body: Body,
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn basic(self, user: &str, password: &str) -> Self {
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", &format!("Basic {encoded}"))
    }

    pub fn json(mut self, body: Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(body.to_string());
        self
    }

    pub async fn send(self) -> Resp {
        let request = self.builder.body(self.body).expect("valid request");
        let response = self
            .app
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// A response with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The body, after checking the status.
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status, body: {}",
            self.body
        );
        self.body
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        self.expect(StatusCode::OK)
    }
}
