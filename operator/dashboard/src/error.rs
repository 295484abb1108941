//! The one error type of the API, rendered as `{"error": ..., "detail": ...}` with its status.

use axum::{Json, http::StatusCode, response::IntoResponse};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthenticated")]
    Unauthenticated(String),
    #[error("forbidden")]
    Forbidden(String),
    #[error("not found")]
    NotFound(String),
    #[error("bad request")]
    BadRequest(String),
    /// The API server refused a request made as the user; its status and message are kept.
    #[error("refused by the API server")]
    Refused { code: u16, message: String },
    #[error("kubernetes API error")]
    Kube(#[source] kube::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Refused { code, .. } => {
                StatusCode::from_u16(*code).ok().filter(|s| s.is_client_error()).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Self::Kube(kube::Error::Api(s)) if s.code == 404 => StatusCode::NOT_FOUND,
            Self::Kube(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Unauthenticated(d) | Self::Forbidden(d) | Self::NotFound(d) | Self::BadRequest(d) => d.clone(),
            Self::Refused { message, .. } => message.clone(),
            Self::Kube(kube::Error::Api(s)) => s.message.clone(),
            Self::Kube(e) => e.to_string(),
        }
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = &self as &dyn std::error::Error, detail = self.detail(), "Dashboard API failed");
        }
        (status, Json(serde_json::json!({"error": self.to_string(), "detail": self.detail()}))).into_response()
    }
}
