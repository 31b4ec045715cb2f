//! Creating, opening and mapping the shared region, and the only raw access to it outside
//! the lock module: header bytes while the segment is still private to its creator, atomic
//! counters, and the raw pointers the lock module wraps.
//!
//! Invariants kept here:
//! - the mapping is `MAP_SHARED`, `len` bytes long, page-aligned, and lives as long as the
//!   `Segment` (an `Arc` in every store handle keeps it alive);
//! - every pointer or reference handed out is bounds-checked against `len` and aligned for
//!   its type, so callers cannot reach outside the mapping whatever the shared bytes say.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

pub(crate) mod signals;

use crate::format::layout::{
    Geometry, ATOMIC_WORDS, CPU_LINE, CPU_LINES, HEADER_SIZE, H_MAGIC, MAGIC, READ_COUNTERS,
    SHARD_STATE, SHARD_STATS, SHARD_VERSION,
};

/// Prefix of named segments in the POSIX shm namespace (`/dev/shm` on Linux).
const SHM_PREFIX: &str = "/cluster-session-store.";

/// A mapped segment.
pub(crate) struct Segment {
    map: MmapRaw,
    /// A memfd segment's descriptor (close-on-exec), kept so that a master can hand the
    /// segment to the master that replaces it (`Master::memfd`).
    memfd: Option<OwnedFd>,
}

/// A segment just created by this process and not yet shared with any other: the only
/// state in which its header may be written and its mutexes initialised.
pub(crate) struct FreshSegment(Segment);

/// Why a named segment could not be created.
pub(crate) enum CreateError {
    /// The name is taken.
    Exists,
    /// Anything else, with the step that failed.
    Os(&'static str, io::Error),
}

/// The owner and permission bits of a named segment, as the operating system reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl Owner {
    fn of(meta: &std::fs::Metadata) -> Owner {
        Owner { uid: meta.uid(), mode: meta.mode() & 0o7777 }
    }

    /// Whether this process may use the segment: it belongs to the process's effective user
    /// and grants nothing to group or others, so no other user can have read or written it.
    /// (A segment this crate creates is 0600, owned by its creator.)
    pub fn trusted(self) -> bool {
        self.uid == effective_uid() && self.mode & 0o077 == 0
    }
}

/// Whether process `pid` runs: `kill(pid, 0)` does not fail with `ESRCH` (a pid reused by an
/// unrelated process reads as running).
pub(crate) fn running(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    !matches!(nix::sys::signal::kill(pid, None), Err(nix::errno::Errno::ESRCH))
}

/// The effective uid of this process: the owner a trusted segment must have.
pub(crate) fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why a named segment could not be opened.
pub(crate) enum OpenError {
    /// Nothing by that name.
    NotFound,
    /// It exists, but its mode does not let this process's user open it.
    PermissionDenied(Owner),
    /// It opened, but it is not this user's alone ([`Owner::trusted`]): never mapped.
    Untrusted(Owner),
    /// Smaller than a header: not ours.
    TooSmall(u64),
    /// Anything else, with the step that failed.
    Os(&'static str, io::Error),
}

impl FreshSegment {
    /// Creates an anonymous memfd segment of `len` zeroed bytes, its pages reserved now so
    /// that a later write cannot fault with SIGBUS for lack of memory.
    pub fn create_memfd(name: &str, len: usize) -> Result<Self, CreateError> {
        let label = std::ffi::CString::new(format!("cluster-session-store.{name}"))
            .map_err(|e| CreateError::Os("name the memfd", io::Error::other(e)))?;
        let fd = memfd_create(label.as_c_str(), MFdFlags::MFD_CLOEXEC)
            .map_err(|e| CreateError::Os("create a memfd", e.into()))?;
        let mut fresh = Self::size_and_map(
            fd.try_clone().map_err(|e| CreateError::Os("keep the memfd", e))?,
            len,
        )?;
        fresh.0.memfd = Some(fd);
        Ok(fresh)
    }

    /// Creates the named segment `/dev/shm/cluster-session-store.<name>`, mode 0600,
    /// exclusively: an existing one is never reused here.
    pub fn create_named(name: &str, len: usize) -> Result<Self, CreateError> {
        let fd = shm_open(
            shm_name(name).as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| match e {
            nix::errno::Errno::EEXIST => CreateError::Exists,
            e => CreateError::Os("create the named segment", e.into()),
        })?;
        Self::size_and_map(fd, len).inspect_err(|_| {
            let _ = Segment::unlink_named(name);
        })
    }

