//! Parsing and validating the GGUF header, metadata and tensor-info table from a byte slice.
//!
//! Every length, count and offset read from the file is checked against the bytes that remain
//! (with overflow-checked arithmetic) before it is used, and no buffer is reserved for a count
//! the rest of the file could not hold.

use std::collections::HashMap;

use super::error::GgufError;
use super::tensor::TensorInfo;
use super::types::{tensor_bytes, type_info};
use super::value::{min_encoded_len, type_id as vt, value_type_name, Array, Value};

/// Arrays nested deeper than this (an array of arrays of ... ) are rejected.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The key that sets the alignment.
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";

/// The fewest bytes one tensor info can take: name length, `n_dims`, one dimension, type, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 8 + 4 + 8;
/// The fewest bytes one key/value pair can take: key length, value type, a one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;

/// Everything the reader extracts from a file, apart from the bytes themselves.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

/// A position in the file's bytes with bounds-checked reads.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// The next `n` bytes, or `Truncated` naming `what` if the file ends first.
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
                what: what(),
            });
        }
        // `n <= remaining <= usize::MAX`, so the cast is lossless and the slice in bounds.
        let bytes = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: `u64` length, then that many UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len_offset = self.offset();
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::StringPastEnd {
                offset: len_offset,
                len,
                available: self.remaining(),
                what: what(),
            });
        }
        let start = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                offset: start,
                what: what(),
            }),
        }
    }
}

/// Decodes `count` fixed-size little-endian elements of `N` bytes each.
fn decode_fixed<const N: usize, T>(
    cur: &mut Cursor<'_>,
    count: u64,
    what: impl FnOnce() -> String,
    f: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    let bytes = cur.take(count.saturating_mul(N as u64), what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

fn check_bool(byte: u8, offset: u64, key: &str) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::InvalidBool {
            offset,
            key: key.to_owned(),
            byte,
        }),
    }
}

/// Reads one value of type `ty` (whose type field was at `type_offset`) for key `key`.
fn read_value(
    cur: &mut Cursor<'_>,
    ty: u32,
    type_offset: u64,
    key: &str,
) -> Result<Value, GgufError> {
    let what = || format!("value of key {key:?}");
    Ok(match ty {
        vt::U8 => Value::U8(cur.array::<1>(what)?[0]),
        vt::I8 => Value::I8(i8::from_le_bytes(cur.array(what)?)),
        vt::U16 => Value::U16(u16::from_le_bytes(cur.array(what)?)),
        vt::I16 => Value::I16(i16::from_le_bytes(cur.array(what)?)),
        vt::U32 => Value::U32(u32::from_le_bytes(cur.array(what)?)),
        vt::I32 => Value::I32(i32::from_le_bytes(cur.array(what)?)),
        vt::F32 => Value::F32(f32::from_le_bytes(cur.array(what)?)),
        vt::U64 => Value::U64(u64::from_le_bytes(cur.array(what)?)),
        vt::I64 => Value::I64(i64::from_le_bytes(cur.array(what)?)),
        vt::F64 => Value::F64(f64::from_le_bytes(cur.array(what)?)),
        vt::BOOL => {
            let offset = cur.offset();
            Value::Bool(check_bool(cur.array::<1>(what)?[0], offset, key)?)
        }
        vt::STRING => Value::String(cur.string(&what)?),
        vt::ARRAY => Value::Array(read_array(cur, key, 1)?),
        type_id => {
            return Err(GgufError::UnknownValueType {
                offset: type_offset,
                key: key.to_owned(),
                type_id,
            })
        }
    })
}

