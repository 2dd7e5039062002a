//! The step noise of A1111's SDE samplers (`DPM++ SDE`, `DPM++ 2M SDE`, `DPM++ 2M SDE Heun`):
//! k-diffusion's `BrownianTreeNoiseSampler` over torchsde's `BrownianTree`.
//!
//! A1111 `sd_samplers_common.Sampler.create_noise_sampler` builds
//! `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=current_iter_seeds)` with the seeds
//! of the batch's images (`p.all_seeds`), so every image has its own tree. Each tree is a
//! torchsde `BrownianInterval` (torchsde 0.2.6 `_brownian/brownian_interval.py`) with
//! `halfway_tree=True`, `tol=1e-6`, `pool_size=24` and no Lévy area:
//!
//! * times are rounded to 6 decimals (`round(x, 6)`);
//! * the whole interval's increment is `randn(seed_W) * sqrt(t1 - t0)`, where
//!   `seed_W, _, _ = SeedSequence(entropy=seed, pool_size=24).generate_state(3)`;
//! * a query `[ta, tb]` is located in a binary tree whose nodes split at their rounded
//!   halfway point until `ta` and `tb` are split points; a node's split draws
//!   `randn(seed_W)` with `seed_W` from `SeedSequence(entropy=seed, spawn_key=(key, depth))`,
//!   where the root has key 0 at depth 0 and children `2 * key + (0 left, 1 right)`;
//! * a child's increment is the Brownian bridge of its parent's: the left part is
//!   `left_diff * W / h + sqrt(left_diff * right_diff / h) * noise`, the right part the rest;
//! * a query over several nodes sums their increments left to right.
//!
//! `randn` is `torch.randn(size, generator=torch.Generator(device).manual_seed(seed))` on the
//! device of the latent: the CPU generator on a CPU, CUDA's Philox on an NVIDIA card (the same
//! numbers as A1111's "NV" source). Tensor arithmetic is float32 with float64 scalars rounded to
//! float32, as torch does, so the noise matches torchsde bit for bit.

use std::collections::{HashMap, VecDeque};

use candle_core::{Device, Tensor};

use super::NoiseSource;
use crate::rng::{Generator, RngSource};
use crate::{Error, Result};

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// torchsde `BrownianTree`'s pool size.
pub const POOL_SIZE: usize = 24;
/// torchsde `BrownianTree`'s tolerance, as decimal digits of `round(x, ndigits)`.
const ROUND_DIGITS: usize = 6;
/// Increments kept in memory per tree (torchsde's LRU cache holds 45).
const CACHE_SIZE: usize = 64;

/// NumPy's `SeedSequence` (`numpy/random/bit_generator.pyx`): entropy and a spawn key hashed
/// into a pool of 32-bit words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: Vec<u32>,
}

/// NumPy `_int_to_uint32_array`: the 32-bit words of a non-negative integer, least significant
/// first (`[0]` for 0).
pub fn int_to_words(mut n: u128) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push((n & 0xffff_ffff) as u32);
        n >>= 32;
    }
    out
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

impl SeedSequence {
    /// `SeedSequence(entropy, spawn_key=spawn_key, pool_size=pool_size)`, each integer given as
    /// its value (converted to words as NumPy does).
    pub fn new(entropy: u128, spawn_key: &[u128], pool_size: usize) -> Self {
        let mut run = int_to_words(entropy);
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|&k| int_to_words(k)).collect();
        // NumPy >= 1.19 pads the run entropy to the pool size when a spawn key follows.
        if !spawn.is_empty() && run.len() < pool_size {
            run.resize(pool_size, 0);
        }
        run.extend(spawn);
        let entropy = run;
        let mut pool = vec![0u32; pool_size];
        let mut hash_const = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
        }
        for src in 0..pool_size {
            for dst in 0..pool_size {
                if src != dst {
                    let h = hashmix(pool[src], &mut hash_const);
                    pool[dst] = mix(pool[dst], h);
                }
            }
        }
        for &word in entropy.iter().skip(pool_size) {
            for slot in pool.iter_mut() {
                let h = hashmix(word, &mut hash_const);
                *slot = mix(*slot, h);
            }
        }
        Self { pool }
    }

    /// `generate_state(n_words)` as `uint32`.
    pub fn generate_state(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        self.pool
            .iter()
            .cycle()
            .take(n_words)
            .map(|&word| {
                let mut v = word ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash_const);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }
}

