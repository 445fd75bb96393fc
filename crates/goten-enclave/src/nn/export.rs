//! Model export for the model owner: PyTorch-compatible names and layouts.
//!
//! Where it sits: at the end of training, inside the enclave, the trained weights are listed
//! under each layer's export prefix ([`Model::layer_name`]): torchvision's `vgg11_bn` scheme
//! for sequential models (layers before the flatten are `features.{i}` with `i` the layer's
//! index, fc layers after it `classifier.{j}` counted from the flatten: 0, 2, 4 for VGG-11),
//! and explicit names such as `layer1.0.conv1` for ResNets (torchvision's `resnet18` names).
//! Conv weights are `[out, in, kh, kw]`, fc weights `[out, in]`, biases `[out]` where the layer
//! has one, BN tensors `weight`, `bias`, `running_mean`, `running_var` (and
//! `num_batches_tracked`, written by the caller). All float32.
//! [`import`] is the inverse, for `goten predict`.

use super::NnError;
use super::layers::Layer;
use super::model::Model;

/// One exported tensor. Debug shows the name and shape, not the values.
#[derive(Clone)]
pub struct Named {
    /// PyTorch state-dict name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

fn prefix(model: &Model, index: usize) -> String {
    model.layer_name(index).to_string()
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Named({} {:?}, <values>)", self.name, self.shape)
    }
}

/// The model's weights and statistics under PyTorch names.
pub fn export(model: &Model) -> Vec<Named> {
    let mut out = Vec::new();
    for (i, l) in model.layers().iter().enumerate() {
        let p = prefix(model, i);
        match l {
            Layer::Conv { w, b, .. } | Layer::Dense { w, b, .. } => {
                out.push(Named {
                    name: format!("{p}.weight"),
                    shape: w.value.shape().to_vec(),
                    data: w.value.expose().to_vec(),
                });
                if let Some(b) = b {
                    out.push(Named {
                        name: format!("{p}.bias"),
                        shape: b.value.shape().to_vec(),
                        data: b.value.expose().to_vec(),
                    });
                }
            }
            Layer::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                ..
            } => {
                let c = running_mean.len();
                out.push(Named {
                    name: format!("{p}.weight"),
                    shape: vec![c],
                    data: gamma.value.expose().to_vec(),
                });
                out.push(Named {
                    name: format!("{p}.bias"),
                    shape: vec![c],
                    data: beta.value.expose().to_vec(),
                });
                out.push(Named {
                    name: format!("{p}.running_mean"),
                    shape: vec![c],
                    data: running_mean.clone(),
                });
                out.push(Named {
                    name: format!("{p}.running_var"),
                    shape: vec![c],
                    data: running_var.clone(),
                });
            }
            _ => {}
        }
    }
    out
}

/// Names of the batch-norm layers (for `num_batches_tracked`).
pub fn batchnorm_prefixes(model: &Model) -> Vec<String> {
    model
        .layers()
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, Layer::BatchNorm { .. }))
        .map(|(i, _)| prefix(model, i))
        .collect()
}

/// Looks a tensor up by name: its shape and values.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<(Vec<usize>, Vec<f32>)>;

