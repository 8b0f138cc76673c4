//! Chunked authenticated encryption of large files: a clinic's backups.
//!
//! Each clinic has one **backup key** ([`BackupKey`], 32 random bytes), stored
//! wrapped by the master key (like its data keys, purpose [`backup_key_purpose`]).
//! A backup file is
//!
//! ```text
//! header:  "MPBACKUP" ‖ format (1) ‖ clinic id (16) ‖ nonce prefix (7)
//! frames:  last (1) ‖ length (4, BE) ‖ AES-256-GCM(chunk)   … one per chunk
//! ```
//!
//! Chunk `i`'s nonce is `prefix ‖ i (4, BE) ‖ last (1)` and its associated data the
//! header, so frames cannot be reordered, dropped, moved to another file or clinic,
//! or cut off at the end (a stream without its `last` frame is refused). Deleting
//! the backup key makes every copy of every backup of the clinic unreadable.

use crate::crypto::{CryptoError, KeyRing};
use crate::ids::ClinicId;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

/// The first bytes of every sealed backup.
pub const MAGIC: &[u8; 8] = b"MPBACKUP";
const FORMAT_V1: u8 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + 16 + 7;
/// Length of a frame's head (last flag and ciphertext length).
pub const FRAME_HEAD_LEN: usize = 5;
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 1 << 20;
/// The largest ciphertext a frame may announce (a chunk and its tag).
const MAX_FRAME: usize = CHUNK + 16;

/// The purpose label a clinic's wrapped backup key is bound to.
pub fn backup_key_purpose(clinic: ClinicId) -> String {
    format!("clinic-backup-key:{clinic}")
}

/// A clinic's backup key, in the clear only in memory (wiped when dropped).
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct BackupKey([u8; 32]);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

