//! A pod's directory on the host and its volumes: emptyDir, configMap, secret, downwardAPI,
//! projected (service account tokens included), hostPath and persistentVolumeClaim.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume},
};
use kube::{Api, api::PostParams};

use crate::{Ctx, env::Sources, fields};

const DEFAULT_FILE_MODE: i32 = 0o644;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// Why a volume could not be set up (`FailedMount`); the pod worker retries.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: {kind} {name:?} not found")]
    SourceMissing {
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error("volume {volume:?}: key {key:?} not found in {kind} {name:?}")]
    KeyMissing {
        volume: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("volume {0:?}: this volume type is not supported by the process node")]
    Unsupported(String),
    #[error("volume {volume:?}: requesting a service account token: {source}")]
    Token {
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("volume {volume:?}: reading the API: {source}")]
    Api {
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where one pod's files live: `$VIGIL_CLUSTER_DIR/pods/<namespace>_<name>_<uid>/`.
#[derive(Debug, Clone)]
pub struct PodLayout {
    pub root: PathBuf,
}

impl PodLayout {
    pub fn new(pods_dir: &Path, pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let dir = format!(
            "{}_{}_{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or("unnamed"),
            meta.uid.as_deref().unwrap_or("nouid"),
        );
        PodLayout {
            root: pods_dir.join(dir),
        }
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    pub fn log(&self, container: &str) -> PathBuf {
        self.root.join("logs").join(format!("{container}.log"))
    }

    pub fn termination(&self, container: &str) -> PathBuf {
        self.root.join("termination").join(container)
    }

    pub fn pid(&self, container: &str) -> PathBuf {
        self.root.join("pids").join(container)
    }

    pub fn hosts(&self) -> PathBuf {
        self.root.join("etc-hosts")
    }

    /// Creates the pod's directories, world-traversable so non-root containers reach their files.
    pub fn create(&self) -> Result<(), VolumeError> {
        for sub in ["", "volumes", "logs", "termination", "pids"] {
            let dir = self.root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_err(&dir))?;
        }
        Ok(())
    }
}

/// A volume ready to be bind-mounted.
#[derive(Debug, Clone)]
pub struct HostVolume {
    pub path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are always mounted read-only.
    pub read_only: bool,
}

/// The pod's volumes by name.
pub type Volumes = HashMap<String, HostVolume>;

/// Ownership the pod's security context asks for.
#[derive(Debug, Clone, Copy, Default)]
struct Owner {
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Owner {
    fn of(pod: &Pod) -> Self {
        let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Owner {
            uid: to_u32(sc.and_then(|s| s.run_as_user)),
            gid: to_u32(sc.and_then(|s| s.fs_group)).or(to_u32(sc.and_then(|s| s.run_as_group))),
        }
    }

    fn apply(&self, path: &Path) -> Result<(), VolumeError> {
        if self.uid.is_none() && self.gid.is_none() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, self.uid, self.gid).map_err(io_err(path))
    }
}

/// Sets up every volume of `pod`. Returns the volumes and how long the shortest service
/// account token lives, so the caller refreshes tokens in time.
pub async fn prepare(
    ctx: &Ctx,
    pod: &Pod,
    layout: &PodLayout,
) -> Result<(Volumes, Option<Duration>), VolumeError> {
    layout.create()?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let sources = Sources::new(ctx.client.clone(), &namespace);
    let owner = Owner::of(pod);
    let mut volumes = Volumes::new();
    let mut token_ttl: Option<Duration> = None;

    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let (host, ttl) = prepare_one(ctx, pod, layout, &sources, owner, volume, false).await?;
        if let Some(ttl) = ttl {
            token_ttl = Some(token_ttl.map_or(ttl, |t| t.min(ttl)));
        }
        volumes.insert(volume.name.clone(), host);
    }
    Ok((volumes, token_ttl))
}

/// Requests fresh tokens for every projected serviceAccountToken source and rewrites them.
pub async fn refresh_tokens(
    ctx: &Ctx,
    pod: &Pod,
    layout: &PodLayout,
) -> Result<Option<Duration>, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let sources = Sources::new(ctx.client.clone(), &namespace);
    let mut token_ttl = None;
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if volume.projected.is_some() {
            let (_, ttl) =
                prepare_one(ctx, pod, layout, &sources, Owner::of(pod), volume, true).await?;
            if let Some(ttl) = ttl {
                token_ttl = Some(token_ttl.map_or(ttl, |t: Duration| t.min(ttl)));
            }
        }
    }
    Ok(token_ttl)
}

