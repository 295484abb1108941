//! The image table: which host programs stand in for which container image.
//!
//! The process node pulls no images. A known image family is materialised as a small
//! directory of symlinks (or copies, for the vigil images) that is bind-mounted read-only at
//! `/usr/local/bin` inside the container, where the real images keep their programs too. A
//! bare `argv[0]` and the programs a step starts later by `PATH` both find it there.
//!
//! - `python*`: `python`, `python3`, `python3.X` → `/usr/bin/python3`; runs `python3`.
//! - `node*`: `node`, `nodejs` → `/usr/bin/node`; runs `node`.
//! - `bash*`, `debian*`, `ubuntu*`: `sh`, `bash`; run `bash`.
//! - `busybox*`, `alpine*`: `sh`, `bash`; run `sh`.
//! - `vigil-*` (`vigil-operator`, `vigil-mock-services`): copies of every executable in
//!   `VIGIL_NODE_IMAGE_BIN`, each also as `vigil-<name>`; run `/usr/local/bin/<basename>`.
//!
//! Any other image runs with the host's file system as it is and has no default command.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Where a family's program directory is mounted inside the container.
pub const IMAGE_BIN_MOUNT: &str = "/usr/local/bin";

/// An image family of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Python,
    Node,
    Bash,
    Busybox,
    Debian,
    /// An image built from this repository; its programs come from `VIGIL_NODE_IMAGE_BIN`.
    Vigil,
}

/// What the table knows about one image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub family: Option<Family>,
    /// Repository basename without registry, path, tag or digest (`python` for
    /// `docker.io/library/python:3.12-slim`).
    pub basename: String,
    pub tag: Option<String>,
}

impl Image {
    /// Parses an image reference and looks its family up in the table.
    pub fn parse(reference: &str) -> Self {
        let without_digest = reference.split('@').next().unwrap_or(reference);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let (basename, tag) = match last.split_once(':') {
            Some((name, tag)) => (name.to_string(), Some(tag.to_string())),
            None => (last.to_string(), None),
        };
        let family = family_of(&basename);
        Image {
            family,
            basename,
            tag,
        }
    }

    /// The image's default command (`ENTRYPOINT` + `CMD` of the real image, simplified).
    pub fn default_command(&self) -> Option<Vec<String>> {
        let cmd = match self.family? {
            Family::Python => "python3".to_string(),
            Family::Node => "node".to_string(),
            Family::Bash | Family::Debian => "bash".to_string(),
            Family::Busybox => "sh".to_string(),
            Family::Vigil => format!("{IMAGE_BIN_MOUNT}/{}", self.basename),
        };
        Some(vec![cmd])
    }

    /// Host programs linked into the family's directory, as (name in container, host target).
    fn links(&self) -> Vec<(String, &'static str)> {
        let shells = || {
            vec![
                ("sh".to_string(), "/bin/sh"),
                ("bash".to_string(), "/bin/bash"),
            ]
        };
        match self.family {
            Some(Family::Python) => {
                let mut links = vec![
                    ("python".to_string(), "/usr/bin/python3"),
                    ("python3".to_string(), "/usr/bin/python3"),
                ];
                if let Some(minor) = self.tag.as_deref().and_then(python_minor) {
                    links.push((format!("python{minor}"), "/usr/bin/python3"));
                }
                links.extend(shells());
                links
            }
            Some(Family::Node) => {
                let mut links = vec![
                    ("node".to_string(), "/usr/bin/node"),
                    ("nodejs".to_string(), "/usr/bin/node"),
                ];
                links.extend(shells());
                links
            }
            Some(Family::Bash | Family::Busybox | Family::Debian) => shells(),
            Some(Family::Vigil) | None => Vec::new(),
        }
    }
}

fn family_of(basename: &str) -> Option<Family> {
    let table: [(&str, Family); 8] = [
        ("vigil-", Family::Vigil),
        ("python", Family::Python),
        ("node", Family::Node),
        ("bash", Family::Bash),
        ("busybox", Family::Busybox),
        ("alpine", Family::Busybox),
        ("debian", Family::Debian),
        ("ubuntu", Family::Debian),
    ];
    table
        .iter()
        .find(|(prefix, _)| basename.starts_with(prefix))
        .map(|(_, family)| *family)
}

