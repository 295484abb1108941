//! Starting a container as a host process: mount plan, command resolution, user and spawn.
//!
//! Each container runs in its own session (`setsid`, so its process group can be signalled as
//! a whole), its own mount namespace (every volume bind-mounted at its `mountPath`, the image
//! directory at `/usr/local/bin`, a host file at its `terminationMessagePath`, the pod's
//! `/etc/hosts`) and its own UTS namespace (hostname = pod name). It then drops to the
//! `runAsUser`/`runAsGroup` of its security context. Everything else is the host's.

use std::{
    ffi::{CStr, CString, OsString},
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Component, Path, PathBuf},
    process::Stdio,
};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
    unistd::{Gid, Uid, chdir, setgid, setgroups, sethostname, setsid, setuid},
};
use tokio::process::{Child, Command};

use crate::{
    images::{IMAGE_BIN_MOUNT, Image},
    volumes::{PodLayout, Volumes},
};

const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// Why a container could not be started; reported as a `StartError` termination, exit 128.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("image {0:?} has no entrypoint known to the process node; set the container's command")]
    NoCommand(String),
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("volumeMount {0:?}: no such volume in the pod")]
    UnknownVolume(String),
    #[error("preparing mountpoint {path}: {source}")]
    Mountpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing image {image:?}: {source}")]
    Image {
        image: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting container process: {0}")]
    Spawn(#[source] std::io::Error),
}

/// One bind mount: a host path shown at a container path.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Translates a container path to the host path that will be visible there.
pub fn host_path_of(path: &Path, mounts: &[Mount]) -> PathBuf {
    mounts
        .iter()
        .rev()
        .filter_map(|m| path.strip_prefix(&m.target).ok().map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.target.components().count())
        .map(|(m, rest)| {
            if rest.as_os_str().is_empty() {
                m.source.clone()
            } else {
                m.source.join(rest)
            }
        })
        .unwrap_or_else(|| path.to_path_buf())
}

/// The container's mounts, parents before children, last one wins on the same path.
pub fn plan_mounts(
    container: &Container,
    volumes: &Volumes,
    layout: &PodLayout,
    image_dir: Option<&Path>,
) -> Result<Vec<Mount>, StartError> {
    let mut mounts = Vec::new();
    if let Some(dir) = image_dir {
        mounts.push(Mount {
            source: dir.to_path_buf(),
            target: IMAGE_BIN_MOUNT.into(),
            read_only: true,
        });
    }
    let mut volume_mounts: Vec<Mount> = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(&vm.name)
            .ok_or_else(|| StartError::UnknownVolume(vm.name.clone()))?;
        let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let path = volume.path.join(sub);
                if !path.exists() {
                    fs::create_dir_all(&path).map_err(|source| StartError::Mountpoint {
                        path: path.clone(),
                        source,
                    })?;
                }
                path
            }
            None => volume.path.clone(),
        };
        let read_only = vm.read_only == Some(true) || volume.read_only;
        volume_mounts.push(Mount {
            source,
            target: normalize(&vm.mount_path),
            read_only,
        });
    }
    volume_mounts.sort_by_key(|m| m.target.components().count());
    mounts.extend(volume_mounts);

    let termination = container
        .termination_message_path
        .as_deref()
        .unwrap_or(DEFAULT_TERMINATION_PATH);
    mounts.push(Mount {
        source: layout.termination(&container.name),
        target: normalize(termination),
        read_only: false,
    });
    mounts.push(Mount {
        source: layout.hosts(),
        target: "/etc/hosts".into(),
        read_only: true,
    });
    Ok(mounts)
}

fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in Path::new(path).components() {
        if let Component::Normal(part) = component {
            out.push(part);
        }
    }
    out
}

/// Creates missing mountpoints on the host (in the directory of an earlier mount when the
/// mountpoint lies inside one), a file for a file source and a directory otherwise.
pub fn prepare_mountpoints(mounts: &[Mount]) -> Result<(), StartError> {
    for (i, m) in mounts.iter().enumerate() {
        let host = host_path_of(&m.target, &mounts[..i]);
        if host.exists() {
            continue;
        }
        let err = |source| StartError::Mountpoint {
            path: host.clone(),
            source,
        };
        if m.source.is_dir() {
            fs::create_dir_all(&host).map_err(err)?;
        } else {
            if let Some(parent) = host.parent() {
                fs::create_dir_all(parent).map_err(err)?;
            }
            fs::File::create(&host).map_err(err)?;
        }
    }
    Ok(())
}

