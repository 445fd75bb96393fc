//! Tampering: the enclave's integrity check accepts every correct result and catches a device,
//! host or peer that returns a wrong share.

mod common;

use common::{devices, mesh, quantized, values};
use goten_device::{CpuDevice, Device, DeviceError, naive};
use goten_enclave::Role;
use goten_enclave::check::{challenge_len, verify};
use goten_field::{BilinearOp, Conv2dParams, RingTensor};
use goten_party::record::Tamper;
use goten_party::{ClusterConfig, Message, Transport, Trusts, run_local};

fn cases() -> Vec<(BilinearOp, Vec<usize>, Vec<usize>)> {
    let p = Conv2dParams::new(2, 1);
    vec![
        (BilinearOp::MatmulForward, vec![5, 7], vec![3, 7]),
        (BilinearOp::MatmulInputGrad, vec![5, 3], vec![3, 7]),
        (BilinearOp::MatmulWeightGrad, vec![5, 3], vec![5, 7]),
        (
            BilinearOp::Conv2dForward(p),
            vec![2, 3, 7, 6],
            vec![4, 3, 3, 3],
        ),
        (
            BilinearOp::Conv2dInputGrad {
                params: p,
                input_hw: (7, 6),
            },
            vec![2, 4, 4, 3],
            vec![4, 3, 3, 3],
        ),
        (
            BilinearOp::Conv2dWeightGrad {
                params: p,
                kernel_hw: (3, 3),
            },
            vec![2, 4, 4, 3],
            vec![2, 3, 7, 6],
        ),
    ]
}

#[test]
fn check_accepts_correct_results_and_rejects_any_single_error() {
    for (i, (op, sa, sb)) in cases().into_iter().enumerate() {
        let a = values(sa.iter().product(), i as u64, -128, 127);
        let b = values(sb.iter().product(), 100 + i as u64, -128, 127);
        let w = |v: &[i32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
        let c: Vec<i64> = naive::exact(&op, (&sa, &w(&a)), (&sb, &w(&b)))
            .unwrap()
            .into_iter()
            .map(|v| v as i64)
            .collect();
        let r: Vec<u32> = values(challenge_len(&op, &sa, &sb).unwrap(), 7, 0, 1 << 30)
            .into_iter()
            .map(|v| v as u32 * 2 + 1)
            .collect();
        assert!(
            verify(&op, (&sa, &a), (&sb, &b), &c, &r).unwrap(),
            "{op:?} correct result rejected"
        );
        for pos in [0, c.len() / 2, c.len() - 1] {
            for delta in [1i64, -1, 1 << 21] {
                let mut bad = c.clone();
                bad[pos] += delta;
                assert!(
                    !verify(&op, (&sa, &a), (&sb, &b), &bad, &r).unwrap(),
                    "{op:?}: error {delta} at {pos} not caught"
                );
            }
        }
        assert!(
            verify(&op, (&sa, &a), (&sb, &b), &c[1..], &r).is_err(),
            "wrong length is an error"
        );
    }
}

/// A device that adds 1 to one entry of every result it returns.
struct OffByOne(CpuDevice);

impl Device for OffByOne {
    fn name(&self) -> String {
        "off-by-one".into()
    }
    fn bilinear(
        &self,
        op: &BilinearOp,
        a: &RingTensor,
        b: &RingTensor,
    ) -> Result<RingTensor, DeviceError> {
        let mut c = self.0.bilinear(op, a, b)?;
        let r = c.ring();
        if let Some(x) = c.data_mut().last_mut() {
            *x = r.add(*x, 1);
        }
        Ok(c)
    }
}

fn one_op(p: &mut goten_party::Party) -> Result<Vec<i64>, goten_party::PartyError> {
    let op = BilinearOp::Conv2dForward(Conv2dParams::new(1, 1));
    p.linear_quantized(
        (3, 0),
        &op,
        (&[1, 2, 5, 5], &quantized(values(50, 1, -9, 9))),
        (&[3, 2, 3, 3], &quantized(values(54, 2, -9, 9))),
    )
}

#[test]
fn a_lying_device_is_detected_on_every_server() {
    for liar in Role::ALL {
        let mut devs = devices();
        devs[liar.index()] = Box::new(OffByOne(CpuDevice::new(1).unwrap()));
        let err = run_local(
            &ClusterConfig::default(),
            &Trusts::generate(),
            devs,
            mesh(),
            &one_op,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("fails the integrity check"),
            "{liar}: {err}"
        );
    }
}

#[test]
fn a_peer_that_alters_its_product_is_detected() {
    for liar in [Role::S1, Role::S2] {
        let mut nets: Vec<Box<dyn Transport>> = mesh().into_iter().collect();
        let honest = nets.remove(liar.index());
        // The liar's host alters the first entry of every product it sends.
        let lying = Tamper::new(honest, |m: &mut Message| {
            if let Message::Product { tensor, .. } = m {
                let r = tensor.ring();
                tensor.data_mut()[0] = r.sub(tensor.data()[0], 5);
            }
        });
        nets.insert(liar.index(), Box::new(lying));
        let nets: [Box<dyn Transport>; 3] = nets.try_into().ok().expect("three endpoints");
        let err = run_local(
            &ClusterConfig::default(),
            &Trusts::generate(),
            devices(),
            nets,
            &one_op,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("fails the integrity check"),
            "{liar}: {err}"
        );
    }
}