/// Reads an array (element type, count, elements) at nesting level `depth` (1 = outermost).
fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    let array_offset = cur.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            offset: array_offset,
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let elem = cur.u32(|| format!("array element type of key {key:?}"))?;
    let Some(elem_name) = value_type_name(elem) else {
        return Err(GgufError::UnknownValueType {
            offset: array_offset,
            key: key.to_owned(),
            type_id: elem,
        });
    };
    let count_offset = cur.offset();
    let count = cur.u64(|| format!("array length of key {key:?}"))?;
    let fits = count
        .checked_mul(min_encoded_len(elem))
        .is_some_and(|n| n <= cur.remaining());
    if !fits {
        return Err(GgufError::ArrayPastEnd {
            offset: count_offset,
            key: key.to_owned(),
            elem_type: elem_name,
            count,
            available: cur.remaining(),
        });
    }
    // From here on `count` elements provably fit in the remaining bytes, so `count` is bounded
    // by the file size and reserving `count` slots is safe.
    let what = || format!("array elements of key {key:?}");
    Ok(match elem {
        vt::U8 => Array::U8(cur.take(count, what)?.to_vec()),
        vt::I8 => Array::I8(decode_fixed(cur, count, what, i8::from_le_bytes)?),
        vt::U16 => Array::U16(decode_fixed(cur, count, what, u16::from_le_bytes)?),
        vt::I16 => Array::I16(decode_fixed(cur, count, what, i16::from_le_bytes)?),
        vt::U32 => Array::U32(decode_fixed(cur, count, what, u32::from_le_bytes)?),
        vt::I32 => Array::I32(decode_fixed(cur, count, what, i32::from_le_bytes)?),
        vt::F32 => Array::F32(decode_fixed(cur, count, what, f32::from_le_bytes)?),
        vt::U64 => Array::U64(decode_fixed(cur, count, what, u64::from_le_bytes)?),
        vt::I64 => Array::I64(decode_fixed(cur, count, what, i64::from_le_bytes)?),
        vt::F64 => Array::F64(decode_fixed(cur, count, what, f64::from_le_bytes)?),
        vt::BOOL => {
            let start = cur.offset();
            let bytes = cur.take(count, what)?;
            let mut out = Vec::with_capacity(bytes.len());
            for (i, &b) in bytes.iter().enumerate() {
                out.push(check_bool(b, start + i as u64, key)?);
            }
            Array::Bool(out)
        }
        vt::STRING => {
            let mut out = Vec::with_capacity(count as usize);
            for i in 0..count {
                out.push(cur.string(&|| format!("element {i} of key {key:?}"))?);
            }
            Array::String(out)
        }
        _ => {
            // vt::ARRAY (every other id was rejected above).
            let mut out = Vec::with_capacity(count as usize);
            for _ in 0..count {
                out.push(read_array(cur, key, depth + 1)?);
            }
            Array::Array(out)
        }
    })
}