/// Python's `round(x, 6)`: the correctly rounded 6-decimal value of `x`, read back as a float.
fn round_time(x: f64) -> f64 {
    format!("{x:.ROUND_DIGITS$}").parse().unwrap_or(x)
}

#[derive(Debug, Clone)]
struct Split {
    midway: f64,
    w_seed: u32,
    left: usize,
    right: usize,
}

#[derive(Debug, Clone)]
struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    spawn_key: u128,
    depth: u32,
    split: Option<Split>,
}

/// One torchsde `BrownianTree(t0, zeros(size), t1, entropy=seed)` (see the module docs).
#[derive(Debug, Clone)]
pub struct BrownianTree {
    nodes: Vec<Node>,
    entropy: u64,
    len: usize,
    source: RngSource,
    root_w: Vec<f32>,
    cache: HashMap<usize, Vec<f32>>,
    order: VecDeque<usize>,
}

impl BrownianTree {
    /// A tree over `[t0, t1]` (`t0 < t1`) for samples of `len` values, seeded with `entropy`,
    /// drawing from `source`'s generator.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `t0 >= t1` or either is not finite.
    pub fn new(t0: f64, t1: f64, len: usize, entropy: u64, source: RngSource) -> Result<Self> {
        if !(t0.is_finite() && t1.is_finite() && t0 < t1) {
            return Err(Error::Invalid {
                what: "Brownian tree interval",
                reason: format!("[{t0}, {t1}] is empty or not finite"),
            });
        }
        let seeds = SeedSequence::new(u128::from(entropy), &[], POOL_SIZE).generate_state(3);
        let scale = (t1 - t0).sqrt() as f32;
        let root_w = Generator::new(u64::from(seeds[0]), source)
            .randn(len)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        Ok(Self {
            nodes: vec![Node {
                start: round_time(t0),
                end: round_time(t1),
                parent: None,
                is_left: false,
                spawn_key: 0,
                depth: 0,
                split: None,
            }],
            entropy,
            len,
            source,
            root_w,
            cache: HashMap::new(),
            order: VecDeque::new(),
        })
    }

    fn split_exact(&mut self, node: usize, midway: f64) -> Result<()> {
        let (start, end, key, depth) = {
            let n = &self.nodes[node];
            (n.start, n.end, n.spawn_key, n.depth)
        };
        if depth >= 120 {
            return Err(Error::Invalid {
                what: "Brownian tree query",
                reason: "the tree is too deep (times closer than its tolerance)".to_owned(),
            });
        }
        let midway = round_time(midway);
        let seeds = SeedSequence::new(
            u128::from(self.entropy),
            &[key, u128::from(depth)],
            POOL_SIZE,
        )
        .generate_state(4);
        let left = self.nodes.len();
        let child = |start, end, is_left: bool| Node {
            start,
            end,
            parent: Some(node),
            is_left,
            spawn_key: 2 * key + u128::from(!is_left),
            depth: depth + 1,
            split: None,
        };
        self.nodes.push(child(start, midway, true));
        self.nodes.push(child(midway, end, false));
        self.nodes[node].split = Some(Split {
            midway,
            w_seed: seeds[0],
            left,
            right: left + 1,
        });
        Ok(())
    }

    /// torchsde `_split` of a halfway tree: split at the rounded middle, then keep splitting the
    /// child that contains `midway` until it is a split point.
    fn split(&mut self, mut node: usize, midway: f64) -> Result<()> {
        loop {
            let half = 0.5 * (self.nodes[node].end + self.nodes[node].start);
            self.split_exact(node, half)?;
            let Some(s) = self.nodes[node].split.clone() else {
                return Ok(());
            };
            if midway > s.midway {
                node = s.right;
            } else if midway < s.midway {
                node = s.left;
            } else {
                return Ok(());
            }
        }
    }

