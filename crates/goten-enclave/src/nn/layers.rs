//! The layers: conv and dense with optional bias (linear, through a [`LinearBackend`]), ReLU,
//! max and average pooling, BatchNorm2d, dropout and flatten (non-linear, float32 inside the
//! enclave, PyTorch semantics), and the three structural layers that make residual blocks out
//! of a flat list: [`Layer::Fork`], [`Layer::Swap`] and [`Layer::Add`].
//!
//! Where it sits: a [`super::Model`] is a flat `Vec<Layer>` run front to back (forward) and back
//! to front (backward). A residual block `y = body(x) + shortcut(x)` is the sequence
//! `Fork, body.., [Swap, shortcut..], Add`: Fork saves x on the pass's stack, Swap exchanges the
//! body's output with the saved x so the shortcut layers (a projection) run on x, and Add adds the
//! stack's top. Backward mirrors it on a stack of gradients. Keeping the list flat keeps op
//! numbering, checkpoints, export and state digests one loop over layers.
//!
//! Each layer caches what its backward pass needs during a training forward pass. Reductions
//! run in a fixed order (f64 accumulators where sums are long), so results are deterministic.

use goten_field::{BilinearOp, Conv2dParams, SecretKey};

use super::batchnorm::{BnCache, batchnorm_backward, batchnorm_forward};
use super::{LinearBackend, NnError, Prepared, elementwise as ew, pool};
use crate::SecretTensor;

/// A trainable tensor with its gradient and momentum buffer. Debug shows the shape only.
pub struct Param {
    /// Current value.
    pub value: SecretTensor,
    /// Gradient of the last backward pass.
    pub grad: SecretTensor,
    /// SGD momentum buffer (created at the first update).
    pub momentum: Option<SecretTensor>,
}

impl Param {
    /// A parameter with the given value.
    pub fn new(value: SecretTensor) -> Self {
        let grad = SecretTensor::zeros(value.shape());
        Param {
            value,
            grad,
            momentum: None,
        }
    }
}

/// One forward pass's context: training or evaluation, the dropout stream, and the stack of
/// saved activations of the residual blocks in progress.
pub struct Pass<'k> {
    /// Batch statistics, caching and dropout (training) or running statistics (evaluation).
    pub train: bool,
    /// Dropout's key and step (needed only by a training pass through a dropout layer).
    pub noise: Option<(&'k SecretKey, u64)>,
    stack: Vec<SecretTensor>,
}

impl<'k> Pass<'k> {
    /// A pass without a dropout stream.
    pub fn new(train: bool) -> Self {
        Pass {
            train,
            noise: None,
            stack: Vec::new(),
        }
    }

    /// A training pass whose dropout layers draw from `(key, step)`.
    pub fn with_noise(train: bool, key: &'k SecretKey, step: u64) -> Self {
        Pass {
            train,
            noise: Some((key, step)),
            stack: Vec::new(),
        }
    }

    /// Activations saved by Fork and not yet consumed by Add (0 after a whole model).
    pub fn pending(&self) -> usize {
        self.stack.len()
    }
}

/// The backward pass's stack of gradients for the residual blocks in progress (`None`: no
/// gradient flows on that path).
pub type GradStack = Vec<Option<SecretTensor>>;

/// What a linear layer's training forward pass keeps for its backward pass: its input, and the
/// backend's preparation of the input and the weight (goten mode: quantized once per step).
pub struct Saved {
    x: SecretTensor,
    prepared: [Option<Prepared>; 2],
}

