//! What a model is made of: each layer's output shape, parameters and multiply-accumulates.
//!
//! Where it sits: beside [`super::model`], read by `goten model show`. It looks only at the
//! model's structure (weight shapes, strides, window sizes), never at weight values, so it is
//! safe to print outside an enclave. MACs count the products of the linear layers per image
//! (padded positions included, as the kernels compute them); the other layers are elementwise.

use goten_field::ShapeError;

use super::layers::Layer;
use super::model::Model;
use super::pool::pooled;

/// One row of a model summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// Export prefix (`features.0`, `layer1.0.conv1`; empty for unnamed layers).
    pub name: String,
    /// Layer kind with its hyper-parameters, e.g. `conv 3x3 s1 p1`.
    pub layer: String,
    /// Output shape without the batch dimension.
    pub output: Vec<usize>,
    /// Trainable parameters (BatchNorm's running statistics are buffers, not counted).
    pub params: usize,
    /// Multiply-accumulates per image in the forward pass.
    pub macs: u64,
}

impl Model {
    /// Layer-by-layer summary for inputs of `input` (`[c, h, w]`).
    pub fn summary(&self, input: &[usize]) -> Result<Vec<LayerInfo>, ShapeError> {
        let mut shape = input.to_vec();
        let mut stack: Vec<Vec<usize>> = Vec::new();
        let mut rows = Vec::with_capacity(self.layers().len());
        for (i, layer) in self.layers().iter().enumerate() {
            let bad = |what: &str| ShapeError::new(format!("layer {i} ({what}) after {shape:?}"));
            let params: usize = layer.params().iter().map(|p| p.value.len()).sum();
            let (name, macs) = match layer {
                Layer::Conv { w, params, .. } => {
                    let &[o, c, kh, kw] = w.value.shape() else {
                        return Err(bad("conv weight is not 4-d"));
                    };
                    let &[ci, h, wd] = shape.as_slice() else {
                        return Err(bad("conv needs [c, h, w]"));
                    };
                    if ci != c {
                        return Err(bad("conv input channels"));
                    }
                    let (ho, wo) = params.output_hw((h, wd), (kh, kw))?;
                    shape = vec![o, ho, wo];
                    let name = format!("conv {kh}x{kw} s{} p{}", params.stride.0, params.padding.0);
                    (name, (o * ho * wo * c * kh * kw) as u64)
                }
                Layer::Dense { w, .. } => {
                    let &[o, n] = w.value.shape() else {
                        return Err(bad("dense weight is not 2-d"));
                    };
                    if shape != [n] {
                        return Err(bad("dense input features"));
                    }
                    shape = vec![o];
                    ("dense".to_string(), (o * n) as u64)
                }
                Layer::BatchNorm { .. } => ("batchnorm".to_string(), 0),
                Layer::MaxPool { k, s, .. } | Layer::AvgPool { k, s, .. } => {
                    let p = match layer {
                        Layer::MaxPool { p, .. } => *p,
                        _ => 0,
                    };
                    let &[c, h, wd] = shape.as_slice() else {
                        return Err(bad("pooling needs [c, h, w]"));
                    };
                    let (Some(ho), Some(wo)) = (pooled(h, *k, *s, p), pooled(wd, *k, *s, p)) else {
                        return Err(bad("pooling window larger than its input"));
                    };
                    shape = vec![c, ho, wo];
                    let pad = if p > 0 {
                        format!(" p{p}")
                    } else {
                        String::new()
                    };
                    (format!("{} {k}x{k} s{s}{pad}", layer.name()), 0)
                }
                Layer::GlobalAvgPool { .. } => {
                    let &[c, _, _] = shape.as_slice() else {
                        return Err(bad("global average pooling needs [c, h, w]"));
                    };
                    shape = vec![c];
                    ("global-avgpool".to_string(), 0)
                }
                Layer::Dropout { p, .. } => (format!("dropout p{p}"), 0),
                Layer::Relu { .. } => ("relu".to_string(), 0),
                Layer::Flatten { .. } => {
                    shape = vec![shape.iter().product()];
                    ("flatten".to_string(), 0)
                }
                Layer::Fork => {
                    stack.push(shape.clone());
                    ("fork".to_string(), 0)
                }
                Layer::Swap => {
                    let top = stack
                        .last_mut()
                        .ok_or_else(|| bad("swap outside a block"))?;
                    std::mem::swap(top, &mut shape);
                    ("swap".to_string(), 0)
                }
                Layer::Add => {
                    if stack.pop().as_ref() != Some(&shape) {
                        return Err(bad("residual add of unequal shapes"));
                    }
                    ("add".to_string(), 0)
                }
            };
            rows.push(LayerInfo {
                name: self.layer_name(i).to_string(),
                layer: name,
                output: shape.clone(),
                params,
                macs,
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::ModelKind;

    /// VGG-11-BN for CIFAR-10, counted by hand: conv weights 3*64*9 + 64*128*9 + 128*256*9 +
    /// 256*256*9 + 256*512*9 + 3*512*512*9, BN 2 * (64+128+2*256+4*512), fc 2*512*512 + 512*10.
    #[test]
    fn vgg11_counts_match_a_hand_count() {
        let m = ModelKind::Vgg11.build(1, 10).unwrap();
        let rows = m.summary(&ModelKind::Vgg11.input_shape()).unwrap();
        let params: usize = rows.iter().map(|r| r.params).sum();
        let conv = 3 * 64 * 9 + 64 * 128 * 9 + 128 * 256 * 9 + 256 * 256 * 9 + 256 * 512 * 9;
        let want = conv
            + 3 * 512 * 512 * 9
            + 2 * (64 + 128 + 2 * 256 + 4 * 512)
            + 2 * 512 * 512
            + 512 * 10;
        assert_eq!(params, want);
        // Per image: output positions x input channels x taps, layer by layer.
        let macs: u64 = rows.iter().map(|r| r.macs).sum();
        let convs: [(u64, u64, u64); 8] = [
            (64, 3, 32 * 32),
            (128, 64, 16 * 16),
            (256, 128, 8 * 8),
            (256, 256, 8 * 8),
            (512, 256, 4 * 4),
            (512, 512, 4 * 4),
            (512, 512, 2 * 2),
            (512, 512, 2 * 2),
        ];
        let want: u64 =
            convs.iter().map(|&(o, c, hw)| o * c * hw * 9).sum::<u64>() + 2 * 512 * 512 + 512 * 10;
        assert_eq!(macs, want);
        assert_eq!(rows.last().unwrap().output, vec![10]);
        assert_eq!(rows[0].layer, "conv 3x3 s1 p1");
        assert!(
            rows.iter()
                .any(|r| r.layer == "maxpool 2x2 s2" && r.output == [64, 16, 16])
        );
    }

    #[test]
    fn small_model_ends_in_its_classes() {
        let m = ModelKind::Small.build(1, 7).unwrap();
        let rows = m.summary(&[3, 32, 32]).unwrap();
        assert_eq!(rows.last().unwrap().output, vec![7]);
        assert!(
            m.summary(&[3, 16, 16]).is_err(),
            "dense input no longer fits"
        );
    }
}