    /// torchsde `_loc`: the nodes that exactly cover `[ta, tb]` (rounded), left to right.
    fn locate(&mut self, ta: f64, tb: f64) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        let mut stack = vec![(0usize, ta, tb)];
        while let Some((node, ta, tb)) = stack.pop() {
            let (start, end) = (self.nodes[node].start, self.nodes[node].end);
            if ta == start && tb == end {
                out.push(node);
                continue;
            }
            let split = match &self.nodes[node].split {
                Some(s) => s.clone(),
                None => {
                    self.split(node, if ta == start { tb } else { ta })?;
                    match &self.nodes[node].split {
                        Some(s) => s.clone(),
                        None => continue,
                    }
                }
            };
            if tb <= split.midway {
                stack.push((split.left, ta, tb));
            } else if ta >= split.midway {
                stack.push((split.right, ta, tb));
            } else {
                stack.push((split.right, split.midway, tb));
                stack.push((split.left, ta, split.midway));
            }
        }
        Ok(out)
    }

    fn remember(&mut self, node: usize, w: Vec<f32>) {
        if self.cache.len() >= CACHE_SIZE
            && let Some(old) = self.order.pop_front()
        {
            self.cache.remove(&old);
        }
        self.order.push_back(node);
        self.cache.insert(node, w);
    }

    /// The increment over one node, computed down from the nearest known ancestor.
    fn increment(&mut self, node: usize) -> Result<Vec<f32>> {
        let mut path = Vec::new();
        let mut cur = node;
        let mut w = loop {
            if let Some(p) = self.nodes[cur].parent {
                if let Some(w) = self.cache.get(&cur) {
                    break w.clone();
                }
                path.push(cur);
                cur = p;
            } else {
                break self.root_w.clone();
            }
        };
        while let Some(child) = path.pop() {
            let Some(parent) = self.nodes[child].parent else {
                break;
            };
            let p = &self.nodes[parent];
            let Some(split) = &p.split else {
                return Err(Error::Invalid {
                    what: "Brownian tree",
                    reason: "a node without a split has children".to_owned(),
                });
            };
            let h_reciprocal = 1.0 / (p.end - p.start);
            let left_diff = split.midway - p.start;
            let right_diff = p.end - split.midway;
            let var = left_diff * right_diff * h_reciprocal;
            let noise = Generator::new(u64::from(split.w_seed), self.source).randn(self.len);
            let (a, b, sd) = (left_diff as f32, h_reciprocal as f32, var.sqrt() as f32);
            let is_left = self.nodes[child].is_left;
            for (wi, ni) in w.iter_mut().zip(noise) {
                let left_w = *wi * a * b + ni * sd;
                *wi = if is_left { left_w } else { *wi - left_w };
            }
            self.remember(child, w.clone());
        }
        Ok(w)
    }

    /// The increment `W(tb) - W(ta)` (`tree(ta, tb)`), `ta <= tb`, clamped to the tree's
    /// interval as torchsde does.
    ///
    /// # Errors
    /// [`Error::Invalid`] for times out of order or closer than the tree resolves.
    pub fn increment_between(&mut self, ta: f64, tb: f64) -> Result<Vec<f32>> {
        let (start, end) = (self.nodes[0].start, self.nodes[0].end);
        let ta = ta.clamp(start, end);
        let tb = tb.clamp(start, end);
        if ta > tb || ta.is_nan() || tb.is_nan() {
            return Err(Error::Invalid {
                what: "Brownian tree query",
                reason: format!("times {ta} and {tb} are out of order"),
            });
        }
        let (ta, tb) = (round_time(ta), round_time(tb));
        if ta == tb {
            return Ok(vec![0.0; self.len]);
        }
        let nodes = self.locate(ta, tb)?;
        let mut total: Option<Vec<f32>> = None;
        for node in nodes {
            let w = self.increment(node)?;
            total = Some(match total {
                None => w,
                Some(mut t) => {
                    for (ti, wi) in t.iter_mut().zip(w) {
                        *ti += wi;
                    }
                    t
                }
            });
        }
        Ok(total.unwrap_or_else(|| vec![0.0; self.len]))
    }
}

/// k-diffusion `BrownianTreeNoiseSampler` with one tree per image (`BatchedBrownianTree` with a
/// list of seeds), as A1111's `create_noise_sampler` makes it.
///
/// The trees are built by [`NoiseSource::prepare`] from the sigmas of the run: `[sigma_min,
/// sigma_max]` are the smallest positive and the largest sigma.
#[derive(Debug, Clone)]
pub struct BrownianNoise {
    seeds: Vec<u64>,
    shape: [usize; 3],
    len: usize,
    source: RngSource,
    trees: Vec<BrownianTree>,
    /// `sign` of `BatchedBrownianTree.sort(t0, t1)` at construction.
    sign: f32,
}

impl BrownianNoise {
    /// A sampler for images of `shape` = `[C, H, W]`, one tree per seed, drawing from `source`
    /// (CPU: `torch.Generator("cpu")`; NV: CUDA's Philox). Call [`NoiseSource::prepare`] (or
    /// [`BrownianNoise::build`]) before the first draw.
    pub fn new(seeds: &[u64], shape: [usize; 3], source: RngSource) -> Self {
        Self {
            seeds: seeds.to_vec(),
            shape,
            len: shape.iter().product(),
            source,
            trees: Vec::new(),
            sign: 1.0,
        }
    }