/// One layer of a model. Debug shows its kind and shapes, never values (weights, statistics,
/// masks and pooling choices are all secret).
pub enum Layer {
    /// 2-D convolution: weight `[out, in, k, k]`, optional bias `[out]`.
    Conv {
        /// Weight.
        w: Param,
        /// Bias.
        b: Option<Param>,
        /// Stride and padding.
        params: Conv2dParams,
        /// False for the first layer: nobody needs the gradient of the input images.
        input_grad: bool,
        /// Input of the last training forward pass, and its and the weight's preparation.
        cache: Option<Saved>,
    },
    /// Fully connected: weight `[out, in]`, optional bias `[out]`.
    Dense {
        /// Weight.
        w: Param,
        /// Bias.
        b: Option<Param>,
        /// Whether to compute the input gradient.
        input_grad: bool,
        /// Input of the last training forward pass, and its and the weight's preparation.
        cache: Option<Saved>,
    },
    /// max(x, 0).
    Relu {
        /// Which inputs were positive.
        mask: Option<Vec<bool>>,
    },
    /// Max pooling with a square window, stride and padding.
    MaxPool {
        /// Window size.
        k: usize,
        /// Stride.
        s: usize,
        /// Padding on every side (never chosen as a maximum).
        p: usize,
        /// Input shape and the flat input index of each output's maximum.
        cache: Option<(Vec<usize>, Vec<usize>)>,
    },
    /// Average pooling with a square window and stride, no padding.
    AvgPool {
        /// Window size.
        k: usize,
        /// Stride.
        s: usize,
        /// Input shape of the last training forward pass.
        in_shape: Option<Vec<usize>>,
    },
    /// Mean of each channel: `[n, c, h, w] -> [n, c]`.
    GlobalAvgPool {
        /// Input shape of the last training forward pass.
        in_shape: Option<Vec<usize>>,
    },
    /// BatchNorm2d (eps 1e-5, momentum 0.1).
    BatchNorm {
        /// Scale.
        gamma: Param,
        /// Shift.
        beta: Param,
        /// Running mean (evaluation).
        running_mean: Vec<f32>,
        /// Running unbiased variance (evaluation).
        running_var: Vec<f32>,
        /// Cache of the last training forward pass.
        cache: Option<BnCache>,
    },
    /// Inverted dropout with drop probability `p` (training only; identity in evaluation).
    Dropout {
        /// Drop probability in [0, 1).
        p: f32,
        /// Which units were kept in the last training forward pass.
        mask: Option<Vec<bool>>,
    },
    /// `[n, ...] -> [n, prod(...)]`.
    Flatten {
        /// Input shape of the last forward pass.
        in_shape: Option<Vec<usize>>,
    },
    /// Start of a residual block: saves the activation for the shortcut.
    Fork,
    /// Between a residual block's body and its projection shortcut: the body's output is saved
    /// and the block's input comes back for the shortcut layers.
    Swap,
    /// End of a residual block: adds the saved tensor (body output or block input).
    Add,
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param(shape {:?}, <redacted>)", self.value.shape())
    }
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bias = |b: &Option<Param>| if b.is_some() { " + bias" } else { "" };
        match self {
            Layer::Conv { w, b, params, .. } => write!(
                f,
                "Conv(w {:?}{}, {params:?}, <redacted>)",
                w.value.shape(),
                bias(b)
            ),
            Layer::Dense { w, b, .. } => {
                write!(f, "Dense(w {:?}{}, <redacted>)", w.value.shape(), bias(b))
            }
            Layer::Relu { .. } => f.write_str("Relu(<redacted>)"),
            Layer::MaxPool { k, s, p, .. } => {
                write!(f, "MaxPool(k {k}, stride {s}, pad {p}, <redacted>)")
            }
            Layer::AvgPool { k, s, .. } => write!(f, "AvgPool(k {k}, stride {s})"),
            Layer::GlobalAvgPool { .. } => f.write_str("GlobalAvgPool"),
            Layer::BatchNorm { running_mean, .. } => {
                write!(f, "BatchNorm({} channels, <redacted>)", running_mean.len())
            }
            Layer::Dropout { p, .. } => write!(f, "Dropout(p {p}, <redacted>)"),
            Layer::Flatten { .. } => f.write_str("Flatten"),
            Layer::Fork => f.write_str("Fork"),
            Layer::Swap => f.write_str("Swap"),
            Layer::Add => f.write_str("Add"),
        }
    }
}

/// The `[n, c, h, w]` dimensions of `x`, or a shape error naming the layer.
pub(super) fn nchw(x: &SecretTensor, what: &str) -> Result<(usize, usize, usize, usize), NnError> {
    match *x.shape() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(goten_field::ShapeError::new(format!(
            "{what} needs an NCHW input, got {:?}",
            x.shape()
        ))
        .into()),
    }
}

fn unbalanced(what: &str) -> NnError {
    goten_field::ShapeError::new(format!(
        "{what} without a matching Fork: residual blocks are Fork, body, [Swap, shortcut], Add"
    ))
    .into()
}

/// The input gradient of a linear layer and its weight (and bias) gradients.
fn linear_backward(
    be: &mut dyn LinearBackend,
    op: u64,
    (wgrad, igrad): (BilinearOp, BilinearOp),
    (w, b, input_grad): (&mut Param, &mut Option<Param>, bool),
    saved: Saved,
    dy: SecretTensor,
) -> Result<Option<SecretTensor>, NnError> {
    // The weight is unchanged since the forward pass (the optimizer steps after the whole
    // backward pass), so its and the input's quantization are reused, and dy's is shared by
    // the two gradients.
    let [px, pw] = &saved.prepared;
    let (grad, [pdy, _]) =
        be.bilinear_reusing(op + 2, &wgrad, (&dy, None), (&saved.x, px.as_ref()))?;
    w.grad = grad;
    if let Some(b) = b {
        ew::bias_grad(&dy, b.grad.expose_mut());
    }
    if !input_grad {
        return Ok(None);
    }
    let dx = be.bilinear_reusing(op + 1, &igrad, (&dy, pdy.as_ref()), (&w.value, pw.as_ref()))?;
    Ok(Some(dx.0))
}

