//! The key/value cache of one session.
//!
//! Layout, for K and V separately: `[layer][kv_head][slot][dim]`, so the keys of one head
//! are contiguous and attention streams through them. A full-attention layer has one slot
//! per position (`n_ctx` slots; slot `p` holds the token at absolute position `p`). A
//! sliding-window layer only ever needs the last `window` positions plus the batch being
//! written, so it keeps `min(n_ctx, window - 1 + max_batch)` slots used as a ring: position
//! `p` lives in slot `p % slots` and overwrites a position the window can no longer see.
//! F16 storage (the reference's default) rounds each value to the nearest binary16 when
//! written.

use half::f16;

use super::config::Config;

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

/// Where one layer's slots are.
#[derive(Clone, Copy, Debug)]
struct LayerSlots {
    /// Slots per head.
    slots: usize,
    /// Whether positions wrap around (sliding-window layer with fewer slots than `n_ctx`).
    ring: bool,
    /// Index of the layer's first slot (head 0, slot 0) among all slots of the cache.
    first: usize,
}

/// The keys and values of one KV head of one layer: every slot, as stored, and how
/// absolute positions map onto slots.
#[derive(Clone, Copy, Debug)]
pub struct KvHead<'a> {
    /// `slots` rows of `head_dim_k`.
    pub keys: KvRows<'a>,
    /// `slots` rows of `head_dim_v`.
    pub values: KvRows<'a>,
    slots: usize,
    ring: bool,
}

impl KvHead<'_> {
    /// The slot holding absolute position `pos`.
    pub fn slot(&self, pos: usize) -> usize {
        if self.ring {
            pos % self.slots
        } else {
            pos
        }
    }

    /// The end (exclusive) of the run of positions starting at `pos` that sit in
    /// consecutive slots, i.e. the next position where the ring wraps.
    pub fn run_end(&self, pos: usize) -> usize {
        if self.ring {
            pos - pos % self.slots + self.slots
        } else {
            usize::MAX
        }
    }
}

/// Keys and values of every layer for up to `n_ctx` positions.
#[derive(Debug)]
pub struct KvCache {
    kv_type: KvType,
    n_ctx: usize,
    max_batch: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    layers: Vec<LayerSlots>,
    k: Store,
    v: Store,
}

impl KvCache {
    /// An empty cache (all zeros) for `n_layer` full-attention layers of `n_head_kv` heads.
    pub fn new(
        kv_type: KvType,
        n_ctx: usize,
        n_layer: usize,
        n_head_kv: usize,
        head_dim_k: usize,
        head_dim_v: usize,
    ) -> KvCache {
        let windows = vec![None; n_layer];
        KvCache::with_windows(
            kv_type, n_ctx, &windows, n_ctx, n_head_kv, head_dim_k, head_dim_v,
        )
    }

    /// An empty cache where layer `l` attends to the last `windows[l]` positions only
    /// (`None`: all of them), for batches of at most `max_batch` tokens: a windowed layer
    /// keeps `min(n_ctx, window - 1 + max_batch)` slots, enough for the oldest position
    /// the first query of a batch sees and every key of the batch.
    pub fn with_windows(
        kv_type: KvType,
        n_ctx: usize,
        windows: &[Option<usize>],
        max_batch: usize,
        n_head_kv: usize,
        head_dim_k: usize,
        head_dim_v: usize,
    ) -> KvCache {
        let max_batch = max_batch.max(1);
        let mut first = 0;
        let layers = windows
            .iter()
            .map(|w| {
                let slots = match w {
                    Some(w) => n_ctx.min((w.max(&1) - 1).saturating_add(max_batch)),
                    None => n_ctx,
                };
                let l = LayerSlots {
                    slots,
                    ring: slots < n_ctx,
                    first,
                };
                first += n_head_kv * slots;
                l
            })
            .collect();
        KvCache {
            kv_type,
            n_ctx,
            max_batch,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            layers,
            k: Store::zeroed(kv_type, first * head_dim_k),
            v: Store::zeroed(kv_type, first * head_dim_v),
        }
    }

    /// The cache a model needs: sliding-window layers (see [`Config::layer_window`]) as
    /// rings, the others with a slot per position. With latent attention each token keeps
    /// one key row (latent then rotary key, [`super::config::MlaConfig::cache_dim`] values)
    /// and no value rows: the values are the latent part of the keys.
    pub fn for_model(config: &Config, kv_type: KvType, n_ctx: usize, max_batch: usize) -> KvCache {
        let windows: Vec<Option<usize>> = (0..config.n_layer)
            .map(|l| config.layer_window(l))
            .collect();
        if let Some(m) = &config.mla {
            return KvCache::with_windows(kv_type, n_ctx, &windows, max_batch, 1, m.cache_dim(), 0);
        }
        KvCache::with_windows(
            kv_type,
            n_ctx,
            &windows,
            max_batch,
            config.n_head_kv,
            config.head_dim_k,
            config.head_dim_v,
        )
    }

