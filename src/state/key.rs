//! The key that encrypts tokens at rest, and its file.

use super::{Result, StateError};
use base64::Engine as _;
use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A 256-bit key. Its Debug output never shows the bytes.
#[derive(Clone)]
pub struct StateKey([u8; 32]);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

impl StateKey {
    pub fn from_bytes(bytes: [u8; 32]) -> StateKey {
        StateKey(bytes)
    }

    pub fn random() -> StateKey {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        StateKey(b)
    }

    /// Reads 64 hex characters or the base64 of 32 bytes. The error never echoes the text.
    pub fn parse(text: &str) -> Result<StateKey> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
                .ok()
        };
        match bytes.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()) {
            Some(b) => Ok(StateKey(b)),
            None => Err(StateError::InvalidKey(format!(
                "the state key must be 64 hex characters or the base64 of 32 bytes \
                 (got {} characters)",
                t.chars().count()
            ))),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// `<state file>.key`, e.g. `.ferry/state.db.key`.
pub fn key_file_path(state_path: &Path) -> PathBuf {
    let mut s = state_path.as_os_str().to_os_string();
    s.push(".key");
    PathBuf::from(s)
}

/// Reads the key file, or creates it with a fresh random key, readable only by its owner.
/// A key file that group or others can read is refused: whoever reads it reads the tokens.
pub fn load_or_create_key_file(path: &Path) -> Result<StateKey> {
    let io = |context: &'static str| {
        let path = path.to_path_buf();
        move |source| StateError::Io {
            context,
            path,
            source,
        }
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            check_permissions(path, &meta)?;
            let text = std::fs::read_to_string(path).map_err(io("cannot read the key file"))?;
            StateKey::parse(&text).map_err(|_| {
                StateError::InvalidKey(format!(
                    "the key file {} does not hold a valid key (64 hex characters)",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io("cannot create the directory of"))?;
            }
            let key = StateKey::random();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(io("cannot create the key file"))?;
            writeln!(f, "{}", hex::encode(key.bytes())).map_err(io("cannot write the key file"))?;
            f.sync_all().map_err(io("cannot write the key file"))?;
            Ok(key)
        }
        Err(e) => Err(io("cannot read the key file")(e)),
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::KeyFileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}