    /// Raw pointer to `len` bytes at `offset` that no other thread or process uses yet: the
    /// segment is still private to its creator (`&mut self`).
    pub fn raw_range_unshared(&mut self, offset: usize, len: usize) -> *mut u8 {
        self.0.raw_range(offset, len)
    }

    /// Writes the header. The magic is stored last, as one atomic release store, so an
    /// attacher racing with setup on a named segment that sees the magic sees the whole header.
    pub fn write_header(&mut self, header: &[u8; HEADER_SIZE]) {
        assert!(self.0.len() >= HEADER_SIZE);
        let base = self.0.map.as_mut_ptr();
        // SAFETY: the mapping holds at least HEADER_SIZE bytes (asserted); `&mut self` and
        // freshness exclude every other writer, and attachers read the body only after an
        // acquire load of the magic that this release store pairs with.
        unsafe {
            std::ptr::copy_nonoverlapping(
                header.as_ptr().add(MAGIC.len()),
                base.add(MAGIC.len()),
                HEADER_SIZE - MAGIC.len(),
            );
            let magic = u64::from_ne_bytes(header[..MAGIC.len()].try_into().expect("8 bytes"));
            (*base.add(H_MAGIC).cast::<AtomicU64>()).store(magic, Ordering::Release);
        }
    }

    /// Ends the fresh state: the segment may now be shared.
    pub fn into_segment(self) -> Segment {
        self.0
    }

    fn size_and_map(fd: OwnedFd, len: usize) -> Result<Self, CreateError> {
        nix::fcntl::posix_fallocate(&fd, 0, len as i64).map_err(|e| {
            CreateError::Os("reserve the segment's memory (posix_fallocate)", e.into())
        })?;
        let file = File::from(fd);
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| CreateError::Os("map the segment", e))?;
        Ok(FreshSegment(Segment { map, memfd: None }))
    }
}

