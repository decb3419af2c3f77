//! Tokens (access tokens, rotating refresh tokens) encrypted at rest with
//! ChaCha20-Poly1305: a fresh random nonce per write, stored beside the ciphertext, and the
//! token's name as associated data, so a ciphertext copied to another name does not decrypt.

use super::{Context, Result, SqliteState, StateError, StateKey, fmt_ts, opt_ts_col};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};

/// A decrypted token. Debug output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub value: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

pub(super) const KEY_CHECK_AAD: &[u8] = b"ferry key check";
pub(super) const KEY_CHECK_TEXT: &[u8] = b"ferry state key v1";

fn cipher(key: &StateKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(key.bytes()))
}

pub(super) fn seal(key: &StateKey, aad: &[u8], plain: &[u8]) -> Result<([u8; 12], Vec<u8>)> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher(key)
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StateError::Corrupt("encryption failed".into()))?;
    Ok((nonce, ct))
}

pub(super) fn open(key: &StateKey, aad: &[u8], nonce: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    if nonce.len() != 12 {
        return None;
    }
    cipher(key)
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// Returns false when the file was set up with a different key. A new file records a check
/// value encrypted with this key.
pub(super) fn verify_or_record_key_check(conn: &mut Connection, key: &StateKey) -> Result<bool> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .context("begin the key check")?;
    let row: Option<(Vec<u8>, Vec<u8>)> = tx
        .query_row(
            "SELECT nonce, ciphertext FROM key_check WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .context("read the key check")?;
    let ok = match row {
        Some((nonce, ct)) => {
            open(key, KEY_CHECK_AAD, &nonce, &ct).as_deref() == Some(KEY_CHECK_TEXT)
        }
        None => {
            let (nonce, ct) = seal(key, KEY_CHECK_AAD, KEY_CHECK_TEXT)?;
            tx.execute(
                "INSERT INTO key_check (id, nonce, ciphertext) VALUES (1, ?1, ?2)",
                params![nonce.as_slice(), ct],
            )
            .context("record the key check")?;
            true
        }
    };
    tx.commit().context("commit the key check")?;
    Ok(ok)
}

impl SqliteState {
    /// Stores (or replaces) a token, encrypted, in one transaction.
    pub fn token_put(
        &self,
        name: &str,
        value: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let (nonce, ct) = seal(self.key(), name.as_bytes(), value.as_bytes())?;
        let now = fmt_ts(self.now());
        self.write("store a token", |tx| {
            tx.execute(
                "INSERT INTO tokens (name, nonce, ciphertext, expires_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce,
                   ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,
                   updated_at = excluded.updated_at",
                params![name, nonce.as_slice(), ct, expires_at.map(fmt_ts), now],
            )
            .context(format!("store the token `{name}`"))?;
            Ok(())
        })
    }

    /// Reads and decrypts a token. A token that does not decrypt (another key, or a
    /// damaged row) is an error, never garbage.
    pub fn token_get(&self, name: &str) -> Result<Option<StoredToken>> {
        let row = {
            let conn = self.conn();
            conn.query_row(
                "SELECT nonce, ciphertext, expires_at FROM tokens WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        opt_ts_col(r, 2)?,
                    ))
                },
            )
            .optional()
            .context(format!("read the token `{name}`"))?
        };
        let Some((nonce, ct, expires_at)) = row else {
            return Ok(None);
        };
        let plain =
            open(self.key(), name.as_bytes(), &nonce, &ct).ok_or_else(|| StateError::Decrypt {
                name: name.to_string(),
            })?;
        let value = String::from_utf8(plain).map_err(|_| StateError::Decrypt {
            name: name.to_string(),
        })?;
        Ok(Some(StoredToken { value, expires_at }))
    }

    /// Forgets a token (e.g. after the admin revokes it). Returns whether one existed.
    pub fn token_delete(&self, name: &str) -> Result<bool> {
        self.write("delete a token", |tx| {
            let n = tx
                .execute("DELETE FROM tokens WHERE name = ?1", [name])
                .context(format!("delete the token `{name}`"))?;
            Ok(n > 0)
        })
    }
}
