//! Writing the state directory: every file the daemon keeps there (quarantines, learned
//! flows, unknown devices, port pins, the last-known-good policy) is replaced atomically,
//! so a crash or a power cut mid-write leaves the old file or the new one, never half of
//! either.

use std::{fs::File, io::Write, path::Path};

/// Writes `body` to `path` through a temporary file in the same directory: written,
/// fsynced, renamed over `path`, and the directory fsynced so the rename itself survives a
/// power cut. Errors name the file that failed.
pub(super) fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let named = |at: &Path| {
        let at = at.to_path_buf();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", at.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(named(dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp).map_err(named(&tmp))?;
        f.write_all(body).map_err(named(&tmp))?;
        f.sync_all().map_err(named(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(named(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(named(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("state.json");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the directory should be: fails for root too.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").expect("blocker");
        let err = write_atomic(&blocker.join("state.json"), b"x").expect_err("refused");
        assert!(err.to_string().contains("blocker"), "{err}");
    }
}
