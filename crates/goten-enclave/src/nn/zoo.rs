//! The built-in models: what `--model NAME` builds.
//!
//! Where it sits: the job names a model; E0 and E1 (and plain and enclave runs) build it here
//! from the job's seed, so both enclaves start from the same weights without any being sent.
//! Export names follow torchvision (`vgg11_bn`/`vgg16_bn` feature and classifier indices, the
//! `resnet18` state-dict names), so a goten model loads into the matching PyTorch module.

use goten_field::Conv2dParams;

use super::NnError;
use super::builder::Builder;
use super::model::Model;

/// The built-in models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Three conv-BN-ReLU-pool blocks (16, 32, 32 channels) and one fc layer over 512
    /// features: quick runs and tests.
    Small,
    /// VGG-11 with batch norm for 32x32 inputs (PROTOCOL.md section 5).
    Vgg11,
    /// VGG-16 with batch norm for 32x32 inputs, the classifier of [`ModelKind::Vgg11`].
    Vgg16,
    /// The CIFAR ResNet-20 of He et al. (2016): a 3x3 stem with 16 channels, three stages of
    /// three basic blocks (16, 32, 64 channels), global average pooling, fc with bias.
    /// Shortcuts that change shape are 1x1 conv + BN projections (the paper's option B).
    Resnet20,
    /// torchvision's ResNet-18 with the CIFAR stem (3x3 conv1, stride 1, no max-pool).
    Resnet18,
    /// torchvision's ResNet-18 with its ImageNet stem (7x7 conv1 stride 2, 3x3 max-pool).
    Resnet18Imagenet,
    /// LeNet-5 for 1x28x28 grey images (MNIST, Fashion-MNIST): conv 6@5x5 (padding 2) and
    /// conv 16@5x5, each with ReLU and 2x2 max-pool, then fc 120, 84 and the classes; every
    /// layer with a bias (`conv1`, `conv2`, `fc1`..`fc3`, the usual PyTorch names).
    Lenet5,
}

/// Every built-in model, in the order `goten model list` and help texts show them.
pub const ALL: [ModelKind; 7] = [
    ModelKind::Small,
    ModelKind::Lenet5,
    ModelKind::Vgg11,
    ModelKind::Vgg16,
    ModelKind::Resnet20,
    ModelKind::Resnet18,
    ModelKind::Resnet18Imagenet,
];

impl AsRef<str> for ModelKind {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl ModelKind {
    /// Name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Small => "small",
            ModelKind::Vgg11 => "vgg11",
            ModelKind::Vgg16 => "vgg16",
            ModelKind::Resnet20 => "resnet20",
            ModelKind::Resnet18 => "resnet18",
            ModelKind::Resnet18Imagenet => "resnet18-imagenet",
            ModelKind::Lenet5 => "lenet5",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.name() == s)
    }

    /// The built-in names, comma-separated (for error messages and help).
    pub fn names() -> String {
        ALL.map(ModelKind::name).join(", ")
    }

    /// Input shape `[channels, height, width]` of the built-in models.
    pub fn input_shape(self) -> [usize; 3] {
        match self {
            ModelKind::Lenet5 => [1, 28, 28],
            _ => [3, 32, 32],
        }
    }

    /// The model with weights from `seed`, for its input shape and `classes` outputs.
    pub fn build(self, seed: u64, classes: usize) -> Result<Model, NnError> {
        let b = Builder::new(self.input_shape(), seed);
        match self {
            ModelKind::Small => b
                .conv(16)
                .bn()
                .relu()
                .pool()
                .conv(32)
                .bn()
                .relu()
                .pool()
                .conv(32)
                .bn()
                .relu()
                .pool()
                .flatten()
                .dense(classes)
                .build(self),
            ModelKind::Vgg11 => vgg(b, &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0])
                .dense(classes)
                .build(self),
            ModelKind::Vgg16 => vgg(
                b,
                &[
                    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
                ],
            )
            .dense(classes)
            .build(self),
            ModelKind::Resnet20 => {
                let b = b.conv(16).named("conv1").bn().named("bn1").relu();
                resnet(b, &[(16, 1), (32, 2), (64, 2)], 3, classes).build(self)
            }
            ModelKind::Resnet18 => {
                let b = b.conv(64).named("conv1").bn().named("bn1").relu();
                resnet18_body(b, classes).build(self)
            }
            ModelKind::Lenet5 => b
                .conv_with(6, 5, Conv2dParams::new(1, 2))
                .bias()
                .named("conv1")
                .relu()
                .pool()
                .conv_with(16, 5, Conv2dParams::new(1, 0))
                .bias()
                .named("conv2")
                .relu()
                .pool()
                .flatten()
                .dense(120)
                .bias()
                .named("fc1")
                .relu()
                .dense(84)
                .bias()
                .named("fc2")
                .relu()
                .dense(classes)
                .bias()
                .named("fc3")
                .build(self),
            ModelKind::Resnet18Imagenet => {
                let b = b
                    .conv_with(64, 7, Conv2dParams::new(2, 3))
                    .named("conv1")
                    .bn()
                    .named("bn1")
                    .relu()
                    .maxpool(3, 2, 1);
                resnet18_body(b, classes).build(self)
            }
        }
    }
}

/// VGG feature layers from a torchvision-style configuration (channel counts, 0 for a 2x2
/// max-pool), then the flatten and two 512-wide fc-ReLU layers; the caller adds the last fc.
fn vgg(mut b: Builder, cfg: &[usize]) -> Builder {
    for &v in cfg {
        b = if v == 0 {
            b.pool()
        } else {
            b.conv(v).bn().relu()
        };
    }
    b.flatten().dense(512).relu().dense(512).relu()
}

