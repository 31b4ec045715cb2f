//! Encoding and checking the segment header (the byte table in `layout`). Pure functions
//! over byte arrays: an attach refuses any header whose fields do not describe a segment
//! this build can safely walk.
#![forbid(unsafe_code)]

use crate::format::layout::*;

/// What a full shard does with a write that needs room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Free expired records, then the least recently used ones in that shard (sampled).
    Lru,
    /// Free expired records; if that is not enough, a new session fails with
    /// [`StoreError::Full`](crate::StoreError::Full), and so does a session grown past the
    /// size class of its record (its old value stays). A rewrite that fits its record's class
    /// always succeeds: each shard keeps a spare block of the largest class for it.
    Refuse,
}

/// How the segment is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// An anonymous memfd: only the master and processes it forks can map it; nothing is left
    /// behind in `/dev/shm`. The default.
    Memfd,
    /// A POSIX shared-memory object `/dev/shm/cluster-session-store.<name>`, mode 0600,
    /// created exclusively, for workers started by exec: they call
    /// [`ClusterStore::attach`](crate::ClusterStore::attach).
    Named,
    /// The memfd segment of the master this one takes over from
    /// ([`Config::take_over`](crate::Config::take_over)), whose descriptor it inherited under this number (that master
    /// passed [`Master::memfd`](crate::Master::memfd) without its close-on-exec flag). The
    /// store takes the descriptor over: nothing else in the process may use or close it.
    Inherited(std::os::fd::RawFd),
}

/// Settings stored in the header besides the geometry.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub name: String,
    pub default_ttl_ms: u64,
    pub lock_timeout_ms: u64,
    pub eviction: Eviction,
    /// Not stored: a decoded header is always one attached by name.
    pub backing: Backing,
    pub owner_pid: u32,
    pub generation: u64,
    pub hash_key: [u64; 2],
    pub created_ms: u64,
}

/// What is wrong with a header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Magic,
    Version(u32),
    Checksum,
    Field(String),
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn encode(geo: &Geometry, s: &Settings) -> [u8; HEADER_SIZE] {
    let mut b = [0u8; HEADER_SIZE];
    b[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC);
    put_u32(&mut b, H_VERSION, FORMAT_VERSION);
    put_u32(&mut b, H_HEADER_SIZE, HEADER_SIZE as u32);
    put_u64(&mut b, H_TOTAL_SIZE, geo.total_size as u64);
    put_u32(&mut b, H_SHARD_COUNT, geo.shard_count as u32);
    put_u32(&mut b, H_SHARD_BITS, geo.shard_bits);
    put_u64(&mut b, H_SHARD_STRIDE, geo.shard_stride as u64);
    put_u32(&mut b, H_SLOTS, geo.slots as u32);
    put_u32(&mut b, H_CLASS_COUNT, geo.class_sizes.len() as u32);
    put_u64(&mut b, H_DATA_BYTES, geo.data_bytes as u64);
    put_u32(&mut b, H_MAX_KEY_LEN, MAX_KEY_LEN as u32);
    put_u32(&mut b, H_MAX_VALUE_LEN, geo.max_value_len as u32);
    put_u32(&mut b, H_EVICTION, matches!(s.eviction, Eviction::Refuse) as u32);
    put_u64(&mut b, H_HASH_KEY, s.hash_key[0]);
    put_u64(&mut b, H_HASH_KEY + 8, s.hash_key[1]);
    put_u64(&mut b, H_CREATED_MS, s.created_ms);
    put_u32(&mut b, H_NAME_LEN, s.name.len() as u32);
    b[H_NAME..H_NAME + s.name.len()].copy_from_slice(s.name.as_bytes());
    for (i, &size) in geo.class_sizes.iter().enumerate() {
        put_u32(&mut b, H_CLASS_SIZES + 4 * i, size);
    }
    let crc = crc32fast::hash(&b[..H_CRC]);
    put_u32(&mut b, H_CRC, crc);
    for (at, word) in LIVE_WORDS.into_iter().zip(live_words(s)) {
        put_u64(&mut b, at, word);
    }
    b
}

/// The values of the live words (`LIVE_WORDS`) for `s`, in their order.
pub(crate) fn live_words(s: &Settings) -> [u64; 4] {
    [u64::from(s.owner_pid), s.generation, s.default_ttl_ms, s.lock_timeout_ms]
}