impl BackupKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// The key wrapped by the current master key, for storage.
    pub fn wrap(&self, ring: &KeyRing, clinic: ClinicId) -> Vec<u8> {
        ring.seal_secret(&backup_key_purpose(clinic), &self.0)
    }

    /// The key from its stored, wrapped form.
    pub fn unwrap(ring: &KeyRing, clinic: ClinicId, wrapped: &[u8]) -> Result<Self, CryptoError> {
        let plain =
            zeroize::Zeroizing::new(ring.open_secret(&backup_key_purpose(clinic), wrapped)?);
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(Self(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

fn nonce(prefix: &[u8; 7], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seals a stream chunk by chunk: [`Sealer::header`] first, then one
/// [`Sealer::frame`] per chunk of at most [`CHUNK`] bytes, the last one marked.
pub struct Sealer {
    cipher: Aes256Gcm,
    header: Vec<u8>,
    prefix: [u8; 7],
    counter: u32,
    done: bool,
}

impl Sealer {
    pub fn new(key: &BackupKey, clinic: ClinicId) -> Self {
        let mut prefix = [0u8; 7];
        rand::rng().fill_bytes(&mut prefix);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(FORMAT_V1);
        header.extend_from_slice(clinic.as_uuid().as_bytes());
        header.extend_from_slice(&prefix);
        Self {
            cipher: key.cipher(),
            header,
            prefix,
            counter: 0,
            done: false,
        }
    }

    /// The bytes the file starts with.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The frame of the next chunk (at most [`CHUNK`] bytes; `last` for the final
    /// one, which may be empty). Refused after the last frame, for a chunk too
    /// long, or past 2³² chunks.
    pub fn frame(&mut self, chunk: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        if self.done || chunk.len() > CHUNK {
            return Err(CryptoError::Malformed);
        }
        let n = nonce(&self.prefix, self.counter, last);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: chunk,
                    aad: &self.header,
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::Malformed)?;
        self.done = last;
        let len = u32::try_from(ct.len()).map_err(|_| CryptoError::Malformed)?;
        let mut out = Vec::with_capacity(FRAME_HEAD_LEN + ct.len());
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&ct);
        Ok(out)
    }
}

/// Opens a stream sealed by [`Sealer`]: the header, then each frame in order.
pub struct Opener {
    cipher: Aes256Gcm,
    header: Vec<u8>,
    prefix: [u8; 7],
    counter: u32,
    done: bool,
}

impl Opener {
    /// Checks the header: the format, and that it is a backup of `clinic`.
    pub fn new(key: &BackupKey, clinic: ClinicId, header: &[u8]) -> Result<Self, CryptoError> {
        if header.len() != HEADER_LEN
            || &header[..MAGIC.len()] != MAGIC
            || header[MAGIC.len()] != FORMAT_V1
        {
            return Err(CryptoError::Malformed);
        }
        let start = MAGIC.len() + 1;
        if &header[start..start + 16] != clinic.as_uuid().as_bytes() {
            return Err(CryptoError::Integrity);
        }
        let mut prefix = [0u8; 7];
        prefix.copy_from_slice(&header[start + 16..]);
        Ok(Self {
            cipher: key.cipher(),
            header: header.to_vec(),
            prefix,
            counter: 0,
            done: false,
        })
    }

    /// Parses a frame's head: (last, ciphertext length).
    pub fn frame_head(head: &[u8; FRAME_HEAD_LEN]) -> Result<(bool, usize), CryptoError> {
        let last = match head[0] {
            0 => false,
            1 => true,
            _ => return Err(CryptoError::Malformed),
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(16..=MAX_FRAME).contains(&len) {
            return Err(CryptoError::Malformed);
        }
        Ok((last, len))
    }

    /// The plaintext of the next frame's ciphertext.
    pub fn open(&mut self, last: bool, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.done {
            return Err(CryptoError::Malformed);
        }
        let n = nonce(&self.prefix, self.counter, last);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: ciphertext,
                    aad: &self.header,
                },
            )
            .map_err(|_| CryptoError::Integrity)?;
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::Malformed)?;
        self.done = last;
        Ok(plain)
    }

    /// Whether the last frame was opened (a stream that ends before is cut short).
    pub fn finished(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn seal_all(key: &BackupKey, clinic: ClinicId, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = Sealer::new(key, clinic);
        let mut out = s.header().to_vec();
        let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        for (i, c) in chunks.iter().enumerate() {
            out.extend(s.frame(c, i + 1 == chunks.len()).unwrap());
        }
        if chunks.is_empty() {
            out.extend(s.frame(&[], true).unwrap());
        }
        out
    }

    fn open_all(key: &BackupKey, clinic: ClinicId, file: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut o = Opener::new(
            key,
            clinic,
            file.get(..HEADER_LEN).ok_or(CryptoError::Malformed)?,
        )?;
        let mut rest = &file[HEADER_LEN..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let head: [u8; FRAME_HEAD_LEN] = rest
                .get(..FRAME_HEAD_LEN)
                .ok_or(CryptoError::Malformed)?
                .try_into()
                .unwrap();
            let (last, len) = Opener::frame_head(&head)?;
            let ct = rest
                .get(FRAME_HEAD_LEN..FRAME_HEAD_LEN + len)
                .ok_or(CryptoError::Malformed)?;
            out.extend(o.open(last, ct)?);
            rest = &rest[FRAME_HEAD_LEN + len..];
        }
        if !o.finished() {
            return Err(CryptoError::Malformed);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let key = BackupKey::generate();
        let clinic = ClinicId::generate();
        let data: Vec<u8> = b"Curie Marie ".repeat(1000);
        let file = seal_all(&key, clinic, &data, 1000);
        assert!(!file.windows(5).any(|w| w == b"Curie"));
        assert_eq!(open_all(&key, clinic, &file).unwrap(), data);
        assert_eq!(
            open_all(&key, clinic, &seal_all(&key, clinic, &[], 10)).unwrap(),
            b""
        );
    }

    #[test]
    fn another_key_clinic_order_or_a_cut_is_refused() {
        let key = BackupKey::generate();
        let clinic = ClinicId::generate();
        let data = vec![7u8; 100];
        let file = seal_all(&key, clinic, &data, 30);
        assert_eq!(
            open_all(&BackupKey::generate(), clinic, &file),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            open_all(&key, ClinicId::generate(), &file),
            Err(CryptoError::Integrity)
        );
        // Cut after the first frame: no last frame.
        let first_frame = HEADER_LEN + FRAME_HEAD_LEN + 30 + 16;
        assert!(open_all(&key, clinic, &file[..first_frame]).is_err());
        // Two frames swapped.
        let mut swapped = file[..HEADER_LEN].to_vec();
        let frame = FRAME_HEAD_LEN + 30 + 16;
        swapped.extend_from_slice(&file[HEADER_LEN + frame..HEADER_LEN + 2 * frame]);
        swapped.extend_from_slice(&file[HEADER_LEN..HEADER_LEN + frame]);
        swapped.extend_from_slice(&file[HEADER_LEN + 2 * frame..]);
        assert_eq!(
            open_all(&key, clinic, &swapped),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn the_key_is_wrapped_for_its_clinic() {
        let ring = KeyRing::new(1, &[9u8; 32]);
        let clinic = ClinicId::generate();
        let key = BackupKey::generate();
        let wrapped = key.wrap(&ring, clinic);
        let back = BackupKey::unwrap(&ring, clinic, &wrapped).unwrap();
        assert_eq!(back.0, key.0);
        assert!(BackupKey::unwrap(&ring, ClinicId::generate(), &wrapped).is_err());
    }
}
