//! Snapshots: every live session written to a file, and read back into a store, so that
//! sessions outlive a reboot or a change of the segment's format. The file's format is its
//! own, independent of the segment's (little-endian, versioned, a CRC per record):
//!
//! ```text
//! Header (32 bytes):
//!   0   magic       [u8; 8]  b"CSSSNAP\0"
//!   8   version     u32      SNAPSHOT_VERSION
//!   12  reserved    u32      0
//!   16  written_ms  u64      unix milliseconds when the writing began
//!   24  header_crc  u32      CRC-32 of bytes [0, 24)
//!   28  reserved    u32      0
//! Then one record per session:
//!   0   key_len     u32      1 to MAX_KEY_LEN
//!   4   value_len   u32
//!   8   expires_ms  u64      unix milliseconds
//!   16  key, then value
//!   ..  crc         u32      CRC-32 of the 16 bytes above, the key and the value
//! Then the end:
//!   0   zero        u32      0 (no key is empty)
//!   4   zero        u32      0
//!   8   count       u64      records written
//!   16  crc         u32      CRC-32 of these 16 bytes
//! ```
//!
//! A snapshot is written to `<path>.<pid>.tmp` (created anew, mode 0600), synced, and renamed
//! over `<path>`, and the directory synced: a process killed while writing leaves the previous
//! snapshot whole (and its temporary file, which the next writer removes). Reading refuses a file that is not the user's alone (another owner, or
//! any group or other permission bit), as `attach` does a segment.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::clock::now_ms;
use crate::error::{SnapshotError, StoreError};
use crate::format::layout::MAX_KEY_LEN;
use crate::lock::fork_gate;
use crate::segment::effective_uid;

use super::{ClusterStore, Expiry};

const MAGIC: [u8; 8] = *b"CSSSNAP\0";
/// Version of the snapshot file format above.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
/// Bytes written or read at a time: large sequential writes and reads.
const BUFFER: usize = 1 << 20;

/// What a snapshot wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Live sessions written.
    pub sessions: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// What a restore read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Sessions stored.
    pub sessions: u64,
    /// Sessions skipped because they had expired.
    pub expired: u64,
    /// Sessions that did not fit this store (over its `max_value_size`, or no room).
    pub dropped: u64,
}

fn io_error<'p>(
    path: &'p Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> SnapshotError + 'p {
    move |source| SnapshotError::Io { path: path.to_owned(), action, source }
}

/// `<path>.<pid>.tmp`: where process `pid` writes a snapshot before it takes `path`'s place.
/// One per process, so that two writers of one path (the masters of a handover) never write
/// into, or rename, each other's.
fn temporary(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.tmp"));
    PathBuf::from(name)
}

/// Removes the temporary files that writers of `path` killed while writing left behind:
/// those of processes no longer running. Best effort: an unreadable directory is no error.
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{}.", file.to_string_lossy());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".tmp"));
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !crate::segment::running(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A record's or the end's CRC: of its 16 fixed bytes, then the rest.
fn crc(fixed: &[u8; 16], rest: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fixed);
    for part in rest {
        hasher.update(part);
    }
    hasher.finalize()
}

fn fixed(a: u32, b: u32, c: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.to_le_bytes());
    out[4..8].copy_from_slice(&b.to_le_bytes());
    out[8..].copy_from_slice(&c.to_le_bytes());
    out
}

