//! Credential checks in the style of each real service, applied as an axum route layer.

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::json;
use subtle::ConstantTimeEq;

/// Which credential a service expects, and how it says no.
#[derive(Clone, Debug)]
pub struct Guard {
    scheme: Scheme,
    style: Style,
}

#[derive(Clone, Debug)]
enum Scheme {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `X-API-Key: <key>`.
    ApiKey(String),
    /// HTTP Basic, as the ServiceNow Table API takes it.
    Basic { user: String, password: String },
}

/// How a refusal reads: the project's JSON error, or the real service's own shape.
#[derive(Clone, Copy, Debug)]
enum Style {
    Json,
    ServiceNow,
    /// Slack answers HTTP 200 with `{"ok": false, "error": "invalid_auth"}`.
    Slack,
    OpenAi,
}

impl Guard {
    pub fn bearer(token: &str) -> Self {
        Self {
            scheme: Scheme::Bearer(token.to_owned()),
            style: Style::Json,
        }
    }

    pub fn api_key(key: &str) -> Self {
        Self {
            scheme: Scheme::ApiKey(key.to_owned()),
            style: Style::Json,
        }
    }

    pub fn basic(user: &str, password: &str) -> Self {
        let scheme = Scheme::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        Self {
            scheme,
            style: Style::ServiceNow,
        }
    }

    pub fn slack(token: &str) -> Self {
        Self {
            style: Style::Slack,
            ..Self::bearer(token)
        }
    }

    pub fn openai(key: &str) -> Self {
        Self {
            style: Style::OpenAi,
            ..Self::bearer(key)
        }
    }

    /// `None` when the request carries the expected credential, else why not.
    fn check(&self, headers: &HeaderMap) -> Option<Refusal> {
        let header_value = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let authorization = header_value(header::AUTHORIZATION.as_str());

        let presented = match &self.scheme {
            Scheme::Bearer(expected) => authorization.map(|v| {
                v.strip_prefix("Bearer ")
                    .is_some_and(|t| same(t.trim(), expected))
            }),
            Scheme::ApiKey(expected) => header_value("x-api-key").map(|v| same(v.trim(), expected)),
            Scheme::Basic { user, password } => authorization.map(|v| {
                basic_credentials(v).is_some_and(|(u, p)| same(&u, user) & same(&p, password))
            }),
        };

        match presented {
            None => Some(Refusal::Missing),
            Some(false) => Some(Refusal::Invalid),
            Some(true) => None,
        }
    }

    fn refuse(&self, refusal: Refusal) -> Response {
        let missing = matches!(refusal, Refusal::Missing);
        match self.style {
            Style::Json => {
                let detail = match (&self.scheme, missing) {
                    (Scheme::ApiKey(_), true) => "missing X-API-Key header",
                    (Scheme::ApiKey(_), false) => "invalid API key",
                    (_, true) => "missing Authorization header",
                    (_, false) => "invalid credentials",
                };
                let body = json!({"error": "unauthorized", "detail": detail});
                self.challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response())
            }
            Style::ServiceNow => {
                let body = json!({
                    "error": {
                        "message": "User Not Authenticated",
                        "detail": "Required to provide Auth information",
                    },
                    "status": "failure",
                });
                self.challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response())
            }
            Style::Slack => {
                let error = if missing {
                    "not_authed"
                } else {
                    "invalid_auth"
                };
                Json(json!({"ok": false, "error": error})).into_response()
            }
            Style::OpenAi => {
                let message = if missing {
                    "You didn't provide an API key."
                } else {
                    "Incorrect API key provided."
                };
                let body = json!({"error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": null,
                    "code": (!missing).then_some("invalid_api_key"),
                }});
                (StatusCode::UNAUTHORIZED, Json(body)).into_response()
            }
        }
    }

    fn challenge(&self, mut response: Response) -> Response {
        let scheme = match self.scheme {
            Scheme::Bearer(_) => "Bearer realm=\"vigil-mock\"",
            Scheme::Basic { .. } => "Basic realm=\"Service-now\"",
            Scheme::ApiKey(_) => return response,
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        response
    }
}

enum Refusal {
    Missing,
    Invalid,
}

/// The route layer: passes the request on when the credential matches, answers otherwise.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.check(request.headers()) {
        None => next.run(request).await,
        Some(refusal) => {
            tracing::info!(path = request.uri().path(), "Refused credentials");
            guard.refuse(refusal)
        }
    }
}

fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Compares secrets in constant time (for equal lengths).
fn same(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}