/// ResNet stages `layer1..` of `blocks` basic blocks each (`(channels, first stride)` per
/// stage), global average pooling and the fc layer with bias.
fn resnet(mut b: Builder, stages: &[(usize, usize)], blocks: usize, classes: usize) -> Builder {
    for (s, &(ch, stride)) in stages.iter().enumerate() {
        for i in 0..blocks {
            let st = if i == 0 { stride } else { 1 };
            b = b.basic_block(ch, st, &format!("layer{}.{i}", s + 1));
        }
    }
    b.global_avgpool().dense(classes).bias().named("fc")
}

fn resnet18_body(b: Builder, classes: usize) -> Builder {
    resnet(b, &[(64, 1), (128, 2), (256, 2), (512, 2)], 2, classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::export::export;

    fn params(kind: ModelKind, classes: usize) -> usize {
        let m = kind.build(0, classes).unwrap();
        let rows = m.summary(&kind.input_shape()).unwrap();
        assert_eq!(rows.last().unwrap().output, vec![classes], "{kind:?}");
        rows.iter().map(|r| r.params).sum()
    }

    /// torchvision's published size of `resnet18()` (1000 classes): 11,689,512 parameters.
    #[test]
    fn resnet18_matches_torchvision_size_and_names() {
        assert_eq!(params(ModelKind::Resnet18Imagenet, 1000), 11_689_512);
        // The CIFAR stem swaps the 7x7 conv for a 3x3 one: 64 * 3 * (49 - 9) fewer.
        assert_eq!(params(ModelKind::Resnet18, 1000), 11_689_512 - 64 * 3 * 40);
        let m = ModelKind::Resnet18.build(0, 10).unwrap();
        let names: Vec<String> = export(&m).into_iter().map(|n| n.name).collect();
        // 20 conv weights, 20 BN layers of 4 tensors, fc weight and bias (torchvision's state
        // dict has 122 entries: these 102 and 20 num_batches_tracked).
        assert_eq!(names.len(), 102);
        let mut want = vec!["conv1.weight".to_string()];
        let bn =
            |p: &str| ["weight", "bias", "running_mean", "running_var"].map(|s| format!("{p}.{s}"));
        want.extend(bn("bn1"));
        for (l, stage) in (1..=4).zip([false, true, true, true]) {
            for b in 0..2 {
                let p = format!("layer{l}.{b}");
                want.push(format!("{p}.conv1.weight"));
                want.extend(bn(&format!("{p}.bn1")));
                want.push(format!("{p}.conv2.weight"));
                want.extend(bn(&format!("{p}.bn2")));
                if stage && b == 0 {
                    want.push(format!("{p}.downsample.0.weight"));
                    want.extend(bn(&format!("{p}.downsample.1")));
                }
            }
        }
        want.extend(["fc.weight".to_string(), "fc.bias".to_string()]);
        assert_eq!(names, want);
    }

    /// ResNet-20 counted by hand: stem 3*16*9 + BN 32; per stage three blocks of two 3x3 convs
    /// and two BNs; projections 16->32 and 32->64 (1x1 conv + BN); fc 64*10 + 10.
    #[test]
    fn resnet20_counts_match_a_hand_count() {
        let block = |c_in: usize, c: usize| c_in * c * 9 + c * c * 9 + 4 * c;
        let stage = |c_in: usize, c: usize| block(c_in, c) + 2 * block(c, c);
        let want = 3 * 16 * 9
            + 32
            + stage(16, 16)
            + stage(16, 32)
            + (16 * 32 + 2 * 32)
            + stage(32, 64)
            + (32 * 64 + 2 * 64)
            + 64 * 10
            + 10;
        assert_eq!(params(ModelKind::Resnet20, 10), want);
        assert_eq!(want, 272_474);
    }

    /// VGG-16-BN (configuration D) with the 512-512 classifier of our VGG-11.
    #[test]
    fn vgg16_counts_match_a_hand_count() {
        let convs = [
            (3, 64),
            (64, 64),
            (64, 128),
            (128, 128),
            (128, 256),
            (256, 256),
            (256, 256),
            (256, 512),
            (512, 512),
            (512, 512),
            (512, 512),
            (512, 512),
            (512, 512),
        ];
        let want: usize =
            convs.iter().map(|&(i, o)| i * o * 9 + 2 * o).sum::<usize>() + 2 * 512 * 512 + 512 * 10;
        assert_eq!(params(ModelKind::Vgg16, 10), want);
        let m = ModelKind::Vgg16.build(0, 10).unwrap();
        let names: Vec<String> = export(&m).into_iter().map(|n| n.name).collect();
        // torchvision's vgg16_bn numbering: the last conv is features.40, its BN features.41.
        assert!(names.contains(&"features.40.weight".to_string()));
        assert!(names.contains(&"features.41.running_var".to_string()));
        assert!(names.contains(&"classifier.4.weight".to_string()));
    }

    /// LeNet-5: 6*25+6, 16*6*25+16, 400*120+120, 120*84+84, 84*10+10 = 61,706 parameters.
    #[test]
    fn lenet5_counts_match_a_hand_count() {
        assert_eq!(params(ModelKind::Lenet5, 10), 61_706);
        assert_eq!(ModelKind::Lenet5.input_shape(), [1, 28, 28]);
        let m = ModelKind::Lenet5.build(0, 10).unwrap();
        let names: Vec<String> = export(&m).into_iter().map(|n| n.name).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias",
                "fc3.weight",
                "fc3.bias"
            ]
        );
    }

    #[test]
    fn names_parse_back() {
        for k in ALL {
            assert_eq!(ModelKind::parse(k.name()), Some(k));
        }
        assert_eq!(ModelKind::parse("resnet99"), None);
        assert!(ModelKind::names().contains("resnet18-imagenet"));
    }
}
