//! AdamW (decoupled weight decay, Loshchilov & Hutter) and the learning
//! rate schedule: linear warm-up, then cosine decay to `min_ratio * lr`.

/// AdamW's hyperparameters.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// First and second moments, laid out as the parameters.
#[derive(Clone, Debug)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Moments {
    pub fn new(n: usize) -> Moments {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

impl AdamW {
    /// One update of `params` by `grad` at learning rate `lr` for step
    /// `t` (1-based, for bias correction).
    pub fn step(&self, params: &mut [f32], grad: &[f32], mo: &mut Moments, t: u64, lr: f32) {
        let b1c = 1.0 - (self.beta1 as f64).powf(t as f64);
        let b2c = 1.0 - (self.beta2 as f64).powf(t as f64);
        let (b1c, b2c) = (b1c as f32, b2c as f32);
        for i in 0..params.len() {
            let g = grad[i];
            let m = self.beta1 * mo.m[i] + (1.0 - self.beta1) * g;
            let v = self.beta2 * mo.v[i] + (1.0 - self.beta2) * g * g;
            mo.m[i] = m;
            mo.v[i] = v;
            let mh = m / b1c;
            let vh = v / b2c;
            params[i] -= lr * (mh / (vh.sqrt() + self.eps) + self.weight_decay * params[i]);
        }
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear
/// warm-up over `warmup` steps to `lr`, then cosine decay to
/// `min_ratio * lr` at the last step.
pub fn schedule(lr: f32, step: u64, total: u64, warmup: u64, min_ratio: f32) -> f32 {
    if step < warmup {
        return lr * (step + 1) as f32 / warmup as f32;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup) as f32 / span as f32).min(1.0);
    let cos = 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
    lr * (min_ratio + (1.0 - min_ratio) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((schedule(1.0, 0, 100, 10, 0.1) - 0.1).abs() < 1e-6);
        assert!((schedule(1.0, 9, 100, 10, 0.1) - 1.0).abs() < 1e-6);
        assert!((schedule(1.0, 10, 100, 10, 0.1) - 1.0).abs() < 1e-6);
        assert!((schedule(1.0, 100, 100, 10, 0.1) - 0.1).abs() < 1e-6);
        let mid = schedule(1.0, 55, 100, 10, 0.0);
        assert!((mid - 0.5).abs() < 1e-5, "{mid}");
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // With bias correction the first step is lr * sign(g) (eps aside).
        let o = AdamW {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut p = vec![1.0, -1.0];
        let mut mo = Moments::new(2);
        o.step(&mut p, &[0.5, -2.0], &mut mo, 1, 0.1);
        assert!(
            (p[0] - 0.9).abs() < 1e-5 && (p[1] + 0.9).abs() < 1e-5,
            "{p:?}"
        );
    }
}