impl Segment {
    /// Opens and maps an existing named segment, whole, if it is trusted: the owner and mode
    /// of the object opened (`fstat`, so no other object can be swapped in between) must pass
    /// [`Owner::trusted`].
    pub fn open_named(name: &str) -> Result<Self, OpenError> {
        let fd = shm_open(shm_name(name).as_str(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                nix::errno::Errno::ENOENT => OpenError::NotFound,
                nix::errno::Errno::EACCES => match std::fs::metadata(Self::named_path(name)) {
                    Ok(meta) => OpenError::PermissionDenied(Owner::of(&meta)),
                    Err(e) => OpenError::Os("stat the named segment", e),
                },
                e => OpenError::Os("open the named segment", e.into()),
            })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| OpenError::Os("stat the named segment", e))?;
        let owner = Owner::of(&meta);
        if !owner.trusted() {
            return Err(OpenError::Untrusted(owner));
        }
        Ok(Segment { map: map_whole(&file, meta.len())?, memfd: None })
    }

    /// Maps, whole, the memfd segment whose descriptor a master handing over passed to this
    /// process (`Backing::Inherited`), if it is a memfd of this user's: `fstat` must show
    /// the caller's effective uid as owner, and the descriptor must take memfd seals
    /// (`F_GET_SEALS`), which no file, socket or named segment does.
    pub fn open_inherited(fd: std::os::fd::RawFd) -> Result<Self, OpenError> {
        // SAFETY: F_GETFD reads a descriptor's flags and touches nothing else.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(OpenError::Os("use the inherited descriptor", io::Error::last_os_error()));
        }
        // SAFETY: the descriptor is open (checked just above), and `Backing::Inherited`'s
        // contract is that the store takes it over: nothing else in the process uses or
        // closes it, so the `File` may own it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let meta = file.metadata().map_err(|e| OpenError::Os("stat the inherited memfd", e))?;
        let owner = Owner::of(&meta);
        let memfd = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok();
        if owner.uid != effective_uid() || !memfd {
            return Err(OpenError::Untrusted(owner));
        }
        let map = map_whole(&file, meta.len())?;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(|e| OpenError::Os("mark the inherited memfd close-on-exec", e.into()))?;
        Ok(Segment { map, memfd: Some(file.into()) })
    }

    /// A memfd segment's descriptor (close-on-exec); `None` for a named one.
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.memfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Removes a named segment from the shm namespace; mappings stay valid.
    pub fn unlink_named(name: &str) -> io::Result<()> {
        shm_unlink(shm_name(name).as_str()).map_err(io::Error::from)
    }

    /// Gives named segment `from` the name `to`, in one step (`rename(2)` in `/dev/shm`): a
    /// segment already named `to` is replaced, and its mappings stay valid.
    pub fn rename_named(from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(Self::named_path(from), Self::named_path(to))
    }

    /// Removes the segments `<name>.<kind>-<pid>` (say `sessions.resize-1234`) that processes
    /// no longer running left behind: a master killed in the middle of making one. Best
    /// effort: a name it cannot read or remove is left.
    pub fn remove_leftovers(name: &str, kind: &str) {
        let Ok(entries) = std::fs::read_dir("/dev/shm") else { return };
        // The shm name without its leading slash, as /dev/shm lists it.
        let prefix = format!("{}{name}.{kind}-", &SHM_PREFIX[1..]);
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let pid = file.strip_prefix(&prefix).and_then(|pid| pid.parse::<u32>().ok());
            if pid.is_some_and(|pid| !running(pid)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Where the operating system shows a named segment.
    pub fn named_path(name: &str) -> String {
        format!("/dev/shm{}", shm_name(name))
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Header word `at` (one of `ATOMIC_WORDS`, live or cache): an `AtomicU64` past the
    /// header CRC, the part of the header that changes after setup (an adopting master
    /// stores to the live words, a tracker to the cache words).
    pub fn live_word(&self, at: usize) -> &AtomicU64 {
        assert!(ATOMIC_WORDS.contains(&at) && self.len() >= HEADER_SIZE, "not a live word: {at}");
        // SAFETY: in bounds (HEADER_SIZE <= len, asserted; these words end before it) and
        // 8-aligned (a page-aligned base, offsets multiples of 8); they are only ever
        // accessed atomically by every process (`read_header` loads them so too), so a shared
        // reference bounded by `&self` aliases nothing written otherwise.
        unsafe { &*(self.map.as_ptr().add(at) as *const AtomicU64) }
    }

    /// A copy of the header bytes. The header is immutable once set up but for its live
    /// words, which are loaded atomically. The magic is read
    /// first with an acquire load pairing with `write_header`'s release store; a segment whose
    /// magic is not ours (or not yet written) is returned with only its magic, body zeroed.
    pub fn read_header(&self) -> [u8; HEADER_SIZE] {
        assert!(self.len() >= HEADER_SIZE);
        let mut out = [0u8; HEADER_SIZE];
        let base = self.map.as_ptr();
        // SAFETY: the mapping is page-aligned and at least HEADER_SIZE long, so the magic is
        // an aligned in-bounds u64; it is only ever written by an atomic store.
        let magic = unsafe { (*base.add(H_MAGIC).cast::<AtomicU64>()).load(Ordering::Acquire) };
        out[..MAGIC.len()].copy_from_slice(&magic.to_ne_bytes());
        if out[..MAGIC.len()] != MAGIC {
            return out;
        }
        for (i, byte) in out.iter_mut().enumerate().skip(MAGIC.len()) {
            if ATOMIC_WORDS.iter().any(|&at| (at..at + 8).contains(&i)) {
                continue;
            }
            // SAFETY: i < HEADER_SIZE <= len; the body outside the atomic words is immutable
            // once the magic is published, so these reads race with nothing.
            *byte = unsafe { base.add(i).read_volatile() };
        }
        for at in ATOMIC_WORDS {
            let word = self.live_word(at).load(Ordering::Acquire);
            out[at..at + 8].copy_from_slice(&word.to_ne_bytes());
        }
        out
    }

    /// Statistics counter `which` (a `STAT_*` offset) of shard `shard`: an `AtomicU64` in the
    /// shard's stats line, which lies outside every lock guard's range.
    pub fn stat(&self, geo: &Geometry, shard: usize, which: usize) -> &AtomicU64 {
        assert!(
            shard < geo.shard_count
                && which.is_multiple_of(8)
                && which + 8 <= SHARD_STATE - SHARD_STATS
        );
        let offset = geo.shard_offset(shard) + SHARD_STATS + which;
        assert!(offset + 8 <= self.len(), "stat out of range");
        // SAFETY: in bounds (asserted) and 8-aligned (shard offsets are multiples of 128 from
        // a page-aligned base); AtomicU64 has the layout of u64; the stats line is only ever
        // accessed atomically by every process and never covered by a guard's slices, so a
        // shared reference for the mapping's lifetime, bounded by `&self`, aliases nothing.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// Read counter `which` (an `RC_*` offset) of line `line` (`< CPU_LINES`): an
    /// `AtomicU64` in the read-counter area between the header and the first shard.
    pub fn read_counter(&self, line: usize, which: usize) -> &AtomicU64 {
        assert!(line < CPU_LINES && which.is_multiple_of(8) && which + 8 <= CPU_LINE);
        let offset = READ_COUNTERS + line * CPU_LINE + which;
        assert!(offset + 8 <= self.len(), "read counter out of range");
        // SAFETY: in bounds (asserted) and 8-aligned (a page-aligned base, READ_COUNTERS and
        // CPU_LINE multiples of 64, `which` of 8); AtomicU64 has the layout of u64; the area is
        // only ever accessed atomically by every process and lies before every shard, so no
        // lock guard's slices cover it, and a shared reference bounded by `&self` aliases
        // nothing.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// The seqlock version word of shard `shard` (lock module): an `AtomicU64` on the mutex's
    /// cache line, outside every lock guard's range.
    pub fn version(&self, geo: &Geometry, shard: usize) -> &AtomicU64 {
        assert!(shard < geo.shard_count, "shard {shard} out of range");
        let offset = geo.shard_offset(shard) + SHARD_VERSION;
        assert!(offset + 8 <= self.len(), "version word out of range");
        // SAFETY: in bounds (asserted) and 8-aligned (shard offsets are multiples of 128 from
        // a page-aligned base, SHARD_VERSION is 64); the version word is only ever accessed
        // atomically and lies outside the pthread mutex and every guard's range, so a shared
        // reference bounded by `&self` aliases nothing.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// Hints the CPU to start loading the cache line at `offset`. Loads nothing the program
    /// sees and writes nothing: a hint may be issued for any byte of the mapping.
    #[inline]
    pub fn prefetch(&self, offset: usize) {
        self.prefetch_read(offset, 1);
    }

    /// Starts loading the cache lines of `len` bytes at `offset` (clamped to the mapping),
    /// so that a later read of them does not wait for each line in turn.
    #[inline]
    pub fn prefetch_read(&self, offset: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        self.prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T0 }>(offset, len);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (offset, len);
    }

    /// Starts loading the cache lines of `len` bytes at `offset` (clamped to the mapping)
    /// with intent to write, so that a later copy into them does not wait for each line.
    #[inline]
    pub fn prefetch_write(&self, offset: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        self.prefetch_lines::<{ std::arch::x86_64::_MM_HINT_ET0 }>(offset, len);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (offset, len);
    }

    /// Issues prefetch `HINT` for every 64-byte line that `offset..offset + len` touches,
    /// clamped to the mapping.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn prefetch_lines<const HINT: i32>(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.len());
        let mut line = offset & !63;
        while line < end {
            // SAFETY: `line < end <= len`: inside the mapping; a prefetch has no
            // architectural effect, and SSE is part of the x86_64 baseline.
            unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(self.map.as_ptr().add(line).cast()) };
            line += 64;
        }
    }

    /// A racy read of the `u32` at `offset` (4-aligned, inside the mapping), for hints only:
    /// another process may be writing it, so the value may be stale or torn between
    /// writers' updates; nothing may depend on it but a prefetch or a statistic.
    pub fn hint_u32(&self, offset: usize) -> u32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len(), "hint_u32 out of range");
        // SAFETY: in bounds and aligned (checked). A volatile load, like the optimistic
        // reader's (SAFETY.md section 4, "Optimistic reads"): it may race a locked writer's
        // store, and its value is only ever a hint.
        unsafe { self.map.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }

    /// Raw pointer to `len` bytes at `offset`, for the lock module.
    pub fn raw_range(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len()),
            "range out of bounds"
        );
        // SAFETY: offset + len <= mapping length (asserted), so the pointer stays inside.
        unsafe { self.map.as_mut_ptr().add(offset) }
    }
}

/// Maps the whole of an existing segment's `file`, `len` bytes long: one smaller than a
/// header is not a segment.
fn map_whole(file: &File, len: u64) -> Result<MmapRaw, OpenError> {
    if len < HEADER_SIZE as u64 {
        return Err(OpenError::TooSmall(len));
    }
    let len = usize::try_from(len).map_err(|e| OpenError::Os("size", io::Error::other(e)))?;
    MmapOptions::new().len(len).map_raw(file).map_err(|e| OpenError::Os("map the segment", e))
}

/// The shm object name for a validated segment name.
fn shm_name(name: &str) -> String {
    format!("{SHM_PREFIX}{name}")
}