/// The argv a container runs, with Kubernetes semantics: `command` replaces the image's
/// entrypoint, `args` its default arguments; `argv[0]` resolved to a path inside the container.
pub fn resolve_argv(
    image: &Image,
    container: &Container,
    env: &[(String, String)],
    mounts: &[Mount],
) -> Result<Vec<String>, StartError> {
    let lookup: std::collections::HashMap<&str, &str> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand = |v: &Vec<String>| {
        v.iter()
            .map(|s| crate::env::expand(s, &lookup))
            .collect::<Vec<_>>()
    };
    let command = container
        .command
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(expand);
    let args = container
        .args
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(expand);
    let mut argv = match (command, args) {
        (Some(mut command), args) => {
            command.extend(args.unwrap_or_default());
            command
        }
        (None, Some(args)) => args,
        (None, None) => image
            .default_command()
            .ok_or_else(|| StartError::NoCommand(container.image.clone().unwrap_or_default()))?,
    };
    let Some(first) = argv.first().cloned() else {
        return Err(StartError::NoCommand(
            container.image.clone().unwrap_or_default(),
        ));
    };
    let path = lookup
        .get("PATH")
        .copied()
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    argv[0] = resolve_program(&first, path, mounts)?;
    Ok(argv)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn resolve_program(program: &str, path_var: &str, mounts: &[Mount]) -> Result<String, StartError> {
    if program.starts_with('/') {
        if host_path_of(Path::new(program), mounts).exists() {
            return Ok(program.to_string());
        }
    } else if program.contains('/') {
        // Relative to the working directory, which only exists once mounted: let exec decide.
        return Ok(program.to_string());
    }
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = Path::new(dir).join(&name);
        if is_executable(&host_path_of(&candidate, mounts)) {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(StartError::NotFound(program.to_string()))
}

/// The user a container runs as: container securityContext over the pod's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Vec<u32>,
}

impl Identity {
    pub fn of(pod: &Pod, container: &Container) -> Self {
        let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let sc = container.security_context.as_ref();
        let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let uid = to_u32(
            sc.and_then(|s| s.run_as_user)
                .or(pod_sc.and_then(|s| s.run_as_user)),
        );
        let gid = to_u32(
            sc.and_then(|s| s.run_as_group)
                .or(pod_sc.and_then(|s| s.run_as_group)),
        );
        let mut groups: Vec<u32> = pod_sc
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| u32::try_from(g).ok())
            .collect();
        groups.extend(to_u32(pod_sc.and_then(|s| s.fs_group)));
        Identity {
            uid,
            gid: gid.or(uid.map(|_| 0)),
            groups,
        }
    }
}

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub hostname: String,
    pub identity: Identity,
    pub log: PathBuf,
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Spawns the container process; its pid is also its process group id.
pub fn spawn(launch: &Launch) -> Result<Child, StartError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(StartError::Spawn)?;
    let log_err = log.try_clone().map_err(StartError::Spawn)?;

    // Everything the child needs is allocated here: after fork only system calls run.
    let mut binds: Vec<(CString, CString, bool)> = Vec::new();
    for m in &launch.mounts {
        binds.push((
            cstring(m.source.as_os_str().as_bytes()).map_err(StartError::Spawn)?,
            cstring(m.target.as_os_str().as_bytes()).map_err(StartError::Spawn)?,
            m.read_only,
        ));
    }
    let workdir = cstring(launch.working_dir.as_deref().unwrap_or("/").as_bytes())
        .map_err(StartError::Spawn)?;
    let hostname = OsString::from(&launch.hostname);
    let identity = launch.identity.clone();
    let groups: Vec<Gid> = identity
        .gid
        .into_iter()
        .chain(identity.groups.iter().copied())
        .map(Gid::from_raw)
        .collect();

    let mut cmd = Command::new(&launch.argv[0]);
    cmd.args(&launch.argv[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(false);
    // SAFETY: the closure only makes system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            setsid()?;
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)?;
            let none: Option<&CStr> = None;
            mount(
                none,
                c"/",
                none,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                none,
            )?;
            for (source, target, read_only) in &binds {
                mount(
                    Some(source.as_c_str()),
                    target.as_c_str(),
                    none,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    none,
                )?;
                if *read_only {
                    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                    mount(none, target.as_c_str(), none, flags, none)?;
                }
            }
            sethostname(&hostname)?;
            if let Some(gid) = identity.gid {
                setgroups(&groups)?;
                setgid(Gid::from_raw(gid))?;
            }
            if let Some(uid) = identity.uid {
                setuid(Uid::from_raw(uid))?;
            }
            chdir(workdir.as_c_str())?;
            Ok(())
        });
    }
    cmd.spawn().map_err(StartError::Spawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(source: &str, target: &str) -> Mount {
        Mount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    #[test]
    fn host_path_of_should_use_the_deepest_mount() {
        let mounts = vec![m("/h/work", "/work"), m("/h/cfg", "/work/config")];
        assert_eq!(
            host_path_of(Path::new("/work/config/a.json"), &mounts),
            PathBuf::from("/h/cfg/a.json")
        );
        assert_eq!(
            host_path_of(Path::new("/work/x"), &mounts),
            PathBuf::from("/h/work/x")
        );
        assert_eq!(
            host_path_of(Path::new("/work"), &mounts),
            PathBuf::from("/h/work")
        );
        assert_eq!(
            host_path_of(Path::new("/etc/passwd"), &mounts),
            PathBuf::from("/etc/passwd")
        );
    }

    #[test]
    fn command_should_replace_the_entrypoint_and_keep_args() {
        let image = Image::parse("python:3.12-slim");
        let container = Container {
            name: "c".into(),
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["echo $(GREETING)".into()]),
            ..Default::default()
        };
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let argv = resolve_argv(&image, &container, &env, &[]).expect("resolves");
        assert_eq!(argv, vec!["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn a_bare_name_should_be_found_on_the_path() {
        let image = Image::parse("debian");
        let container = Container {
            name: "c".into(),
            command: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let env = vec![("PATH".to_string(), "/nonexistent:/bin".to_string())];
        let argv = resolve_argv(&image, &container, &env, &[]).expect("resolves");
        assert_eq!(argv, vec!["/bin/sh"]);
    }

    #[test]
    fn an_unknown_image_without_command_should_not_start() {
        let image = Image::parse("example.com/scanner:1");
        let container = Container {
            name: "c".into(),
            image: Some("example.com/scanner:1".into()),
            ..Default::default()
        };
        assert!(matches!(
            resolve_argv(&image, &container, &[], &[]),
            Err(StartError::NoCommand(_))
        ));
    }

    #[test]
    fn a_missing_program_should_not_start() {
        let image = Image::parse("debian");
        let container = Container {
            name: "c".into(),
            command: Some(vec!["no-such-tool-xyz".into()]),
            ..Default::default()
        };
        assert!(matches!(
            resolve_argv(&image, &container, &[], &[]),
            Err(StartError::NotFound(_))
        ));
    }
}