async fn prepare_one(
    ctx: &Ctx,
    pod: &Pod,
    layout: &PodLayout,
    sources: &Sources,
    owner: Owner,
    volume: &Volume,
    tokens_only: bool,
) -> Result<(HostVolume, Option<Duration>), VolumeError> {
    let name = volume.name.as_str();
    let dir = layout.volume(name);
    let keyed = |dir: &Path| -> Result<(), VolumeError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(dir))
    };

    if volume.empty_dir.is_some() || volume.ephemeral.is_some() {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).map_err(io_err(&dir))?;
        owner.apply(&dir)?;
        return Ok((
            HostVolume {
                path: dir,
                read_only: false,
            },
            None,
        ));
    }
    if let Some(host_path) = &volume.host_path {
        let path = PathBuf::from(&host_path.path);
        if matches!(host_path.type_.as_deref(), Some("DirectoryOrCreate")) {
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        return Ok((
            HostVolume {
                path,
                read_only: false,
            },
            None,
        ));
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let path = ctx.cluster_dir.join("pvc").join(ns).join(&claim.claim_name);
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).map_err(io_err(&path))?;
        return Ok((
            HostVolume {
                path,
                read_only: claim.read_only == Some(true),
            },
            None,
        ));
    }
    if let Some(cm) = &volume.config_map {
        keyed(&dir)?;
        if !tokens_only {
            let data =
                sources
                    .configmap_bytes(&cm.name)
                    .await
                    .map_err(|source| VolumeError::Api {
                        volume: name.into(),
                        source,
                    })?;
            let spec = Keyed {
                volume: name,
                kind: "configmap",
                name: &cm.name,
                optional: cm.optional,
            };
            write_keyed(
                &dir,
                &spec,
                data,
                cm.items.as_deref(),
                cm.default_mode,
                owner,
            )?;
        }
        return Ok((
            HostVolume {
                path: dir,
                read_only: true,
            },
            None,
        ));
    }
    if let Some(secret) = &volume.secret {
        keyed(&dir)?;
        if !tokens_only {
            let secret_name = secret.secret_name.clone().unwrap_or_default();
            let data =
                sources
                    .secret_bytes(&secret_name)
                    .await
                    .map_err(|source| VolumeError::Api {
                        volume: name.into(),
                        source,
                    })?;
            let spec = Keyed {
                volume: name,
                kind: "secret",
                name: &secret_name,
                optional: secret.optional,
            };
            write_keyed(
                &dir,
                &spec,
                data,
                secret.items.as_deref(),
                secret.default_mode,
                owner,
            )?;
        }
        return Ok((
            HostVolume {
                path: dir,
                read_only: true,
            },
            None,
        ));
    }
    if let Some(downward) = &volume.downward_api {
        keyed(&dir)?;
        if !tokens_only {
            write_downward(
                &dir,
                pod,
                downward.items.as_deref(),
                downward.default_mode,
                owner,
            )?;
        }
        return Ok((
            HostVolume {
                path: dir,
                read_only: true,
            },
            None,
        ));
    }
    if let Some(projected) = &volume.projected {
        keyed(&dir)?;
        let mode = projected.default_mode;
        let mut ttl: Option<Duration> = None;
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let (value, lifetime) = request_token(
                    ctx,
                    pod,
                    token.audience.as_deref(),
                    token.expiration_seconds,
                )
                .await
                .map_err(|source| VolumeError::Token {
                    volume: name.into(),
                    source,
                })?;
                write_file(
                    &dir.join(&token.path),
                    value.as_bytes(),
                    mode.unwrap_or(DEFAULT_FILE_MODE),
                    owner,
                )?;
                ttl = Some(ttl.map_or(lifetime, |t| t.min(lifetime)));
            }
            if tokens_only {
                continue;
            }
            if let Some(cm) = &source.config_map {
                let data =
                    sources
                        .configmap_bytes(&cm.name)
                        .await
                        .map_err(|source| VolumeError::Api {
                            volume: name.into(),
                            source,
                        })?;
                let spec = Keyed {
                    volume: name,
                    kind: "configmap",
                    name: &cm.name,
                    optional: cm.optional,
                };
                write_keyed(&dir, &spec, data, cm.items.as_deref(), mode, owner)?;
            }
            if let Some(secret) = &source.secret {
                let data = sources.secret_bytes(&secret.name).await.map_err(|source| {
                    VolumeError::Api {
                        volume: name.into(),
                        source,
                    }
                })?;
                let spec = Keyed {
                    volume: name,
                    kind: "secret",
                    name: &secret.name,
                    optional: secret.optional,
                };
                write_keyed(&dir, &spec, data, secret.items.as_deref(), mode, owner)?;
            }
            if let Some(downward) = &source.downward_api {
                write_downward(&dir, pod, downward.items.as_deref(), mode, owner)?;
            }
        }
        return Ok((
            HostVolume {
                path: dir,
                read_only: true,
            },
            ttl,
        ));
    }
    Err(VolumeError::Unsupported(name.to_string()))
}