/// Decodes a header read from a mapping of `mapped_len` bytes, checking every field.
pub(crate) fn decode(
    b: &[u8; HEADER_SIZE],
    mapped_len: usize,
) -> Result<(Geometry, Settings), HeaderError> {
    if b[H_MAGIC..H_MAGIC + 8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let version = get_u32(b, H_VERSION);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    if crc32fast::hash(&b[..H_CRC]) != get_u32(b, H_CRC) {
        return Err(HeaderError::Checksum);
    }
    let bad = |what: &str| Err(HeaderError::Field(what.to_owned()));
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let shard_count = get_u32(b, H_SHARD_COUNT) as usize;
    let shard_bits = get_u32(b, H_SHARD_BITS);
    let shard_stride = to_usize(get_u64(b, H_SHARD_STRIDE));
    let slots = get_u32(b, H_SLOTS) as usize;
    let class_count = get_u32(b, H_CLASS_COUNT) as usize;
    let data_bytes = to_usize(get_u64(b, H_DATA_BYTES));
    let total_size = to_usize(get_u64(b, H_TOTAL_SIZE));
    let max_value_len = get_u32(b, H_MAX_VALUE_LEN) as usize;
    if get_u32(b, H_HEADER_SIZE) as usize != HEADER_SIZE {
        return bad("header_size");
    }
    if !shard_count.is_power_of_two() || shard_count.trailing_zeros() != shard_bits {
        return bad("shard_count");
    }
    if !slots.is_power_of_two() || slots < 16 {
        return bad("slots");
    }
    if data_bytes % BLOCK_ALIGN != 0 || data_bytes == 0 || data_bytes > MAX_DATA_BYTES {
        return bad("data_bytes");
    }
    let expected_total =
        shard_stride.checked_mul(shard_count).and_then(|s| s.checked_add(SHARDS_START));
    if expected_total != Some(total_size) || total_size != mapped_len {
        return bad("total_size");
    }
    if get_u32(b, H_MAX_KEY_LEN) as usize != MAX_KEY_LEN {
        return bad("max_key_len");
    }
    if class_count == 0 || class_count > FREE_HEADS {
        return bad("class_count");
    }
    let class_sizes: Vec<u32> =
        (0..class_count).map(|i| get_u32(b, H_CLASS_SIZES + 4 * i)).collect();
    let ascending = class_sizes.windows(2).all(|w| w[0] < w[1]);
    let aligned = class_sizes.iter().all(|&c| (c as usize).is_multiple_of(BLOCK_ALIGN));
    if !ascending || !aligned || (class_sizes[0] as usize) < MIN_BLOCK {
        return bad("class_sizes");
    }
    let largest = *class_sizes.last().expect("class_count > 0") as usize;
    if largest < record_len(MAX_KEY_LEN, max_value_len) || largest > data_bytes {
        return bad("max_value_len");
    }
    let eviction = match get_u32(b, H_EVICTION) {
        0 => Eviction::Lru,
        1 => Eviction::Refuse,
        _ => return bad("eviction"),
    };
    let spare = eviction == Eviction::Refuse;
    // The index, its stamps, the data area and the spare block.
    let needed = slots
        .checked_mul(SLOT_SIZE + STAMP_SIZE)
        .and_then(|i| i.checked_add(SHARD_INDEX))
        .and_then(|i| i.checked_add(data_bytes))
        .and_then(|i| i.checked_add(if spare { largest } else { 0 }));
    if shard_stride % 128 != 0 || needed.is_none_or(|n| n > shard_stride) {
        return bad("shard_stride");
    }
    let name_len = get_u32(b, H_NAME_LEN) as usize;
    let name = match b.get(H_NAME..H_NAME + name_len).map(std::str::from_utf8) {
        Some(Ok(n)) if name_len <= MAX_NAME_LEN && valid_name(n) => n.to_owned(),
        _ => return bad("name"),
    };
    let geo = Geometry {
        total_size,
        shard_count,
        shard_bits,
        shard_stride,
        slots,
        data_bytes,
        max_value_len,
        class_sizes,
        spare,
    };
    let settings = Settings {
        name,
        default_ttl_ms: get_u64(b, H_DEFAULT_TTL_MS).max(1),
        lock_timeout_ms: get_u64(b, H_LOCK_TIMEOUT_MS).max(1),
        eviction,
        backing: Backing::Named,
        owner_pid: get_u64(b, H_OWNER_PID) as u32,
        generation: get_u64(b, H_GENERATION),
        hash_key: [get_u64(b, H_HASH_KEY), get_u64(b, H_HASH_KEY + 8)],
        created_ms: get_u64(b, H_CREATED_MS),
    };
    Ok((geo, settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Geometry, Settings) {
        let geo = Geometry::compute(1 << 20, 4, 4096, crate::format::layout::BYTES_PER_SLOT, true)
            .unwrap();
        let s = Settings {
            name: "sample".into(),
            default_ttl_ms: 1000,
            lock_timeout_ms: 500,
            eviction: Eviction::Refuse,
            backing: Backing::Memfd,
            owner_pid: 42,
            generation: 7,
            hash_key: [1, 2],
            created_ms: 3,
        };
        (geo, s)
    }

    #[test]
    fn round_trips() {
        let (geo, s) = sample();
        let (g2, s2) = decode(&encode(&geo, &s), geo.total_size).unwrap();
        assert_eq!(g2, geo);
        assert_eq!(
            (s2.name.as_str(), s2.eviction, s2.hash_key),
            ("sample", Eviction::Refuse, [1, 2])
        );
    }

    #[test]
    fn refuses_foreign_versions_and_damage() {
        let (geo, s) = sample();
        let good = encode(&geo, &s);
        let mut b = good;
        b[0] = b'X';
        assert_eq!(decode(&b, geo.total_size).unwrap_err(), HeaderError::Magic);
        let mut b = good;
        put_u32(&mut b, H_VERSION, 99);
        assert_eq!(decode(&b, geo.total_size).unwrap_err(), HeaderError::Version(99));
        let mut b = good;
        b[H_NAME] ^= 1;
        assert_eq!(decode(&b, geo.total_size).unwrap_err(), HeaderError::Checksum);
        assert!(matches!(decode(&good, geo.total_size + 4096), Err(HeaderError::Field(_))));
    }

    #[test]
    fn refuses_a_consistent_header_with_impossible_geometry() {
        let (mut geo, s) = sample();
        geo.slots = 3;
        let b = encode(&geo, &s);
        assert_eq!(decode(&b, geo.total_size).unwrap_err(), HeaderError::Field("slots".into()));
    }
}