/// Parses and validates a whole GGUF file held in `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };

    // Header.
    let head = &buf[..buf.len().min(4)];
    if head != &b"GGUF"[..head.len()] {
        return Err(GgufError::BadMagic {
            offset: 0,
            found: head.to_vec(),
        });
    }
    cur.take(4, || "magic".into())?;
    let version_offset = cur.offset();
    let version = cur.u32(|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            offset: version_offset,
            version,
        });
    }
    let n_tensors_offset = cur.offset();
    let n_tensors = cur.u64(|| "tensor count".into())?;
    let n_kv_offset = cur.offset();
    let n_kv = cur.u64(|| "metadata key count".into())?;
    let fits = |n: u64, min: u64, avail: u64| n.checked_mul(min).is_some_and(|b| b <= avail);
    if !fits(n_tensors, MIN_TENSOR_INFO_LEN, cur.remaining()) {
        return Err(GgufError::CountTooLarge {
            offset: n_tensors_offset,
            what: "tensors",
            count: n_tensors,
        });
    }
    if !fits(n_kv, MIN_KV_LEN, cur.remaining()) {
        return Err(GgufError::CountTooLarge {
            offset: n_kv_offset,
            what: "metadata keys",
            count: n_kv,
        });
    }

    // Metadata. Both counts are now bounded by the file size.
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut key_index = HashMap::with_capacity(n_kv as usize);
    let mut alignment_value_offset = 0;
    for i in 0..n_kv {
        let key_offset = cur.offset();
        let key = cur.string(&|| format!("key #{i}"))?;
        let type_offset = cur.offset();
        let ty = cur.u32(|| format!("value type of key {key:?}"))?;
        if key == ALIGNMENT_KEY {
            alignment_value_offset = cur.offset();
        }
        let value = read_value(&mut cur, ty, type_offset, &key)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                offset: key_offset,
                key,
            });
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    let alignment = match key_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(other) => {
            return Err(GgufError::BadAlignment {
                offset: alignment_value_offset,
                found: match other {
                    Value::U32(a) => format!("uint32 {a}"),
                    v if v.is_integer() => format!("{} {}", v.type_name(), v.integer_text()),
                    v => v.type_name().to_owned(),
                },
            })
        }
    };

    // Tensor infos.
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    let mut offset_fields = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name_offset = cur.offset();
        let name = cur.string(&|| format!("name of tensor #{i}"))?;
        let info = read_tensor_info(&mut cur, name, alignment)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor {
                offset: name_offset,
                name: info.name,
            });
        }
        offset_fields.push(cur.offset() - 8);
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // Data section: starts at the next multiple of the alignment (a power of two <= 2^31, and
    // the position is at most the file length, so this cannot overflow).
    let data_offset = cur.offset().next_multiple_of(alignment);
    check_tensor_ranges(&tensors, &offset_fields, data_offset, buf.len() as u64)?;

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Reads the rest of one tensor info (after its name) and checks shape, type and alignment.
fn read_tensor_info(
    cur: &mut Cursor<'_>,
    name: String,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let n_dims_offset = cur.offset();
    let n_dims = cur.u32(|| format!("dimension count of tensor {name:?}"))?;
    if n_dims == 0 || n_dims > 4 {
        return Err(GgufError::BadDimCount {
            offset: n_dims_offset,
            name,
            n_dims,
        });
    }
    let ne_offset = cur.offset();
    let ne = decode_fixed(
        cur,
        u64::from(n_dims),
        || format!("dimensions of tensor {name:?}"),
        u64::from_le_bytes,
    )?;
    let type_offset = cur.offset();
    let type_id = cur.u32(|| format!("type of tensor {name:?}"))?;
    let offset_offset = cur.offset();
    let offset = cur.u64(|| format!("data offset of tensor {name:?}"))?;

    let n_elements = ne
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .filter(|&n| n <= i64::MAX as u64);
    if n_elements.is_none() || ne.iter().any(|&n| n > i64::MAX as u64) {
        return Err(GgufError::ShapeOverflow {
            offset: ne_offset,
            name,
            ne,
        });
    }
    let Some(info) = type_info(type_id) else {
        return Err(GgufError::UnknownTensorType {
            offset: type_offset,
            name,
            type_id,
        });
    };
    if ne[0] % info.block_elems != 0 {
        return Err(GgufError::PartialBlock {
            offset: ne_offset,
            name,
            ne0: ne[0],
            type_name: info.name,
            block_elems: info.block_elems,
        });
    }
    let Some(n_bytes) = tensor_bytes(type_id, &ne) else {
        return Err(GgufError::ShapeOverflow {
            offset: ne_offset,
            name,
            ne,
        });
    };
    if offset % alignment != 0 {
        return Err(GgufError::MisalignedTensor {
            offset: offset_offset,
            name,
            tensor_offset: offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        ne,
        type_id,
        offset,
        n_bytes,
    })
}

/// Checks that every tensor's bytes lie inside the file and that no two tensors overlap.
/// `offset_fields[i]` is where tensor `i`'s offset field sits (for error messages).
fn check_tensor_ranges(
    tensors: &[TensorInfo],
    offset_fields: &[u64],
    data_offset: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => ranges.push((start, end, i)),
            _ => {
                return Err(GgufError::TensorPastEnd {
                    offset: offset_fields[i],
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    // Empty tensors occupy no bytes and cannot overlap anything.
    ranges.retain(|&(start, end, _)| start < end);
    ranges.sort_unstable();
    let mut furthest: Option<(u64, usize)> = None;
    for &(start, end, i) in &ranges {
        if let Some((prev_end, j)) = furthest {
            if start < prev_end {
                return Err(GgufError::TensorOverlap {
                    offset: offset_fields[i],
                    name: tensors[i].name.clone(),
                    start,
                    end,
                    other: tensors[j].name.clone(),
                });
            }
        }
        if furthest.is_none_or(|(prev_end, _)| end > prev_end) {
            furthest = Some((end, i));
        }
    }
    Ok(())
}
