//! A model file's network ([`NetSpec`]) as bytes: one encoding for the enclave-process codec
//! (the job's `Arch::File`) and for sealed checkpoints (so serving rebuilds the network from the
//! checkpoint alone).
//!
//! Where it sits: under `goten_party`'s ecall codec and [`super::checkpoint`]. The reader bounds
//! the number of layers, their sizes and the nesting before it allocates, so a hostile host
//! cannot make the enclave build an enormous or endlessly nested description.
//!
//! Layout (integers little-endian): name (u32 length + UTF-8), input channels, height, width
//! (u64 each), then the layers: a count (u64) and per layer a kind byte and its fields (sizes
//! as u64, flags as one byte, optional names as a flag byte and a string, a residual block as
//! its body's and its shortcut's layer lists).

use super::spec::{LayerSpec, MAX_DEPTH, MAX_LAYERS, NetSpec};

/// The largest size (channels, kernel, stride ...) a description may carry.
const MAX_SIZE: u64 = 1 << 24;

/// Encodes `spec`.
pub fn encode(spec: &NetSpec) -> Vec<u8> {
    let mut w = Vec::new();
    put_str(&mut w, &spec.name);
    spec.input.iter().for_each(|&d| put_u64(&mut w, d));
    put_layers(&mut w, &spec.layers);
    w
}

/// Decodes what [`encode`] wrote; every byte must be used.
pub fn decode(bytes: &[u8]) -> Result<NetSpec, String> {
    let mut r = Reader(bytes);
    let name = r.string()?;
    let input = [r.size()?, r.size()?, r.size()?];
    let layers = get_layers(&mut r, 0, &mut 0)?;
    if !r.0.is_empty() {
        return Err(format!("{} trailing bytes", r.0.len()));
    }
    Ok(NetSpec {
        name,
        input,
        layers,
    })
}