/// `3.12` from tags like `3.12-slim` or `3.12.4-bookworm`.
fn python_minor(tag: &str) -> Option<String> {
    let mut parts = tag.split(['.', '-']);
    let major = parts.next()?;
    let minor = parts.next()?;
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (numeric(major) && numeric(minor)).then(|| format!("{major}.{minor}"))
}

/// Materialises image directories under the cluster directory.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    vigil_bin: PathBuf,
    /// One preparation at a time: pods starting together share the directories.
    busy: std::sync::Mutex<()>,
}

impl ImageStore {
    pub fn new(root: PathBuf, vigil_bin: PathBuf) -> Self {
        ImageStore {
            root,
            vigil_bin,
            busy: std::sync::Mutex::new(()),
        }
    }

    /// The host directory to mount at [`IMAGE_BIN_MOUNT`] for this image, if it has a family.
    ///
    /// For vigil images the executables of `VIGIL_NODE_IMAGE_BIN` are copied (when changed)
    /// into a world-readable directory, because the build directory usually is not.
    pub fn prepare(&self, image: &Image) -> std::io::Result<Option<PathBuf>> {
        let Some(family) = image.family else {
            return Ok(None);
        };
        let _busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = match family {
            Family::Vigil => self.root.join("vigil").join("bin"),
            _ => self.root.join(format!(
                "{family:?}-{}",
                image.tag.as_deref().unwrap_or("latest")
            )),
        };
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        if family == Family::Vigil {
            sync_executables(&self.vigil_bin, &dir)?;
        }
        for (name, target) in image.links() {
            let link = dir.join(&name);
            if fs::read_link(&link).ok().as_deref() != Some(Path::new(target)) {
                let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                let _ = fs::remove_file(&tmp);
                symlink(target, &tmp)?;
                fs::rename(&tmp, &link)?;
            }
        }
        Ok(Some(dir))
    }
}

/// Copies regular executable files of `from` into `to` when their size or mtime differ.
fn sync_executables(from: &Path, to: &Path) -> std::io::Result<()> {
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let dest = to.join(entry.file_name());
        let stamp = |m: &fs::Metadata| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        if fs::metadata(&dest)
            .map(|m| stamp(&m) == stamp(&meta))
            .unwrap_or(false)
        {
            continue;
        }
        // Copy beside and rename: a running copy keeps its inode, no "text file busy".
        let tmp = to.join(format!(
            ".{}.{}",
            entry.file_name().to_string_lossy(),
            std::process::id()
        ));
        fs::copy(entry.path(), &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        let file = fs::File::options().write(true).open(&tmp)?;
        file.set_modified(meta.modified()?)?;
        drop(file);
        fs::rename(&tmp, &dest)?;
    }
    // `vigil-mock-services` runs the `mock-services` binary: every program is also reachable
    // under a `vigil-` name, so an image's default command finds it.
    for entry in fs::read_dir(to)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with("vigil-") {
            continue;
        }
        let alias = to.join(format!("vigil-{name}"));
        if fs::symlink_metadata(&alias).is_err() {
            symlink(&name, &alias)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_slim_image_should_map_to_the_python_family_with_its_minor_version() {
        let image = Image::parse("docker.io/library/python:3.12-slim");
        assert_eq!(image.family, Some(Family::Python));
        assert_eq!(image.basename, "python");
        assert!(image.links().iter().any(|(name, _)| name == "python3.12"));
        assert_eq!(image.default_command(), Some(vec!["python3".to_string()]));
    }

    #[test]
    fn vigil_images_should_default_to_their_own_binary() {
        let image = Image::parse("ghcr.io/vigil/vigil-operator:dev@sha256:abc");
        assert_eq!(image.family, Some(Family::Vigil));
        assert_eq!(
            image.default_command(),
            Some(vec!["/usr/local/bin/vigil-operator".to_string()])
        );
    }

    #[test]
    fn unknown_images_should_have_no_default_command() {
        let image = Image::parse("registry.example.com/team/scanner:1.0");
        assert_eq!(image.family, None);
        assert_eq!(image.default_command(), None);
    }

    #[test]
    fn node_and_alpine_should_map_to_their_families() {
        assert_eq!(Image::parse("node:22-alpine").family, Some(Family::Node));
        assert_eq!(Image::parse("alpine").family, Some(Family::Busybox));
        assert_eq!(Image::parse("ubuntu:24.04").family, Some(Family::Debian));
    }
}
