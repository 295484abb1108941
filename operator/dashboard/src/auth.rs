//! Who is asking and what they may do: TokenReview for the token, SubjectAccessReview per access.

use crate::{AppState, error::ApiError};
use async_trait::async_trait;
use axum::{extract::FromRequestParts, http::request::Parts};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, api::PostParams};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

/// An authenticated Kubernetes user, as the API server knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct User {
    pub username: String,
    pub groups: Vec<String>,
    #[serde(skip)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One access to check: a verb on a resource of `vigil.dev` or the core group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    /// `None`: in every namespace.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Access {
    /// A verb on a `vigil.dev` resource.
    pub fn vigil(verb: &'static str, resource: &'static str, namespace: Option<&str>) -> Self {
        Self { verb, group: "vigil.dev", resource, subresource: None, namespace: namespace.map(Into::into), name: None }
    }

    /// A verb on a core resource.
    pub fn core(verb: &'static str, resource: &'static str, namespace: &str) -> Self {
        Self { verb, group: "", resource, subresource: None, namespace: Some(namespace.into()), name: None }
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn sub(mut self, subresource: &'static str) -> Self {
        self.subresource = Some(subresource);
        self
    }

    /// `list runs in soc`, for messages.
    pub fn describe(&self) -> String {
        let what = match self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.to_string(),
        };
        match &self.namespace {
            Some(ns) => format!("{} {what} in namespace {ns}", self.verb),
            None => format!("{} {what} in all namespaces", self.verb),
        }
    }
}

/// Authenticates tokens and authorises accesses. The cluster does it in production; tests mock it.
#[async_trait]
pub trait Authorizer: Send + Sync {
    async fn authenticate(&self, token: &str) -> Result<User, ApiError>;
    async fn allowed(&self, user: &User, access: &Access) -> Result<bool, ApiError>;
}

/// How long a reviewed token is trusted before it is reviewed again.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);

/// Asks the API server: TokenReview and SubjectAccessReview, with a short cache of tokens.
pub struct KubeAuthorizer {
    client: kube::Client,
    tokens: Mutex<HashMap<[u8; 32], (Instant, User)>>,
}

impl KubeAuthorizer {
    pub fn new(client: kube::Client) -> Self {
        Self { client, tokens: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<User> {
        let mut tokens = self.tokens.lock().ok()?;
        tokens.retain(|_, (at, _)| at.elapsed() < TOKEN_CACHE_TTL);
        tokens.get(key).map(|(_, u)| u.clone())
    }
}

#[async_trait]
impl Authorizer for KubeAuthorizer {
    async fn authenticate(&self, token: &str) -> Result<User, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.cached(&key) {
            return Ok(user);
        }

        let review = TokenReview {
            spec: TokenReviewSpec { token: token.into(), ..Default::default() },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true)).ok_or_else(|| {
            ApiError::Unauthenticated(status.error.unwrap_or_else(|| "the token was not accepted".into()))
        })?;
        let user = User {
            username: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        };

        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, (Instant::now(), user.clone()));
        }
        Ok(user)
    }

    async fn allowed(&self, user: &User, access: &Access) -> Result<bool, ApiError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.into()),
                    group: Some(access.group.into()),
                    resource: Some(access.resource.into()),
                    subresource: access.subresource.map(Into::into),
                    namespace: access.namespace.clone(),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed =
            Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        Ok(reviewed.status.is_some_and(|s| s.allowed))
    }
}

/// The authenticated user of a request: `Authorization: Bearer <token>`, reviewed.
impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthenticated("an Authorization: Bearer <token> header is required".into()))?;
        state.authz.authenticate(token).await
    }
}

impl AppState {
    /// Refuses with 403 unless the user may do every one of `accesses`.
    pub(crate) async fn require(&self, user: &User, accesses: &[Access]) -> Result<(), ApiError> {
        for access in accesses {
            if !self.authz.allowed(user, access).await? {
                return Err(ApiError::Forbidden(format!(
                    "{} may not {}",
                    user.username,
                    access.describe()
                )));
            }
        }
        Ok(())
    }

    /// A client that acts as `user`: the API server applies their rights and admission sees them.
    pub(crate) fn client_as(&self, user: &User) -> Result<kube::Client, ApiError> {
        let mut config = self.base_config.clone();
        config.auth_info.impersonate = Some(user.username.clone());
        config.auth_info.impersonate_groups = Some(user.groups.clone()).filter(|g| !g.is_empty());
        kube::Client::try_from(config).map_err(ApiError::Kube)
    }
}
