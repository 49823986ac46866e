//! Metadata values: the 13 GGUF value types, arrays (of arrays) included.

/// GGUF value type ids, as stored in the file.
pub(crate) mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// The name GGUF tools use for value type `id` (`"uint32"`, `"string"`, ...).
pub(crate) fn value_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        type_id::U8 => "uint8",
        type_id::I8 => "int8",
        type_id::U16 => "uint16",
        type_id::I16 => "int16",
        type_id::U32 => "uint32",
        type_id::I32 => "int32",
        type_id::F32 => "float32",
        type_id::BOOL => "bool",
        type_id::STRING => "string",
        type_id::ARRAY => "array",
        type_id::U64 => "uint64",
        type_id::I64 => "int64",
        type_id::F64 => "float64",
        _ => return None,
    })
}

/// The fewest bytes one encoded value of type `id` can take (used to bound counts before
/// allocating: a string is at least its 8-byte length, an array its 4-byte type and 8-byte count).
pub(crate) fn min_encoded_len(id: u32) -> u64 {
    match id {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
        _ => 12,
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// `string` (UTF-8)
    String(String),
    /// `array` of one element type
    Array(Array),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
}

impl Value {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => type_id::U8,
            Value::I8(_) => type_id::I8,
            Value::U16(_) => type_id::U16,
            Value::I16(_) => type_id::I16,
            Value::U32(_) => type_id::U32,
            Value::I32(_) => type_id::I32,
            Value::F32(_) => type_id::F32,
            Value::Bool(_) => type_id::BOOL,
            Value::String(_) => type_id::STRING,
            Value::Array(_) => type_id::ARRAY,
            Value::U64(_) => type_id::U64,
            Value::I64(_) => type_id::I64,
            Value::F64(_) => type_id::F64,
        }
    }

    /// The type's name as GGUF tools print it: `"uint8"`, `"int8"`, `"uint16"`, `"int16"`,
    /// `"uint32"`, `"int32"`, `"float32"`, `"bool"`, `"string"`, `"array"`, `"uint64"`,
    /// `"int64"`, `"float64"`.
    pub fn type_name(&self) -> &'static str {
        value_type_name(self.type_id()).unwrap_or("unknown")
    }

    /// The value as `u64` if it is an integer of any width and sign that is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `i64` if it is an integer of any width and sign that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as `f64` if it is a float (`float32` or `float64`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value if it is an array.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the value is an integer type (any width, any sign).
    pub(crate) fn is_integer(&self) -> bool {
        matches!(
            self,
            Value::U8(_)
                | Value::I8(_)
                | Value::U16(_)
                | Value::I16(_)
                | Value::U32(_)
                | Value::I32(_)
                | Value::U64(_)
                | Value::I64(_)
        )
    }

    /// The integer value as text (for error messages); empty for non-integers.
    pub(crate) fn integer_text(&self) -> String {
        match (self.as_i64(), self.as_u64()) {
            (Some(v), _) => v.to_string(),
            (None, Some(v)) => v.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A metadata array: all elements of one type. Arrays of arrays may mix inner element types.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// `uint8` elements
    U8(Vec<u8>),
    /// `int8` elements
    I8(Vec<i8>),
    /// `uint16` elements
    U16(Vec<u16>),
    /// `int16` elements
    I16(Vec<i16>),
    /// `uint32` elements
    U32(Vec<u32>),
    /// `int32` elements
    I32(Vec<i32>),
    /// `float32` elements
    F32(Vec<f32>),
    /// `bool` elements
    Bool(Vec<bool>),
    /// `string` elements
    String(Vec<String>),
    /// `array` elements (nested arrays, each with its own element type)
    Array(Vec<Array>),
    /// `uint64` elements
    U64(Vec<u64>),
    /// `int64` elements
    I64(Vec<i64>),
    /// `float64` elements
    F64(Vec<f64>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF type id of the elements.
    pub fn elem_type_id(&self) -> u32 {
        match self {
            Array::U8(_) => type_id::U8,
            Array::I8(_) => type_id::I8,
            Array::U16(_) => type_id::U16,
            Array::I16(_) => type_id::I16,
            Array::U32(_) => type_id::U32,
            Array::I32(_) => type_id::I32,
            Array::F32(_) => type_id::F32,
            Array::Bool(_) => type_id::BOOL,
            Array::String(_) => type_id::STRING,
            Array::Array(_) => type_id::ARRAY,
            Array::U64(_) => type_id::U64,
            Array::I64(_) => type_id::I64,
            Array::F64(_) => type_id::F64,
        }
    }

    /// The element type's name, as [`Value::type_name`] spells it.
    pub fn elem_type_name(&self) -> &'static str {
        value_type_name(self.elem_type_id()).unwrap_or("unknown")
    }

    /// The elements if they are strings.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `float32`.
    pub fn as_f32s(&self) -> Option<&[f32]> {
        match self {
            Array::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `float64`.
    pub fn as_f64s(&self) -> Option<&[f64]> {
        match self {
            Array::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `int32`.
    pub fn as_i32s(&self) -> Option<&[i32]> {
        match self {
            Array::I32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `uint32`.
    pub fn as_u32s(&self) -> Option<&[u32]> {
        match self {
            Array::U32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `int64`.
    pub fn as_i64s(&self) -> Option<&[i64]> {
        match self {
            Array::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `uint64`.
    pub fn as_u64s(&self) -> Option<&[u64]> {
        match self {
            Array::U64(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `uint8`.
    pub fn as_u8s(&self) -> Option<&[u8]> {
        match self {
            Array::U8(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `int8`.
    pub fn as_i8s(&self) -> Option<&[i8]> {
        match self {
            Array::I8(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `uint16`.
    pub fn as_u16s(&self) -> Option<&[u16]> {
        match self {
            Array::U16(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are `int16`.
    pub fn as_i16s(&self) -> Option<&[i16]> {
        match self {
            Array::I16(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are bools.
    pub fn as_bools(&self) -> Option<&[bool]> {
        match self {
            Array::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if they are arrays.
    pub fn as_arrays(&self) -> Option<&[Array]> {
        match self {
            Array::Array(v) => Some(v),
            _ => None,
        }
    }

    /// Integer elements of any width and sign widened to `i64`, if every one fits
    /// (`None` for non-integer arrays or a `uint64` element above `i64::MAX`).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        fn all<T: Copy>(v: &[T], f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            Array::U8(v) => all(v, |x| Some(x.into())),
            Array::I8(v) => all(v, |x| Some(x.into())),
            Array::U16(v) => all(v, |x| Some(x.into())),
            Array::I16(v) => all(v, |x| Some(x.into())),
            Array::U32(v) => all(v, |x| Some(x.into())),
            Array::I32(v) => all(v, |x| Some(x.into())),
            Array::U64(v) => all(v, |x| i64::try_from(x).ok()),
            Array::I64(v) => all(v, Some),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_follow_gguf_tools() {
        assert_eq!(Value::U32(1).type_name(), "uint32");
        assert_eq!(Value::F32(1.0).type_name(), "float32");
        assert_eq!(Value::String("a".into()).type_name(), "string");
        assert_eq!(Value::Array(Array::I32(vec![])).type_name(), "array");
        assert_eq!(Array::String(vec![]).elem_type_name(), "string");
        assert_eq!(Array::Array(vec![]).elem_type_name(), "array");
    }

    #[test]
    fn integer_conversions_are_lossless_or_none() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U8(200).as_i64(), Some(200));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::U32(1).as_f64(), None);
    }

    #[test]
    fn to_i64s_widens_integer_arrays_only() {
        assert_eq!(Array::U16(vec![1, 2]).to_i64s(), Some(vec![1, 2]));
        assert_eq!(Array::U64(vec![u64::MAX]).to_i64s(), None);
        assert_eq!(Array::F32(vec![1.0]).to_i64s(), None);
    }
}
