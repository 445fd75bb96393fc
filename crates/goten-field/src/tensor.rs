//! [`RingTensor`]: a row-major tensor of centered ring residues with its shape.
//!
//! This is the unit of work handed to a device and, once protected by a one-time pad, the unit
//! that crosses from the enclave to its host. It carries its [`Ring`] so that mixing operands of
//! different rings is caught as an error instead of producing wrong residues.

use crate::ops::ShapeError;
use crate::ring::Ring;

/// A dense row-major tensor of residues of one ring.
#[derive(Clone, PartialEq, Eq)]
pub struct RingTensor {
    ring: Ring,
    shape: Vec<usize>,
    data: Vec<i32>,
}

impl std::fmt::Debug for RingTensor {
    // Shape only: a tensor may hold shares whose contents have no business in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingTensor({}, shape {:?})", self.ring, self.shape)
    }
}

/// Fails unless `shape` holds exactly `len` elements.
fn check_len(shape: &[usize], len: usize) -> Result<(), ShapeError> {
    let n = checked_numel(shape)?;
    if n != len {
        return Err(ShapeError::new(format!(
            "shape {shape:?} needs {n} elements, got {len}"
        )));
    }
    Ok(())
}

/// Number of elements of a shape, or an error when it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize, ShapeError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| ShapeError::new(format!("shape {shape:?} has too many elements")))
}

impl RingTensor {
    /// A tensor of zeros.
    pub fn zeros(ring: Ring, shape: &[usize]) -> Result<Self, ShapeError> {
        let n = checked_numel(shape)?;
        Ok(RingTensor {
            ring,
            shape: shape.to_vec(),
            data: vec![0; n],
        })
    }

    /// Like [`RingTensor::from_residues`] for data its producer reduced into the ring itself
    /// (a PRG stream, ring arithmetic, a device's reduced product): the length is checked, the
    /// residues only in debug builds, which saves a full pass over every share on the hot
    /// path. Data from outside the process (decoded messages) goes through `from_residues`.
    pub fn from_reduced(ring: Ring, shape: &[usize], data: Vec<i32>) -> Result<Self, ShapeError> {
        check_len(shape, data.len())?;
        debug_assert!(
            data.iter().all(|&x| ring.contains(x)),
            "from_reduced: an element is not a centered residue of {ring}"
        );
        Ok(RingTensor {
            ring,
            shape: shape.to_vec(),
            data,
        })
    }

    /// Wraps residues; fails when the length does not match the shape or a value is not a
    /// centered residue of `ring`.
    pub fn from_residues(ring: Ring, shape: &[usize], data: Vec<i32>) -> Result<Self, ShapeError> {
        check_len(shape, data.len())?;
        // A fold, not `position`: no early exit, so the common (valid) case vectorises.
        if data.iter().fold(false, |bad, &x| bad | !ring.contains(x)) {
            let pos = data
                .iter()
                .position(|&x| !ring.contains(x))
                .expect("an invalid element was seen");
            return Err(ShapeError::new(format!(
                "element {pos} = {} is not a centered residue of {ring}",
                data[pos]
            )));
        }
        Ok(RingTensor {
            ring,
            shape: shape.to_vec(),
            data,
        })
    }

    /// A tensor of residues this crate has already validated (the codec's decoders), so the
    /// hot decode paths check each element once.
    pub(crate) fn from_valid(ring: Ring, shape: &[usize], data: Vec<i32>) -> Self {
        debug_assert!(data.iter().all(|&x| ring.contains(x)));
        debug_assert_eq!(checked_numel(shape).ok(), Some(data.len()));
        RingTensor {
            ring,
            shape: shape.to_vec(),
            data,
        }
    }

    /// Builds a tensor by reducing arbitrary integers into the ring.
    pub fn from_i64(ring: Ring, shape: &[usize], values: &[i64]) -> Result<Self, ShapeError> {
        let data = values.iter().map(|&v| ring.reduce_i64(v)).collect();
        Self::from_residues(ring, shape, data)
    }

    /// The ring of the elements.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The residues, row-major.
    pub fn data(&self) -> &[i32] {
        &self.data
    }

    /// Mutable residues. Writers must store centered residues (use [`Ring::reduce_u32`]).
    pub fn data_mut(&mut self) -> &mut [i32] {
        &mut self.data
    }

    /// Takes the residues out.
    pub fn into_data(self) -> Vec<i32> {
        self.data
    }

