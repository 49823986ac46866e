//! The key/value cache of one session.
//!
//! Layout, for K and V separately: `[layer][kv_head][position][dim]`, so the keys of one
//! head are contiguous and attention streams through them. Positions are absolute: row `p`
//! holds the token at position `p` of the sequence. F16 storage (the reference's default)
//! rounds each value to the nearest binary16 when written.

use half::f16;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// binary16 (the reference's default; half the memory).
    #[default]
    F16,
    /// f32 (no rounding of keys and values).
    F32,
}

/// Rows of one head of K or V, as stored.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    /// binary16 values.
    F16(&'a [f16]),
    /// f32 values.
    F32(&'a [f32]),
}

#[derive(Debug)]
enum Store {
    F16(Vec<u16>),
    F32(Vec<f32>),
}

impl Store {
    fn zeroed(ty: KvType, n: usize) -> Store {
        match ty {
            KvType::F16 => Store::F16(vec![0u16; n]),
            KvType::F32 => Store::F32(vec![0.0; n]),
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F16(d) => {
                let dst: &mut [f16] = bytemuck::cast_slice_mut(&mut d[at..at + src.len()]);
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = f16::from_f32(v);
                }
            }
            Store::F32(d) => d[at..at + src.len()].copy_from_slice(src),
        }
    }

    fn rows(&self, range: std::ops::Range<usize>) -> KvRows<'_> {
        match self {
            Store::F16(d) => KvRows::F16(bytemuck::cast_slice(&d[range])),
            Store::F32(d) => KvRows::F32(&d[range]),
        }
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
#[derive(Debug)]
pub struct KvCache {
    kv_type: KvType,
    n_ctx: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    k: Store,
    v: Store,
}

impl KvCache {
    /// An empty cache (all zeros) for `n_layer` layers of `n_head_kv` heads.
    pub fn new(
        kv_type: KvType,
        n_ctx: usize,
        n_layer: usize,
        n_head_kv: usize,
        head_dim_k: usize,
        head_dim_v: usize,
    ) -> KvCache {
        KvCache {
            kv_type,
            n_ctx,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            k: Store::zeroed(kv_type, n_layer * n_head_kv * n_ctx * head_dim_k),
            v: Store::zeroed(kv_type, n_layer * n_head_kv * n_ctx * head_dim_v),
        }
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Stores the keys and values of one token: `k` holds `n_head_kv * head_dim_k` values
    /// (head after head), `v` holds `n_head_kv * head_dim_v`.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        assert!(
            pos < self.n_ctx,
            "position {pos} outside the cache of {}",
            self.n_ctx
        );
        for h in 0..self.n_head_kv {
            let base = (layer * self.n_head_kv + h) * self.n_ctx + pos;
            let kd = self.head_dim_k;
            let vd = self.head_dim_v;
            self.k.write(base * kd, &k[h * kd..(h + 1) * kd]);
            self.v.write(base * vd, &v[h * vd..(h + 1) * vd]);
        }
    }

    /// Keys of positions `0..n` of KV head `head` in `layer`: `n` rows of `head_dim_k`.
    pub fn keys(&self, layer: usize, head: usize, n: usize) -> KvRows<'_> {
        let start = (layer * self.n_head_kv + head) * self.n_ctx * self.head_dim_k;
        self.k.rows(start..start + n * self.head_dim_k)
    }

    /// Values of positions `0..n` of KV head `head` in `layer`: `n` rows of `head_dim_v`.
    pub fn values(&self, layer: usize, head: usize, n: usize) -> KvRows<'_> {
        let start = (layer * self.n_head_kv + head) * self.n_ctx * self.head_dim_v;
        self.v.rows(start..start + n * self.head_dim_v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_cache_rounds_values_to_binary16() {
        let mut c = KvCache::new(KvType::F16, 4, 1, 1, 2, 2);
        c.write(0, 1, &[1.0 + 1e-4, -2.0], &[0.1, 3.0]);
        let KvRows::F16(k) = c.keys(0, 0, 2) else {
            panic!("expected f16 rows")
        };
        assert_eq!(k[2].to_f32(), 1.0);
        assert_eq!(k[3].to_f32(), -2.0);
        let KvRows::F16(v) = c.values(0, 0, 2) else {
            panic!("expected f16 rows")
        };
        assert_eq!(v[2], f16::from_f32(0.1));
    }

    #[test]
    fn f32_cache_keeps_heads_and_layers_apart() {
        let mut c = KvCache::new(KvType::F32, 3, 2, 2, 1, 1);
        c.write(1, 2, &[5.0, 6.0], &[7.0, 8.0]);
        let KvRows::F32(k) = c.keys(1, 1, 3) else {
            panic!("expected f32 rows")
        };
        assert_eq!(k, &[0.0, 0.0, 6.0]);
        let KvRows::F32(v) = c.values(1, 0, 3) else {
            panic!("expected f32 rows")
        };
        assert_eq!(v, &[0.0, 0.0, 7.0]);
        let KvRows::F32(k0) = c.keys(0, 1, 3) else {
            panic!("expected f32 rows")
        };
        assert_eq!(k0, &[0.0, 0.0, 0.0]);
    }
}