    /// Bytes the cache holds per position (over all layers, keys and values), for layers
    /// with a slot per position.
    pub fn bytes_per_token(&self) -> usize {
        let elem = match self.kv_type {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        self.layers.len() * self.n_head_kv * (self.head_dim_k + self.head_dim_v) * elem
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Whether a sequence holding positions `0..n_past` can be cut back to its first
    /// `n_keep` positions and continued from there: a ring layer has overwritten keys that
    /// position `n_keep` must see once more than `max_batch` positions were written after it.
    pub fn can_truncate(&self, n_past: usize, n_keep: usize) -> bool {
        n_keep == 0
            || n_past.saturating_sub(n_keep) <= self.max_batch
            || self.layers.iter().all(|l| !l.ring)
    }

    /// The largest batch a forward call may write at once (sliding-window rings are sized
    /// for it).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Slots per head of `layer` (`n_ctx` unless it is a sliding-window ring).
    pub fn slots(&self, layer: usize) -> usize {
        self.layers[layer].slots
    }

    /// Stores the keys and values of one token: `k` holds `n_head_kv * head_dim_k` values
    /// (head after head), `v` holds `n_head_kv * head_dim_v`.
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        assert!(
            pos < self.n_ctx,
            "position {pos} outside the cache of {}",
            self.n_ctx
        );
        let l = self.layers[layer];
        let slot = if l.ring { pos % l.slots } else { pos };
        let (kd, vd) = (self.head_dim_k, self.head_dim_v);
        for h in 0..self.n_head_kv {
            let row = l.first + h * l.slots + slot;
            self.k.write(row * kd, &k[h * kd..(h + 1) * kd]);
            self.v.write(row * vd, &v[h * vd..(h + 1) * vd]);
        }
    }

    /// Every slot of KV head `head` in `layer`.
    pub fn head(&self, layer: usize, head: usize) -> KvHead<'_> {
        let l = self.layers[layer];
        let row = l.first + head * l.slots;
        KvHead {
            keys: self
                .k
                .rows(row * self.head_dim_k..(row + l.slots) * self.head_dim_k),
            values: self
                .v
                .rows(row * self.head_dim_v..(row + l.slots) * self.head_dim_v),
            slots: l.slots,
            ring: l.ring,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_rows(r: KvRows<'_>) -> &[f32] {
        match r {
            KvRows::F32(r) => r,
            KvRows::F16(_) => panic!("expected f32 rows"),
        }
    }

    #[test]
    fn f16_cache_rounds_values_to_binary16() {
        let mut c = KvCache::new(KvType::F16, 4, 1, 1, 2, 2);
        c.write(0, 1, &[1.0 + 1e-4, -2.0], &[0.1, 3.0]);
        let KvRows::F16(k) = c.head(0, 0).keys else {
            panic!("expected f16 rows")
        };
        assert_eq!(k[2].to_f32(), 1.0);
        assert_eq!(k[3].to_f32(), -2.0);
        let KvRows::F16(v) = c.head(0, 0).values else {
            panic!("expected f16 rows")
        };
        assert_eq!(v[2], f16::from_f32(0.1));
    }

    #[test]
    fn f32_cache_keeps_heads_and_layers_apart() {
        let mut c = KvCache::new(KvType::F32, 3, 2, 2, 1, 1);
        c.write(1, 2, &[5.0, 6.0], &[7.0, 8.0]);
        assert_eq!(f32_rows(c.head(1, 1).keys), &[0.0, 0.0, 6.0]);
        assert_eq!(f32_rows(c.head(1, 0).values), &[0.0, 0.0, 7.0]);
        assert_eq!(f32_rows(c.head(0, 1).keys), &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn a_sliding_window_layer_keeps_window_minus_one_plus_batch_slots() {
        let c = KvCache::with_windows(KvType::F16, 100, &[Some(8), None], 4, 1, 2, 2);
        assert_eq!(c.slots(0), 11);
        assert_eq!(c.slots(1), 100);
        // never more than n_ctx
        let small = KvCache::with_windows(KvType::F16, 6, &[Some(8)], 4, 1, 2, 2);
        assert_eq!(small.slots(0), 6);
    }

    #[test]
    fn ring_positions_wrap_and_overwrite_the_oldest_slot() {
        let mut c = KvCache::with_windows(KvType::F32, 50, &[Some(2)], 2, 2, 1, 1);
        assert_eq!(c.slots(0), 3);
        for pos in 0..5 {
            c.write(
                0,
                pos,
                &[pos as f32, -(pos as f32)],
                &[10.0 + pos as f32, 0.0],
            );
        }
        let h = c.head(0, 0);
        // positions 3, 4 overwrote 0, 1; position 2 is still in slot 2
        assert_eq!(f32_rows(h.keys), &[3.0, 4.0, 2.0]);
        assert_eq!(f32_rows(h.values), &[13.0, 14.0, 12.0]);
        assert_eq!(f32_rows(c.head(0, 1).keys), &[-3.0, -4.0, -2.0]);
        assert_eq!((h.slot(4), h.slot(2)), (1, 2));
        assert_eq!((h.run_end(2), h.run_end(3), h.run_end(5)), (3, 6, 6));
    }

    #[test]
    fn a_full_layer_maps_positions_to_slots_one_to_one() {
        let c = KvCache::new(KvType::F32, 5, 1, 1, 1, 1);
        let h = c.head(0, 0);
        assert_eq!(h.slot(4), 4);
        assert_eq!(h.run_end(0), usize::MAX);
    }
}