impl Layer {
    /// Short name (for state descriptions and errors).
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Conv { .. } => "conv",
            Layer::Dense { .. } => "dense",
            Layer::Relu { .. } => "relu",
            Layer::MaxPool { .. } => "maxpool",
            Layer::AvgPool { .. } => "avgpool",
            Layer::GlobalAvgPool { .. } => "global-avgpool",
            Layer::BatchNorm { .. } => "batchnorm",
            Layer::Dropout { .. } => "dropout",
            Layer::Flatten { .. } => "flatten",
            Layer::Fork => "fork",
            Layer::Swap => "swap",
            Layer::Add => "add",
        }
    }

    /// Trainable parameters, in a fixed order (weight, then bias; BN scale, then shift).
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Layer::Conv { w, b, .. } | Layer::Dense { w, b, .. } => {
                std::iter::once(w).chain(b.as_ref()).collect()
            }
            Layer::BatchNorm { gamma, beta, .. } => vec![gamma, beta],
            _ => vec![],
        }
    }

    /// Trainable parameters, mutable, in the order of [`Self::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Layer::Conv { w, b, .. } | Layer::Dense { w, b, .. } => {
                std::iter::once(w).chain(b.as_mut()).collect()
            }
            Layer::BatchNorm { gamma, beta, .. } => vec![gamma, beta],
            _ => vec![],
        }
    }

    /// Forward pass. `op` numbers this layer's linear ops (forward `op`, input gradient
    /// `op + 1`, weight gradient `op + 2`; dropout draws under `op` too).
    pub fn forward(
        &mut self,
        x: SecretTensor,
        pass: &mut Pass<'_>,
        be: &mut dyn LinearBackend,
        op: u64,
    ) -> Result<SecretTensor, NnError> {
        let train = pass.train;
        match self {
            Layer::Conv {
                w,
                b,
                params,
                cache,
                ..
            } => {
                let fwd = BilinearOp::Conv2dForward(*params);
                let (mut y, prepared) =
                    be.bilinear_reusing(op, &fwd, (&x, None), (&w.value, None))?;
                if let Some(b) = b {
                    ew::add_bias(&mut y, b.value.expose());
                }
                *cache = train.then_some(Saved { x, prepared });
                Ok(y)
            }
            Layer::Dense { w, b, cache, .. } => {
                let fwd = BilinearOp::MatmulForward;
                let (mut y, prepared) =
                    be.bilinear_reusing(op, &fwd, (&x, None), (&w.value, None))?;
                if let Some(b) = b {
                    ew::add_bias(&mut y, b.value.expose());
                }
                *cache = train.then_some(Saved { x, prepared });
                Ok(y)
            }
            Layer::Relu { mask } => {
                let mut y = x;
                let m = ew::relu(&mut y);
                *mask = train.then_some(m);
                Ok(y)
            }
            Layer::MaxPool { k, s, p, cache } => {
                let (y, arg) = pool::maxpool(&x, *k, *s, *p)?;
                *cache = train.then(|| (x.shape().to_vec(), arg));
                Ok(y)
            }
            Layer::AvgPool { k, s, in_shape } => {
                let y = pool::avgpool(&x, *k, *s)?;
                *in_shape = train.then(|| x.shape().to_vec());
                Ok(y)
            }
            Layer::GlobalAvgPool { in_shape } => {
                let y = pool::global_avgpool(&x)?;
                *in_shape = train.then(|| x.shape().to_vec());
                Ok(y)
            }
            Layer::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                cache,
            } => {
                let (y, c) = batchnorm_forward(x, gamma, beta, running_mean, running_var, train)?;
                *cache = c;
                Ok(y)
            }
            Layer::Dropout { p, mask } => {
                let mut y = x;
                *mask = None;
                if train && *p > 0.0 {
                    let (key, step) = pass.noise.ok_or_else(|| {
                        NnError::Numeric("a training pass through dropout needs a stream".into())
                    })?;
                    *mask = Some(ew::dropout(&mut y, *p, key, step, op));
                }
                Ok(y)
            }
            Layer::Flatten { in_shape } => {
                let s = x.shape().to_vec();
                let n = s.first().copied().unwrap_or(0);
                let rest = s[1..].iter().product::<usize>();
                *in_shape = Some(s);
                Ok(x.reshaped(&[n, rest]).expect("same element count"))
            }
            Layer::Fork => {
                pass.stack.push(x.clone());
                Ok(x)
            }
            Layer::Swap => {
                let top = pass.stack.last_mut().ok_or_else(|| unbalanced("Swap"))?;
                Ok(std::mem::replace(top, x))
            }
            Layer::Add => {
                let saved = pass.stack.pop().ok_or_else(|| unbalanced("Add"))?;
                let mut y = x;
                ew::add_into(&mut y, &saved)?;
                Ok(y)
            }
        }
    }

    /// Backward pass from `dy` (`None`: no gradient reaches this layer, which only the
    /// structural layers need to know): stores parameter gradients, returns the input gradient
    /// (`None` where no one needs it). `grads` carries the residual blocks' gradients.
    pub fn backward(
        &mut self,
        dy: Option<SecretTensor>,
        grads: &mut GradStack,
        be: &mut dyn LinearBackend,
        op: u64,
        index: usize,
    ) -> Result<Option<SecretTensor>, NnError> {
        let dy = match (&mut *self, dy) {
            (Layer::Fork, g) => {
                let saved = grads.pop().ok_or_else(|| unbalanced("Fork"))?;
                return Ok(match (g, saved) {
                    (Some(mut a), Some(b)) => {
                        ew::add_into(&mut a, &b)?;
                        Some(a)
                    }
                    (a, b) => a.or(b),
                });
            }
            (Layer::Swap, g) => {
                let top = grads.last_mut().ok_or_else(|| unbalanced("Swap"))?;
                return Ok(std::mem::replace(top, g));
            }
            (Layer::Add, g) => {
                grads.push(g.clone());
                return Ok(g);
            }
            (_, None) => return Ok(None),
            (_, Some(d)) => d,
        };
        let no_cache = || NnError::NoCache(index);
        match self {
            Layer::Conv {
                w,
                b,
                params,
                input_grad,
                cache,
            } => {
                let saved = cache.take().ok_or_else(no_cache)?;
                let ops = (
                    BilinearOp::Conv2dWeightGrad {
                        params: *params,
                        kernel_hw: (w.value.shape()[2], w.value.shape()[3]),
                    },
                    BilinearOp::Conv2dInputGrad {
                        params: *params,
                        input_hw: (saved.x.shape()[2], saved.x.shape()[3]),
                    },
                );
                linear_backward(be, op, ops, (w, b, *input_grad), saved, dy)
            }
            Layer::Dense {
                w,
                b,
                input_grad,
                cache,
            } => {
                let saved = cache.take().ok_or_else(no_cache)?;
                let ops = (BilinearOp::MatmulWeightGrad, BilinearOp::MatmulInputGrad);
                linear_backward(be, op, ops, (w, b, *input_grad), saved, dy)
            }
            Layer::Relu { mask } | Layer::Dropout { mask, .. } => {
                let Some(m) = mask.take() else {
                    // Dropout in evaluation (or with p = 0) is the identity.
                    return match self {
                        Layer::Dropout { .. } => Ok(Some(dy)),
                        _ => Err(no_cache()),
                    };
                };
                let mut dx = dy;
                ew::mask(&mut dx, &m);
                if let Layer::Dropout { p, .. } = self {
                    ew::scale(&mut dx, 1.0 / (1.0 - *p));
                }
                Ok(Some(dx))
            }
            Layer::MaxPool { cache, .. } => {
                let (shape, arg) = cache.take().ok_or_else(no_cache)?;
                Ok(Some(pool::maxpool_backward(&dy, &shape, &arg)))
            }
            Layer::AvgPool { k, s, in_shape } => {
                let shape = in_shape.take().ok_or_else(no_cache)?;
                Ok(Some(pool::avgpool_backward(&dy, &shape, *k, *s)))
            }
            Layer::GlobalAvgPool { in_shape } => {
                let shape = in_shape.take().ok_or_else(no_cache)?;
                Ok(Some(pool::global_avgpool_backward(&dy, &shape)))
            }
            Layer::BatchNorm {
                gamma, beta, cache, ..
            } => {
                let c = cache.take().ok_or_else(no_cache)?;
                Ok(Some(batchnorm_backward(dy, &c, gamma, beta)))
            }
            Layer::Flatten { in_shape } => {
                let s = in_shape.take().ok_or_else(no_cache)?;
                Ok(Some(dy.reshaped(&s).expect("same element count")))
            }
            Layer::Fork | Layer::Swap | Layer::Add => unreachable!("handled above"),
        }
    }
}
