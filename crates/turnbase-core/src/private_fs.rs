//! Files only this account may read. Turnbase's data folder holds the
//! database (sessions, sign-in codes in flight), mail and keys, so the
//! folders it makes are 0700 and the files it writes 0600, whatever the
//! umask; a folder or file found open to the group or others at start is
//! tightened, or named in a warning when this account cannot change it.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of the folders Turnbase makes.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files Turnbase writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents as 0700 folders, then tightens
/// `path` itself if it was already there and open to others.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    tighten(path);
    Ok(())
}

/// What [`tighten`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tightened {
    /// Nothing there, or already private.
    Unchanged,
    /// The mode was narrowed to 0700 or 0600.
    Narrowed { from: u32 },
    /// Open to others and could not be changed (a warning was logged).
    Refused { mode: u32 },
}

/// Takes the group's and others' access away from a folder (to 0700) or a
/// file (to 0600) that has any. When this account may not (someone else
/// owns it), a warning names the path and its mode; the start goes on, as
/// the operator may have shared it on purpose.
pub fn tighten(path: &Path) -> Tightened {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Tightened::Unchanged;
    };
    if meta.file_type().is_symlink() {
        return Tightened::Unchanged;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Tightened::Unchanged;
    }
    let wanted = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)) {
        Ok(()) => {
            tracing::info!(
                path = %path.display(),
                from = format!("{mode:04o}"),
                to = format!("{wanted:04o}"),
                "took other users' access away"
            );
            Tightened::Narrowed { from: mode }
        }
        Err(err) => {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                error = %err,
                "this is readable by other users of the machine and cannot be changed by this one; make it {:04o}",
                wanted
            );
            Tightened::Refused { mode }
        }
    }
}

/// Opens `path` for writing as a new or truncated 0600 file (an existing
/// file keeps its mode, so [`tighten`] it first if it may be open).
pub fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Writes `bytes` to a 0600 file at `path`, replacing what was there.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    tighten(path);
    let mut file = create_private_file(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates an empty 0600 file at `path` unless one is there; tightens an
/// existing one.
pub fn touch_private(path: &Path) -> io::Result<()> {
    if path.exists() {
        tighten(path);
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn scratch() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tb-private-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    #[test]
    fn folders_and_files_are_made_private_whatever_was_there() {
        let root = scratch();
        let dir = root.join("a/b");
        create_private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700, "parents made here too");

        let open = root.join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(tighten(&open), Tightened::Narrowed { from: 0o755 });
        assert_eq!(mode(&open), 0o700);
        assert_eq!(tighten(&open), Tightened::Unchanged);

        let file = dir.join("key");
        std::fs::write(&file, "x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&file, b"secret").expect("write");
        assert_eq!(
            mode(&file),
            0o600,
            "an open file is narrowed before it is written"
        );
        assert_eq!(std::fs::read(&file).expect("read"), b"secret");

        let new = dir.join("new");
        write_private(&new, b"y").expect("write");
        assert_eq!(mode(&new), 0o600);
        let touched = dir.join("db");
        touch_private(&touched).expect("touch");
        assert_eq!(mode(&touched), 0o600);
        assert_eq!(tighten(&root.join("missing")), Tightened::Unchanged);
        let _ = std::fs::remove_dir_all(&root);
    }
}