/// Loads weights by name into `model`; every expected tensor must be present with its shape.
/// On failure the model is partly loaded (callers discard it), and the error lists every
/// missing name and every wrong shape (the first 20, then a count).
pub fn import(model: &mut Model, get: Lookup<'_>) -> Result<(), NnError> {
    let names: Vec<String> = (0..model.layers().len())
        .map(|i| prefix(model, i))
        .collect();
    let mut problems: Vec<String> = Vec::new();
    for (l, p) in model.layers_mut().iter_mut().zip(names) {
        let mut fetch = |suffix: &str, dst: &mut [f32], shape: &[usize]| {
            let name = format!("{p}.{suffix}");
            match get(&name) {
                None => problems.push(format!("lacks {name}")),
                Some((s, d)) if s != shape || d.len() != dst.len() => {
                    problems.push(format!("{name} has shape {s:?}, the model needs {shape:?}"))
                }
                Some((_, d)) => dst.copy_from_slice(&d),
            }
        };
        match l {
            Layer::Conv { w, b, .. } | Layer::Dense { w, b, .. } => {
                let shape = w.value.shape().to_vec();
                fetch("weight", w.value.expose_mut(), &shape);
                if let Some(b) = b {
                    let shape = b.value.shape().to_vec();
                    fetch("bias", b.value.expose_mut(), &shape);
                }
            }
            Layer::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                ..
            } => {
                let c = [running_mean.len()];
                fetch("weight", gamma.value.expose_mut(), &c);
                fetch("bias", beta.value.expose_mut(), &c);
                fetch("running_mean", running_mean, &c);
                fetch("running_var", running_var, &c);
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    let mut msg = problems.into_iter().take(20).collect::<Vec<_>>().join("; ");
    if n > 20 {
        msg.push_str(&format!("; and {} more", n - 20));
    }
    Err(NnError::Numeric(format!(
        "{n} tensor(s) do not fit the model: {msg}"
    )))
}

/// [`import`] from a list of named tensors (an export, a provisioned model, `--init` weights).
pub fn import_named(model: &mut Model, tensors: &[Named]) -> Result<(), NnError> {
    let get = |n: &str| {
        tensors
            .iter()
            .find(|t| t.name == n)
            .map(|t| (t.shape.clone(), t.data.clone()))
    };
    import(model, &get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ModelKind;

    #[test]
    fn vgg11_names_follow_torchvision() {
        let m = ModelKind::Vgg11.build(1, 10).unwrap();
        let names: Vec<String> = export(&m).into_iter().map(|n| n.name).collect();
        for want in [
            "features.0.weight",
            "features.1.running_var",
            "features.4.weight",
            "features.25.weight",
            "features.26.bias",
            "classifier.0.weight",
            "classifier.2.weight",
            "classifier.4.weight",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
        // 8 convs + 8 BN x 4 + 3 fc.
        assert_eq!(names.len(), 8 + 32 + 3);
        let fc = export(&m)
            .into_iter()
            .find(|n| n.name == "classifier.4.weight")
            .unwrap();
        assert_eq!(fc.shape, vec![10, 512]);
        assert_eq!(batchnorm_prefixes(&m)[0], "features.1");
    }

    #[test]
    fn import_round_trips_and_checks_shapes() {
        let a = ModelKind::Small.build(1, 10).unwrap();
        let mut b = ModelKind::Small.build(2, 10).unwrap();
        let ex = export(&a);
        let get = |n: &str| {
            ex.iter()
                .find(|t| t.name == n)
                .map(|t| (t.shape.clone(), t.data.clone()))
        };
        import(&mut b, &get).unwrap();
        assert_eq!(a.state_digest(), b.state_digest());
        let bad = |n: &str| {
            if n == "classifier.0.weight" {
                Some((vec![1], vec![0.0]))
            } else {
                get(n)
            }
        };
        let err = import(&mut b, &bad).unwrap_err().to_string();
        assert!(err.contains("classifier.0.weight has shape"), "{err}");
        // Every problem is listed: a VGG-11 file offered to the small model.
        let vgg = export(&ModelKind::Vgg11.build(1, 10).unwrap());
        let other = |n: &str| {
            vgg.iter()
                .find(|t| t.name == n)
                .map(|t| (t.shape.clone(), t.data.clone()))
        };
        let err = import(&mut b, &other).unwrap_err().to_string();
        assert!(
            err.contains("features.0.weight has shape [64, 3, 3, 3]")
                && err.contains("classifier.0.weight has shape [512, 512]"),
            "{err}"
        );
    }

    /// What `goten train --export` and `goten predict --weights` do, for every built-in model:
    /// a model's export imported into a differently seeded model of the same kind predicts
    /// exactly what the original does.
    #[test]
    fn every_built_in_model_exports_and_imports_to_the_same_predictions() {
        for kind in crate::nn::zoo::ALL {
            let mut a = kind.build(1, 10).unwrap();
            let mut b = kind.build(2, 10).unwrap();
            let shape = a.input_shape();
            let spec = crate::nn::input::InputSpec {
                shape,
                ..if shape[0] == 1 {
                    crate::nn::input::InputSpec::mnist()
                } else {
                    crate::nn::input::InputSpec::cifar10()
                }
            };
            let img: Vec<u8> = (0..spec.image_bytes())
                .map(|i| (i * 7 % 251) as u8)
                .collect();
            let pa = a.predict_logits(&spec, &[&img]).unwrap();
            let before = b.predict_logits(&spec, &[&img]).unwrap();
            assert_ne!(pa, before, "{}: seeds differ", kind.name());
            import_named(&mut b, &export(&a)).unwrap();
            assert_eq!(
                pa,
                b.predict_logits(&spec, &[&img]).unwrap(),
                "{}",
                kind.name()
            );
        }
    }
}