    /// Builds the trees over `[sigma_min, sigma_max]` (k-diffusion sorts the two).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty interval.
    pub fn build(&mut self, sigma_min: f32, sigma_max: f32) -> Result<()> {
        let (t0, t1, sign) = if sigma_min < sigma_max {
            (sigma_min, sigma_max, 1.0)
        } else {
            (sigma_max, sigma_min, -1.0)
        };
        self.sign = sign;
        self.trees = self
            .seeds
            .iter()
            .map(|&s| BrownianTree::new(f64::from(t0), f64::from(t1), self.len, s, self.source))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// `BatchedBrownianTree(sigma, sigma_next)`: each image's increment between the two times,
    /// negated when `sigma_next < sigma` (k-diffusion sorts the times and multiplies by the
    /// sign), the images one after the other.
    ///
    /// # Errors
    /// [`Error::Invalid`] before [`BrownianNoise::build`] or for a bad query.
    pub fn increments(&mut self, sigma: f32, sigma_next: f32) -> Result<Vec<f32>> {
        if self.trees.is_empty() {
            return Err(Error::Invalid {
                what: "Brownian noise",
                reason: "the trees were not built".to_owned(),
            });
        }
        let (a, b, sign) = if sigma < sigma_next {
            (sigma, sigma_next, 1.0f32)
        } else {
            (sigma_next, sigma, -1.0)
        };
        let sign = self.sign * sign;
        let mut out = Vec::with_capacity(self.len * self.trees.len());
        for tree in &mut self.trees {
            let w = tree.increment_between(f64::from(a), f64::from(b))?;
            out.extend(w.into_iter().map(|v| v * sign));
        }
        Ok(out)
    }

    /// `noise_sampler(sigma, sigma_next)`: [`BrownianNoise::increments`] divided by
    /// `sqrt(|sigma_next - sigma|)` (float32, correctly rounded square root as on CUDA; torch's
    /// CPU kernel is off by one ulp for some values).
    ///
    /// # Errors
    /// As [`BrownianNoise::increments`].
    pub fn sample(&mut self, sigma: f32, sigma_next: f32) -> Result<Vec<f32>> {
        let scale = (sigma_next - sigma).abs().sqrt();
        let mut w = self.increments(sigma, sigma_next)?;
        for v in &mut w {
            *v /= scale;
        }
        Ok(w)
    }
}

impl NoiseSource for BrownianNoise {
    fn prepare(&mut self, sigmas: &[f32]) -> Result<()> {
        let min = sigmas
            .iter()
            .copied()
            .filter(|&s| s > 0.0)
            .fold(f32::INFINITY, f32::min);
        let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.build(min, max)
    }

    fn noise(&mut self, sigma: f32, sigma_next: f32) -> Result<Tensor> {
        let data = self.sample(sigma, sigma_next)?;
        let [c, h, w] = self.shape;
        Ok(Tensor::from_vec(
            data,
            (self.seeds.len(), c, h, w),
            &Device::Cpu,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_time_rounds_to_six_decimals() {
        assert_eq!(round_time(14.614_640_235_900_879), 14.614_64);
        assert_eq!(round_time(0.029_167_158_901_691_437), 0.029_167);
        assert_eq!(round_time(1.000_000_499_9), 1.0);
    }

    #[test]
    fn integers_become_words_like_numpy() {
        assert_eq!(int_to_words(0), vec![0]);
        assert_eq!(int_to_words(5), vec![5]);
        assert_eq!(int_to_words((7u128 << 32) | 9), vec![9, 7]);
    }

    #[test]
    fn halves_add_up_to_the_whole() {
        let mut tree = BrownianTree::new(0.03, 14.6, 32, 1234, RngSource::Cpu).unwrap();
        let whole = tree.increment_between(0.03, 14.6).unwrap();
        let a = tree.increment_between(0.03, 2.5).unwrap();
        let b = tree.increment_between(2.5, 14.6).unwrap();
        for i in 0..32 {
            assert!((a[i] + b[i] - whole[i]).abs() < 1e-5, "{i}");
        }
        // Asking again gives the same values.
        assert_eq!(tree.increment_between(0.03, 2.5).unwrap(), a);
    }
}