/// Which object a keyed volume (or projection) reads.
struct Keyed<'a> {
    volume: &'a str,
    kind: &'static str,
    name: &'a str,
    optional: Option<bool>,
}

fn write_keyed(
    dir: &Path,
    spec: &Keyed<'_>,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    owner: Owner,
) -> Result<(), VolumeError> {
    let optional = spec.optional == Some(true);
    let Some(data) = data else {
        if optional {
            return Ok(());
        }
        return Err(VolumeError::SourceMissing {
            volume: spec.volume.into(),
            kind: spec.kind,
            name: spec.name.into(),
        });
    };
    let mode = default_mode.unwrap_or(DEFAULT_FILE_MODE);
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => write_file(
                        &dir.join(&item.path),
                        bytes,
                        item.mode.unwrap_or(mode),
                        owner,
                    )?,
                    None if optional => {}
                    None => {
                        return Err(VolumeError::KeyMissing {
                            volume: spec.volume.into(),
                            kind: spec.kind,
                            name: spec.name.into(),
                            key: item.key.clone(),
                        });
                    }
                }
            }
        }
        _ => {
            for (key, bytes) in &data {
                write_file(&dir.join(key), bytes, mode, owner)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: Option<i32>,
    owner: Owner,
) -> Result<(), VolumeError> {
    for item in items.into_iter().flatten() {
        let value = if let Some(field) = &item.field_ref {
            fields::pod_field(pod, &field.field_path).unwrap_or_default()
        } else if let Some(resource) = &item.resource_field_ref {
            let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
            let wanted = resource.container_name.as_deref();
            match containers
                .clone()
                .find(|c| Some(c.name.as_str()) == wanted)
                .or(containers.clone().next())
            {
                Some(container) => fields::resource_field(container, &resource.resource),
                None => String::new(),
            }
        } else {
            String::new()
        };
        let mode = item.mode.or(default_mode).unwrap_or(DEFAULT_FILE_MODE);
        write_file(&dir.join(&item.path), value.as_bytes(), mode, owner)?;
    }
    Ok(())
}

/// Writes a file beside and renames it over, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8], mode: i32, owner: Owner) -> Result<(), VolumeError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("..{file_name}.tmp"));
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    let mode = u32::try_from(mode).unwrap_or(DEFAULT_FILE_MODE as u32) & 0o7777;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    owner.apply(&tmp)?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Asks the TokenRequest API for a token bound to the pod; returns it and its lifetime.
async fn request_token(
    ctx: &Ctx,
    pod: &Pod,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
) -> Result<(String, Duration), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience
                .filter(|a| !a.is_empty())
                .map(|a| vec![a.to_string()]),
            expiration_seconds: Some(expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let response = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await?;
    let status = response.status.unwrap_or_default();
    let lifetime = status
        .expiration_timestamp
        .and_then(|t| {
            t.0.duration_since(k8s_openapi::jiff::Timestamp::now())
                .try_into()
                .ok()
        })
        .unwrap_or(Duration::from_secs(600));
    Ok((status.token.unwrap_or_default(), lifetime))
}