fn put_u64(w: &mut Vec<u8>, v: usize) {
    w.extend_from_slice(&(v as u64).to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend_from_slice(&(s.len() as u32).to_le_bytes());
    w.extend_from_slice(s.as_bytes());
}

fn put_name(w: &mut Vec<u8>, n: &Option<String>) {
    match n {
        Some(n) => {
            w.push(1);
            put_str(w, n);
        }
        None => w.push(0),
    }
}

fn put_layers(w: &mut Vec<u8>, layers: &[LayerSpec]) {
    put_u64(w, layers.len());
    for l in layers {
        match l {
            LayerSpec::Conv {
                out,
                kernel,
                stride,
                padding,
                bias,
                name,
            } => {
                w.push(0);
                [*out, *kernel, *stride, *padding]
                    .iter()
                    .for_each(|&v| put_u64(w, v));
                w.push(u8::from(*bias));
                put_name(w, name);
            }
            LayerSpec::Dense { out, bias, name } => {
                w.push(1);
                put_u64(w, out.map_or(0, |o| o + 1));
                w.push(u8::from(*bias));
                put_name(w, name);
            }
            LayerSpec::BatchNorm { name } => {
                w.push(2);
                put_name(w, name);
            }
            LayerSpec::Relu => w.push(3),
            LayerSpec::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                w.push(4);
                [*kernel, *stride, *padding]
                    .iter()
                    .for_each(|&v| put_u64(w, v));
            }
            LayerSpec::AvgPool { kernel, stride } => {
                w.push(5);
                [*kernel, *stride].iter().for_each(|&v| put_u64(w, v));
            }
            LayerSpec::GlobalAvgPool => w.push(6),
            LayerSpec::Dropout { p } => {
                w.push(7);
                w.extend_from_slice(&p.to_le_bytes());
            }
            LayerSpec::Flatten => w.push(8),
            LayerSpec::BasicBlock { out, stride, name } => {
                w.push(9);
                [*out, *stride].iter().for_each(|&v| put_u64(w, v));
                put_str(w, name);
            }
            LayerSpec::Residual { body, shortcut } => {
                w.push(10);
                put_layers(w, body);
                put_layers(w, shortcut);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated at {what}"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            f => Err(format!("{what}: flag {f}")),
        }
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn size(&mut self) -> Result<usize, String> {
        let v = self.u64("a layer size")?;
        if v > MAX_SIZE {
            return Err(format!("layer size {v} exceeds {MAX_SIZE}"));
        }
        Ok(v as usize)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = u32::from_le_bytes(self.take(4, "a name")?.try_into().expect("4 bytes"));
        if n > 256 {
            return Err(format!("a name of {n} bytes"));
        }
        String::from_utf8(self.take(n as usize, "a name")?.to_vec())
            .map_err(|_| "a name that is not UTF-8".to_string())
    }

    fn name(&mut self) -> Result<Option<String>, String> {
        Ok(if self.flag("layer name")? {
            Some(self.string()?)
        } else {
            None
        })
    }
}

fn get_layers(r: &mut Reader, depth: usize, total: &mut usize) -> Result<Vec<LayerSpec>, String> {
    if depth > MAX_DEPTH {
        return Err("residual blocks nested too deep".into());
    }
    let n = r.u64("a layer count")?;
    if n > (MAX_LAYERS - *total) as u64 {
        return Err(format!("more than {MAX_LAYERS} layers"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        *total += 1;
        out.push(match r.u8("a layer kind")? {
            0 => LayerSpec::Conv {
                out: r.size()?,
                kernel: r.size()?,
                stride: r.size()?,
                padding: r.size()?,
                bias: r.flag("bias")?,
                name: r.name()?,
            },
            1 => LayerSpec::Dense {
                out: r.size()?.checked_sub(1),
                bias: r.flag("bias")?,
                name: r.name()?,
            },
            2 => LayerSpec::BatchNorm { name: r.name()? },
            3 => LayerSpec::Relu,
            4 => LayerSpec::MaxPool {
                kernel: r.size()?,
                stride: r.size()?,
                padding: r.size()?,
            },
            5 => LayerSpec::AvgPool {
                kernel: r.size()?,
                stride: r.size()?,
            },
            6 => LayerSpec::GlobalAvgPool,
            7 => LayerSpec::Dropout {
                p: f32::from_le_bytes(r.take(4, "dropout")?.try_into().expect("4 bytes")),
            },
            8 => LayerSpec::Flatten,
            9 => LayerSpec::BasicBlock {
                out: r.size()?,
                stride: r.size()?,
                name: r.string()?,
            },
            10 => LayerSpec::Residual {
                body: get_layers(r, depth + 1, total)?,
                shortcut: get_layers(r, depth + 1, total)?,
            },
            k => return Err(format!("layer kind {k}")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetSpec {
        let conv = |out, name: Option<&str>| LayerSpec::Conv {
            out,
            kernel: 3,
            stride: 1,
            padding: 1,
            bias: name.is_none(),
            name: name.map(String::from),
        };
        NetSpec {
            name: "net".into(),
            input: [1, 28, 28],
            layers: vec![
                conv(8, Some("stem")),
                LayerSpec::BatchNorm { name: None },
                LayerSpec::Relu,
                LayerSpec::Residual {
                    body: vec![conv(8, None), LayerSpec::Relu],
                    shortcut: vec![],
                },
                LayerSpec::BasicBlock {
                    out: 16,
                    stride: 2,
                    name: "layer1.0".into(),
                },
                LayerSpec::MaxPool {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
                LayerSpec::AvgPool {
                    kernel: 2,
                    stride: 2,
                },
                LayerSpec::GlobalAvgPool,
                LayerSpec::Dropout { p: 0.25 },
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    out: Some(0),
                    bias: true,
                    name: None,
                },
                LayerSpec::Dense {
                    out: None,
                    bias: false,
                    name: Some("fc".into()),
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_prefix_is_an_error() {
        let s = sample();
        let b = encode(&s);
        assert_eq!(decode(&b).unwrap(), s);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "prefix {cut}");
        }
        assert!(
            decode(&[b.as_slice(), &[0]].concat()).is_err(),
            "trailing byte"
        );
    }

    #[test]
    fn hostile_descriptions_are_bounded() {
        // Nesting deeper than MAX_DEPTH.
        let mut layers = vec![];
        for _ in 0..=MAX_DEPTH + 1 {
            layers = vec![LayerSpec::Residual {
                body: layers,
                shortcut: vec![],
            }];
        }
        let deep = NetSpec {
            name: "deep".into(),
            input: [3, 32, 32],
            layers,
        };
        assert!(decode(&encode(&deep)).unwrap_err().contains("nested"));
        // A layer count far beyond the bytes, and a huge size.
        let mut b = encode(&NetSpec {
            name: "x".into(),
            input: [3, 32, 32],
            layers: vec![],
        });
        let at = b.len() - 8;
        b[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&b).unwrap_err().contains("layers"));
        b[at..].copy_from_slice(&1u64.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&b).unwrap_err().contains("exceeds"));
    }
}
