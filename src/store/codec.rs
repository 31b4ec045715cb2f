//! The encoding of typed sessions: MessagePack with named fields (self-describing, so that
//! `serde_json::Value` maps round-trip), shared by `set`/`get` and both framework adapters.
#![forbid(unsafe_code)]

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;
use crate::Result;

/// Bytes reserved for an encoded session before encoding it: a small session's MessagePack
/// fits, where a `Vec` grown from empty would reallocate several times on its way there.
const ENCODE_CAPACITY: usize = 256;

/// `value` as MessagePack with named fields (a struct as a map, self-describing), the
/// encoding of `set` and of both framework adapters (what `get` decodes).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(ENCODE_CAPACITY);
    rmp_serde::encode::write_named(&mut bytes, value)
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(bytes)
}

pub(crate) fn decode<T: DeserializeOwned>(sid: &str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| StoreError::Decode { key: sid.to_owned(), message: e.to_string() })
}
