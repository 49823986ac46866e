//! The ggml tensor type table: name and block geometry for every type id a GGUF file may use.
//!
//! This is the container's own table, independent of the kernels crate: the reader must size
//! and validate tensors of every type, including ones openweight cannot compute with (the
//! `IQ2_*`, `IQ3_*`, `IQ1_*`, ternary and integer types). Ids 4 and 5 (removed `Q4_2`/`Q4_3`)
//! and 31-33, 36-38 (removed interleaved `Q4_0_x_y`/`IQ4_NL_x_y`) are not valid in files.

/// Name and block geometry of one ggml type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    /// The name GGUF tools print (`F32`, `Q4_K`, `IQ2_XXS`, ...).
    pub name: &'static str,
    /// Elements per block (1 for plain scalar types).
    pub block_elems: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

const fn t(name: &'static str, block_elems: u64, block_bytes: u64) -> Option<TypeInfo> {
    Some(TypeInfo {
        name,
        block_elems,
        block_bytes,
    })
}

/// Indexed by type id; `None` marks ids that are not valid in files.
const TABLE: [Option<TypeInfo>; 40] = [
    t("F32", 1, 4),        // 0
    t("F16", 1, 2),        // 1
    t("Q4_0", 32, 18),     // 2
    t("Q4_1", 32, 20),     // 3
    None,                  // 4: Q4_2, removed
    None,                  // 5: Q4_3, removed
    t("Q5_0", 32, 22),     // 6
    t("Q5_1", 32, 24),     // 7
    t("Q8_0", 32, 34),     // 8
    t("Q8_1", 32, 36),     // 9
    t("Q2_K", 256, 84),    // 10
    t("Q3_K", 256, 110),   // 11
    t("Q4_K", 256, 144),   // 12
    t("Q5_K", 256, 176),   // 13
    t("Q6_K", 256, 210),   // 14
    t("Q8_K", 256, 292),   // 15
    t("IQ2_XXS", 256, 66), // 16
    t("IQ2_XS", 256, 74),  // 17
    t("IQ3_XXS", 256, 98), // 18
    t("IQ1_S", 256, 50),   // 19
    t("IQ4_NL", 32, 18),   // 20
    t("IQ3_S", 256, 110),  // 21
    t("IQ2_S", 256, 82),   // 22
    t("IQ4_XS", 256, 136), // 23
    t("I8", 1, 1),         // 24
    t("I16", 1, 2),        // 25
    t("I32", 1, 4),        // 26
    t("I64", 1, 8),        // 27
    t("F64", 1, 8),        // 28
    t("IQ1_M", 256, 56),   // 29
    t("BF16", 1, 2),       // 30
    None,                  // 31: Q4_0_4_4, removed from files
    None,                  // 32: Q4_0_4_8, removed from files
    None,                  // 33: Q4_0_8_8, removed from files
    t("TQ1_0", 256, 54),   // 34
    t("TQ2_0", 256, 66),   // 35
    None,                  // 36: IQ4_NL_4_4, removed from files
    None,                  // 37: IQ4_NL_4_8, removed from files
    None,                  // 38: IQ4_NL_8_8, removed from files
    t("MXFP4", 32, 17),    // 39
];

/// Name and block geometry of type `type_id`, or `None` if the id is not valid in a GGUF file.
pub fn type_info(type_id: u32) -> Option<TypeInfo> {
    TABLE.get(type_id as usize).copied().flatten()
}

/// The name of type `type_id` (`"Q4_K"`), or `None` if the id is not valid in a GGUF file.
pub fn type_name(type_id: u32) -> Option<&'static str> {
    type_info(type_id).map(|i| i.name)
}

/// `(block_elems, block_bytes)` of type `type_id`, or `None` if the id is not valid in a file.
pub fn block_geometry(type_id: u32) -> Option<(u64, u64)> {
    type_info(type_id).map(|i| (i.block_elems, i.block_bytes))
}

/// Bytes taken by a tensor of type `type_id` and shape `ne` (`ne[0]` innermost), or `None` if
/// the type is unknown, `ne[0]` is not a whole number of blocks, or the size exceeds `i64::MAX`.
pub fn tensor_bytes(type_id: u32, ne: &[u64]) -> Option<u64> {
    let info = type_info(type_id)?;
    let (&ne0, rest) = ne.split_first()?;
    if ne0 % info.block_elems != 0 {
        return None;
    }
    let row_bytes = (ne0 / info.block_elems).checked_mul(info.block_bytes)?;
    let bytes = rest
        .iter()
        .try_fold(row_bytes, |acc, &n| acc.checked_mul(n))?;
    (bytes <= i64::MAX as u64).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_ids_are_invalid() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, u32::MAX] {
            assert_eq!(type_info(id), None, "id {id}");
        }
    }

    #[test]
    fn every_valid_id_has_a_unique_name_and_sane_geometry() {
        let mut names = std::collections::HashSet::new();
        for id in 0..64 {
            if let Some(info) = type_info(id) {
                assert!(names.insert(info.name), "duplicate name {}", info.name);
                assert!(info.block_elems == 1 || info.block_elems == 32 || info.block_elems == 256);
                assert!(info.block_bytes > 0);
            }
        }
        assert_eq!(names.len(), 32);
    }

    #[test]
    fn geometry_matches_the_kernels_guide_table() {
        // kernels-guide §1.2
        assert_eq!(block_geometry(0), Some((1, 4)));
        assert_eq!(block_geometry(2), Some((32, 18)));
        assert_eq!(block_geometry(12), Some((256, 144)));
        assert_eq!(block_geometry(14), Some((256, 210)));
        assert_eq!(block_geometry(15), Some((256, 292)));
        assert_eq!(block_geometry(30), Some((1, 2)));
        assert_eq!(type_name(20), Some("IQ4_NL"));
    }

    #[test]
    fn tensor_bytes_counts_whole_blocks_per_row() {
        assert_eq!(tensor_bytes(12, &[512, 3]), Some(2 * 144 * 3));
        assert_eq!(tensor_bytes(0, &[7]), Some(28));
        assert_eq!(tensor_bytes(0, &[0, 5]), Some(0));
    }

    #[test]
    fn tensor_bytes_rejects_partial_blocks_and_overflow() {
        assert_eq!(tensor_bytes(2, &[33]), None);
        assert_eq!(tensor_bytes(0, &[1 << 62, 2]), None);
        assert_eq!(tensor_bytes(0, &[1 << 61]), None);
        assert_eq!(tensor_bytes(4, &[32]), None);
    }
}