    /// Same elements under a new shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self, ShapeError> {
        if checked_numel(shape)? != self.data.len() {
            return Err(ShapeError::new(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Concatenates tensors of one ring along `axis`; all other dimensions must agree.
    pub fn concat(parts: &[&RingTensor], axis: usize) -> Result<RingTensor, ShapeError> {
        let first = parts
            .first()
            .ok_or_else(|| ShapeError::new("concat needs at least one tensor"))?;
        let rank = first.shape.len();
        if axis >= rank {
            return Err(ShapeError::new(format!(
                "concat axis {axis} out of range for rank {rank}"
            )));
        }
        for p in parts {
            let same_rest = p.shape.len() == rank
                && (0..rank).all(|i| i == axis || p.shape[i] == first.shape[i]);
            if p.ring != first.ring || !same_rest {
                return Err(ShapeError::new(format!(
                    "cannot concat {:?} and {:?} along axis {axis}",
                    first.shape, p.shape
                )));
            }
        }
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let total: usize = parts.iter().map(|p| p.shape[axis]).sum();
        let mut data = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for p in parts {
                let len = p.shape[axis] * inner;
                data.extend_from_slice(&p.data[o * len..(o + 1) * len]);
            }
        }
        let mut shape = first.shape.clone();
        shape[axis] = total;
        Ok(RingTensor {
            ring: first.ring,
            shape,
            data,
        })
    }

    fn check_same(&self, other: &RingTensor, what: &str) -> Result<(), ShapeError> {
        if self.ring != other.ring {
            return Err(ShapeError::new(format!(
                "{what}: operands live in different rings ({} and {})",
                self.ring, other.ring
            )));
        }
        if self.shape != other.shape {
            return Err(ShapeError::new(format!(
                "{what}: shapes differ ({:?} and {:?})",
                self.shape, other.shape
            )));
        }
        Ok(())
    }

    /// `self + other`, elementwise.
    pub fn add(&self, other: &RingTensor) -> Result<RingTensor, ShapeError> {
        self.zip(other, "add", |r, a, b| r.add(a, b))
    }

    /// `self - other`, elementwise.
    pub fn sub(&self, other: &RingTensor) -> Result<RingTensor, ShapeError> {
        self.zip(other, "sub", |r, a, b| r.sub(a, b))
    }

    /// `-self`, elementwise.
    pub fn neg(&self) -> RingTensor {
        let r = self.ring;
        RingTensor {
            ring: r,
            shape: self.shape.clone(),
            data: self.data.iter().map(|&a| r.neg(a)).collect(),
        }
    }

    /// `self += other`, elementwise.
    pub fn add_assign(&mut self, other: &RingTensor) -> Result<(), ShapeError> {
        self.check_same(other, "add")?;
        let r = self.ring;
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a = r.add(*a, b);
        }
        Ok(())
    }

    /// `self -= other`, elementwise.
    pub fn sub_assign(&mut self, other: &RingTensor) -> Result<(), ShapeError> {
        self.check_same(other, "sub")?;
        let r = self.ring;
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a = r.sub(*a, b);
        }
        Ok(())
    }

    fn zip(
        &self,
        other: &RingTensor,
        what: &str,
        f: impl Fn(Ring, i32, i32) -> i32,
    ) -> Result<RingTensor, ShapeError> {
        self.check_same(other, what)?;
        let r = self.ring;
        Ok(RingTensor {
            ring: r,
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| f(r, a, b))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_checks_length_and_range() {
        let r = Ring::new(8).unwrap();
        assert!(RingTensor::from_residues(r, &[2, 2], vec![0; 3]).is_err());
        assert!(RingTensor::from_residues(r, &[2], vec![0, 128]).is_err());
        assert!(RingTensor::from_residues(r, &[2], vec![-128, 127]).is_ok());
        assert!(RingTensor::zeros(r, &[usize::MAX, 2]).is_err());
    }

    #[test]
    fn from_reduced_checks_length_and_equals_from_residues() {
        let r = Ring::new(8).unwrap();
        assert!(RingTensor::from_reduced(r, &[2, 2], vec![0; 3]).is_err());
        assert!(RingTensor::from_reduced(r, &[usize::MAX, 2], vec![]).is_err());
        let v = vec![-128, 127, 0, 5];
        assert_eq!(
            RingTensor::from_reduced(r, &[2, 2], v.clone()).unwrap(),
            RingTensor::from_residues(r, &[2, 2], v).unwrap()
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not a centered residue")]
    fn from_reduced_checks_residues_in_debug_builds() {
        let r = Ring::new(8).unwrap();
        let _ = RingTensor::from_reduced(r, &[2], vec![0, 128]);
    }

    #[test]
    fn concat_joins_along_an_axis() {
        let r = Ring::new(8).unwrap();
        let a = RingTensor::from_i64(r, &[2, 2], &[1, 2, 3, 4]).unwrap();
        let b = RingTensor::from_i64(r, &[2, 1], &[5, 6]).unwrap();
        assert_eq!(
            RingTensor::concat(&[&a, &b], 1).unwrap().data(),
            &[1, 2, 5, 3, 4, 6]
        );
        assert_eq!(RingTensor::concat(&[&a, &a], 0).unwrap().shape(), &[4, 2]);
        assert!(RingTensor::concat(&[&a, &b], 0).is_err());
        assert!(RingTensor::concat(&[&a], 2).is_err());
    }

    #[test]
    fn elementwise_ops_check_operands() {
        let r8 = Ring::new(8).unwrap();
        let r9 = Ring::new(9).unwrap();
        let a = RingTensor::from_i64(r8, &[3], &[100, -100, 5]).unwrap();
        let b = RingTensor::from_i64(r8, &[3], &[100, -100, -5]).unwrap();
        assert_eq!(a.add(&b).unwrap().data(), &[-56, 56, 0]);
        assert_eq!(a.sub(&b).unwrap().data(), &[0, 0, 10]);
        assert!(a.add(&RingTensor::zeros(r8, &[4]).unwrap()).is_err());
        assert!(a.add(&RingTensor::zeros(r9, &[3]).unwrap()).is_err());
        assert_eq!(format!("{a:?}"), "RingTensor(Z_2^8, shape [3])");
    }
}