impl ClusterStore {
    /// Writes every live session, with its expiry, to the file `path`, replacing it as one
    /// step (a temporary file, synced, then renamed; mode 0600): a process killed meanwhile
    /// leaves the previous snapshot as it was. Shards are read one at a time, each a
    /// consistent snapshot (the whole is not one instant); no shard lock is held while the
    /// file is written. [`Config::snapshot`](crate::Config::snapshot) has the master write
    /// one when it stops, and periodically.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the file and the step that failed; a store error
    /// ([`SnapshotError::Store`]) reading a shard.
    ///
    /// # Examples
    /// ```
    /// # use cluster_session_store::{ClusterStore, Config, Expiry};
    /// # let dir = std::env::temp_dir().join(format!("css-doc-snap-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let file = dir.join("sessions.snapshot");
    /// let master = ClusterStore::setup(Config::new().name("doc-snap").memory_size(1 << 20).shards(2))?;
    /// master.set_raw("sid", b"logged in", Expiry::Default)?;
    /// assert_eq!(master.snapshot(&file)?.sessions, 1);
    /// master.clear()?;
    /// assert_eq!(master.restore(&file)?.sessions, 1);
    /// assert_eq!(master.get_raw("sid")?.as_deref(), Some(&b"logged in"[..]));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self, path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        self.write_snapshot(path.as_ref(), false)
    }

    /// [`snapshot`](Self::snapshot); with `gate`, each shard is read under the fork gate (the
    /// master's coordinator, which must never be caught by a fork in the middle of anything).
    pub(crate) fn write_snapshot(
        &self,
        path: &Path,
        gate: bool,
    ) -> Result<Snapshot, SnapshotError> {
        remove_leftovers(path);
        let temp = temporary(path, std::process::id());
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(&temp, "remove an old temporary snapshot")(e))
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .map_err(io_error(&temp, "create the temporary snapshot"))?;
        let written = (|| {
            let mut out = BufWriter::with_capacity(BUFFER, &file);
            let mut header = [0u8; HEADER_LEN];
            header[..8].copy_from_slice(&MAGIC);
            header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
            header[16..24].copy_from_slice(&now_ms().to_le_bytes());
            let header_crc = crc32fast::hash(&header[..24]);
            header[24..28].copy_from_slice(&header_crc.to_le_bytes());
            out.write_all(&header).map_err(io_error(&temp, "write the snapshot"))?;
            let mut count = 0u64;
            let mut failed = None;
            for shard in 0..self.shared.geo.shard_count {
                let _gate = gate.then(fork_gate::hold);
                self.each_live_in(shard, |sid, value, expires_ms| {
                    if failed.is_some() {
                        return;
                    }
                    let head = fixed(sid.len() as u32, value.len() as u32, expires_ms);
                    let record_crc = crc(&head, &[sid.as_bytes(), &value]);
                    let written = out
                        .write_all(&head)
                        .and_then(|()| out.write_all(sid.as_bytes()))
                        .and_then(|()| out.write_all(&value))
                        .and_then(|()| out.write_all(&record_crc.to_le_bytes()));
                    match written {
                        Ok(()) => count += 1,
                        Err(e) => failed = Some(e),
                    }
                })?;
                if let Some(e) = failed.take() {
                    return Err(io_error(&temp, "write the snapshot")(e));
                }
                crate::fault::hit(crate::fault::FaultPoint::MidSnapshot);
            }
            let end = fixed(0, 0, count);
            out.write_all(&end)
                .and_then(|()| out.write_all(&crc(&end, &[]).to_le_bytes()))
                .and_then(|()| out.flush())
                .map_err(io_error(&temp, "write the snapshot"))?;
            drop(out);
            file.sync_all().map_err(io_error(&temp, "sync the snapshot"))?;
            let bytes = file.metadata().map_err(io_error(&temp, "stat the snapshot"))?.len();
            Ok(Snapshot { sessions: count, bytes })
        })();
        let snapshot = match written {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        std::fs::rename(&temp, path).map_err(io_error(path, "rename the snapshot into place"))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir, "sync the snapshot's directory"))?;
        Ok(snapshot)
    }

    /// Reads the snapshot file `path` into the store: every session not yet expired is
    /// stored with its expiry (overwriting a session of the same id). Sessions that expired
    /// are skipped and counted; those that do not fit this store (a value over its
    /// `max_value_size`, or no room) are counted as dropped.
    ///
    /// # Errors
    /// [`SnapshotError::Untrusted`] for a file that is not the user's alone (nothing is
    /// read); [`SnapshotError::NotASnapshot`] and [`SnapshotError::Version`] for a file of
    /// another kind or version; [`SnapshotError::Truncated`] and [`SnapshotError::Corrupt`]
    /// for a file cut short or damaged: the sessions read before the damage **are kept** in
    /// the store (the error counts them), none after it; [`SnapshotError::Io`] for a failed
    /// read.
    pub fn restore(&self, path: impl AsRef<Path>) -> Result<Restored, SnapshotError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_error(path, "open the snapshot"))?;
        let meta = file.metadata().map_err(io_error(path, "stat the snapshot"))?;
        let user_uid = effective_uid();
        if meta.uid() != user_uid || meta.mode() & 0o077 != 0 {
            return Err(SnapshotError::Untrusted {
                path: path.to_owned(),
                owner_uid: meta.uid(),
                mode: meta.mode() & 0o7777,
                user_uid,
            });
        }
        let mut input = BufReader::with_capacity(BUFFER, file);
        let mut restored = Restored::default();
        let mut offset = 0u64;
        let truncated = |restored: Restored| SnapshotError::Truncated {
            path: path.to_owned(),
            restored: restored.sessions,
        };
        let corrupt =
            |offset: u64, what: &'static str, restored: Restored| SnapshotError::Corrupt {
                path: path.to_owned(),
                offset,
                what,
                restored: restored.sessions,
            };
        let mut header = [0u8; HEADER_LEN];
        match read_exactly(&mut input, &mut header) {
            Ok(true) => {}
            Ok(false) => return Err(SnapshotError::NotASnapshot { path: path.to_owned() }),
            Err(e) => return Err(io_error(path, "read the snapshot")(e)),
        }
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
        if header[..8] != MAGIC {
            return Err(SnapshotError::NotASnapshot { path: path.to_owned() });
        }
        if word(8) != SNAPSHOT_VERSION {
            let found = word(8);
            return Err(SnapshotError::Version {
                path: path.to_owned(),
                found,
                expected: SNAPSHOT_VERSION,
            });
        }
        if crc32fast::hash(&header[..24]) != word(24) {
            return Err(corrupt(0, "the header fails its CRC", restored));
        }
        offset += HEADER_LEN as u64;
        let mut key = Vec::with_capacity(MAX_KEY_LEN);
        let mut value = Vec::new();
        let now = now_ms();
        loop {
            let mut head = [0u8; 16];
            match read_exactly(&mut input, &mut head) {
                Ok(true) => {}
                Ok(false) => return Err(truncated(restored)),
                Err(e) => return Err(io_error(path, "read the snapshot")(e)),
            }
            let key_len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
            let value_len = u32::from_le_bytes(head[4..8].try_into().expect("4")) as usize;
            let tail = u64::from_le_bytes(head[8..].try_into().expect("8"));
            if key_len == 0 {
                let mut stored = [0u8; 4];
                match read_exactly(&mut input, &mut stored) {
                    Ok(true) => {}
                    Ok(false) => return Err(truncated(restored)),
                    Err(e) => return Err(io_error(path, "read the snapshot")(e)),
                }
                let seen = restored.sessions + restored.expired + restored.dropped;
                if value_len != 0 || crc(&head, &[]) != u32::from_le_bytes(stored) || tail != seen {
                    return Err(corrupt(offset, "its end does not match its records", restored));
                }
                return Ok(restored);
            }
            if key_len > MAX_KEY_LEN || value_len > crate::format::layout::max_value_limit() {
                return Err(corrupt(offset, "a record's lengths are out of range", restored));
            }
            key.resize(key_len, 0);
            value.resize(value_len, 0);
            let mut stored = [0u8; 4];
            let complete = read_exactly(&mut input, &mut key)
                .and_then(|k| Ok(k && read_exactly(&mut input, &mut value)?))
                .and_then(|v| Ok(v && read_exactly(&mut input, &mut stored)?))
                .map_err(io_error(path, "read the snapshot"))?;
            if !complete {
                return Err(truncated(restored));
            }
            if crc(&head, &[&key, &value]) != u32::from_le_bytes(stored) {
                return Err(corrupt(offset, "a record fails its CRC", restored));
            }
            let Ok(sid) = std::str::from_utf8(&key) else {
                return Err(corrupt(offset, "a session id is not UTF-8", restored));
            };
            offset += (16 + key_len + value_len + 4) as u64;
            if tail <= now {
                restored.expired += 1;
                continue;
            }
            let expiry = Expiry::At(UNIX_EPOCH + Duration::from_millis(tail));
            match self.set_raw(sid, &value, expiry) {
                Ok(()) => restored.sessions += 1,
                Err(StoreError::ValueTooLarge { .. } | StoreError::Full { .. }) => {
                    restored.dropped += 1;
                    tracing::warn!(namespace = %self.name(), sid, "restored session dropped: it does not fit this store");
                }
                Err(e) => return Err(SnapshotError::Store(e)),
            }
        }
    }
}

/// Fills `buf` from `input`: `Ok(false)` if the input ended first (at its start or midway).
fn read_exactly(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match input.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
